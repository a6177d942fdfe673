"""The package layers: cli > diffusers_plugin > registry > sdk, and torch-free metadata."""

from __future__ import annotations

import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from photoimmune.sdk.descriptor import (
    TargetIntegrityError,
    parse_descriptor,
    safetensors_names,
)

ROOT = Path(__file__).resolve().parents[1]


def _torch_free(module: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize(
    "module",
    ["photoimmune.registry.server", "photoimmune.sdk.descriptor"],
)
def test_metadata_code_never_imports_torch(module):
    # The registry server, the target descriptor and `photoimmune --help` need no tensors.
    out = _torch_free(module)
    assert out.returncode == 0, f"{module} imports torch\n{out.stderr}"


def test_import_contracts_are_kept():
    lint_imports = Path(sysconfig.get_paths()["scripts"]) / "lint-imports"
    out = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def _safetensors(header: bytes, data: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + data


def test_safetensors_layout_is_checked_as_bytes():
    good = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{}}'
    assert safetensors_names(_safetensors(good, bytes(8))) == {"a"}
    for header, data in [
        (good, bytes(4)),  # truncated
        (b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)),  # wrong shape
        (b'{"a":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}}', bytes(8)),  # unknown dtype
        (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":["x",8]}}', bytes(8)),
        (b"[1, 2]", b""),  # not a table
        (b"{not json", b""),
    ]:
        with pytest.raises(TargetIntegrityError):
            safetensors_names(_safetensors(header, data))
    with pytest.raises(TargetIntegrityError):
        safetensors_names(b"\x01")


def test_descriptor_and_weights_sides_agree(tmp_path):
    from photoimmune.sdk.targets import build_target, load_target, parse_target, save_target

    target = build_target("tiny-ldm@1")
    save_target(target, tmp_path)
    descriptor = (tmp_path / "target.json").read_bytes()
    tensors = (tmp_path / "tensors.safetensors").read_bytes()
    bare = parse_descriptor(descriptor, tensors)
    assert bare.digest == parse_target(descriptor, tensors).digest == target.digest
    assert not bare.has_weights
    with pytest.raises(TargetIntegrityError):
        parse_descriptor(descriptor, tensors[:-1])
    # Binding returns a new target; the one bound stays as it was (the model is frozen).
    loaded = load_target(tmp_path)
    unbound = loaded.model_copy()
    unbound._model_path = None
    bound = unbound.bind_model("tiny-ldm@1")
    assert bound is not unbound and bound.has_weights and not unbound.has_weights
    assert bound.digest == unbound.digest
    assert bound.tensor("z_target").shape == target.tensor("z_target").shape


MAX_BODY_LINES = 80  # issue 29: a longer flow is split into numbered, named steps


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring is not body
    return 0 if not body else (function.end_lineno or 0) - body[0].lineno + 1


def test_no_library_function_body_runs_over_80_lines():
    too_long = []
    for package in ("sdk", "registry", "resolver", "diffusers_plugin", "service", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:  # Alembic's generated scripts
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = _body_lines(node)
                    if lines > MAX_BODY_LINES:
                        too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not too_long, f"over {MAX_BODY_LINES} lines: {too_long}"


def _sdk_imports(path: Path, *, in_functions: bool) -> set[str]:
    """The sdk modules ``path`` imports at run time (``"io"``, ``"manifest"``...): at any
    level, or only inside function bodies. ``if TYPE_CHECKING:`` imports never run."""
    tree = ast.parse(path.read_text(), str(path))
    roots = [tree]
    if in_functions:
        roots = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for root in roots:
        for node in ast.walk(root):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y
                names = [f"photoimmune.sdk.{node.module or alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found |= {n.split(".")[2] for n in names if n.startswith("photoimmune.sdk.")}
    return found


def test_io_and_manifest_import_each_other_at_the_top_only():
    # Issue 29: decoding (sdk/codec.py) < manifests < load_image(verify=True) in io: io
    # imports manifest at the top, manifest never imports io, and no function closes a cycle.
    io, manifest = ROOT / "sdk" / "io.py", ROOT / "sdk" / "manifest.py"
    assert "manifest" in _sdk_imports(io, in_functions=False)
    assert "manifest" not in _sdk_imports(io, in_functions=True)
    assert "io" not in _sdk_imports(manifest, in_functions=False)
    # Nor through a module that imports io, at any level: manifest -> keys -> io is a cycle.
    through = {
        name
        for name in _sdk_imports(manifest, in_functions=False)
        if (ROOT / "sdk" / f"{name}.py").is_file()
        and "io" in _sdk_imports(ROOT / "sdk" / f"{name}.py", in_functions=False)
    }
    assert not through, f"manifest imports {through}, which import io"
    assert "codec" in _sdk_imports(manifest, in_functions=False)
