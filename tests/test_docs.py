"""Every shell and Python example in README.md and docs/*.md runs, in document order.

A reader follows a guide literally, top to bottom, in an empty folder; so does this
test. Each document gets a fresh folder (and a fresh home, so keys and caches start
empty), ``.venv/bin`` first on PATH, and no network. Its examples run one after
another in that folder: a shell block with ``bash -e``, a Python block as a script
of its own (blocks share files, never variables). One test per example, named
``doc.md:LINE-lang``; asking for one example runs the ones before it first.

Markers, HTML comments on the line(s) before a fenced block:

- ``<!-- not run: REASON -->``: the example cannot run here (a real Stable
  Diffusion checkpoint, a remote host); it is reported as skipped with REASON.
- ``<!-- output -->`` before a ``text`` block: lines the previous example must
  print, in order (``...`` inside a line matches anything).
- ``<!-- background until "TEXT" -->``: a server; it runs in the background until
  the document ends, and the next example starts once it has printed TEXT.

Examples keep their small settings in the docs themselves (``--steps 5``); nothing
here makes them cheaper behind the reader's back.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests: .venv's
SHELL_LANGS = {"sh", "bash", "shell"}
PYTHON_LANGS = {"python", "py"}
EXAMPLE_TIMEOUT = 300  # seconds; the slowest example runs well under a minute
FENCE = re.compile(r"^(```+)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(.*?)\s*-->$")


@dataclass
class Example:
    doc: str
    line: int  # of the opening fence, 1-based
    lang: str  # "sh" or "python"
    code: str
    skip: str | None = None  # why it is not run
    background: str | None = None  # text a background example prints once ready
    expected: list[str] = field(default_factory=list)  # lines its stdout must contain

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}-{self.lang}"


def documents() -> list[Path]:
    """README.md, then the guides (sorted; each runs on its own, so order between them is moot)."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def parse(path: Path, root: Path = REPO) -> list[Example]:
    """The examples of one document, with their markers and expected output attached."""
    doc = str(path.relative_to(root))
    lines = path.read_text().splitlines()
    examples: list[Example] = []
    markers: list[str] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            marker = MARKER.match(lines[i].strip())
            if marker:
                markers.append(marker.group(1))
            elif lines[i].strip():
                markers = []  # a marker applies to the block right after it, not one further down
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        body = "\n".join(lines[i + 1 : end]) + "\n"
        _attach(examples, doc, i + 1, fence.group(2).lower(), body, markers)
        markers = []
        i = end + 1
    return examples


def _attach(
    examples: list[Example], doc: str, line: int, lang: str, body: str, markers: list[str]
) -> None:
    """Turn one fenced block into an example, or into the expected output of the last one."""
    if "output" in markers:
        if not examples:
            raise ValueError(f"{doc}:{line}: an output block with no example before it")
        examples[-1].expected += [x for x in body.splitlines() if x.strip()]
        return
    if lang not in SHELL_LANGS | PYTHON_LANGS:
        return  # a diagram, a layout, a formula: not an example
    example = Example(doc, line, "sh" if lang in SHELL_LANGS else "python", body)
    for marker in markers:
        if marker.startswith("not run:"):
            example.skip = marker.removeprefix("not run:").strip()
        elif found := re.fullmatch(r'background until "(.+)"', marker):
            example.background = found.group(1)
    examples.append(example)


EXAMPLES = [example for path in documents() for example in parse(path)]


class DocumentRun:
    """One document's folder, environment and progress: examples run once each, in order."""

    def __init__(self, examples: list[Example], root: Path) -> None:
        self.examples = examples
        self.folder = root / "work"
        self.home = root / "home"
        self.folder.mkdir(parents=True)
        self.home.mkdir()
        self.done = 0
        self.failed: str | None = None
        self.servers: list[subprocess.Popen[str]] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOIMMUNE_")}
        env.pop("VIRTUAL_ENV", None)
        # A new user's machine: .venv's commands first on PATH (as after activating it), an
        # empty home (no keys, no registry cache), no network for Hugging Face.
        env |= {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(self.home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "COLUMNS": "100",  # the width the issue checks tables at
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env = env

    def run_through(self, example: Example) -> None:
        """Run every example before ``example`` that has not run yet, then ``example``."""
        index = self.examples.index(example)
        while self.done <= index:
            current = self.examples[self.done]
            self.done += 1
            if self.failed is not None:
                pytest.skip(f"not run: an earlier example of {current.doc} failed ({self.failed})")
            if current.skip is not None:
                if current is example:
                    pytest.skip(f"not run: {current.skip}")
                continue
            try:
                self.run(current)
            except BaseException:
                self.failed = current.name
                raise

    def run(self, example: Example) -> None:
        command = _command(example, self.folder)
        if example.background is not None:
            self.servers.append(_start(command, self.folder, self.env, example))
            return
        started, cpu = time.perf_counter(), _children_cpu()
        out = subprocess.run(
            command,
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )
        seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
        # pytest -s shows what each costs; CPU time too, since the wall clock of a busy
        # machine says little.
        print(f"\n{example.name}: {seconds:.1f} s, CPU {cpu:.1f} s", end="")
        assert out.returncode == 0, _report(example, out)
        _check_output(example, out.stdout)

    def stop(self) -> None:
        for server in self.servers:  # each started in its own session: stop its whole group
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()


def _command(example: Example, folder: Path) -> list[str]:
    if example.lang == "sh":
        return ["bash", "-e", "-o", "pipefail", "-c", example.code]
    script = folder.parent / f"example-{example.line}.py"  # outside the reader's folder
    script.write_text(example.code)
    return ["python", str(script)]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _start(
    command: list[str], folder: Path, env: dict[str, str], example: Example
) -> subprocess.Popen[str]:
    """Start a server example and return once it says it is ready (or fail with its output)."""
    server = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert server.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        seen.append(line)
        if example.background and example.background in line:
            return server
        if not line and server.poll() is not None:
            break
    os.killpg(server.pid, signal.SIGKILL)
    raise AssertionError(f"{example.name} never said {example.background!r}:\n{''.join(seen)}")


def _report(example: Example, out: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{example.name} exited {out.returncode}\n--- example\n{example.code}"
        f"--- stdout\n{out.stdout[-4000:]}--- stderr\n{out.stderr[-4000:]}"
    )


def _check_output(example: Example, stdout: str) -> None:
    """Each expected line must match a line of stdout, in order; ``...`` matches anything."""
    lines = iter(stdout.splitlines())
    for expected in example.expected:
        pattern = re.compile(".*".join(re.escape(p) for p in expected.strip().split("...")))
        if not any(pattern.fullmatch(line.strip()) for line in lines):
            raise AssertionError(
                f"{example.name}: expected a line {expected.strip()!r} (in this order) in\n{stdout}"
            )


@pytest.fixture(scope="session")
def document_runs(tmp_path_factory):
    runs: dict[str, DocumentRun] = {}

    def get(doc: str) -> DocumentRun:
        if doc not in runs:
            mine = [e for e in EXAMPLES if e.doc == doc]
            runs[doc] = DocumentRun(mine, tmp_path_factory.mktemp(Path(doc).stem))
        return runs[doc]

    yield get
    for run in runs.values():
        run.stop()


# Slow: a guide's examples take seconds to a minute (see the timings in the final report).
@pytest.mark.parametrize(
    "example", [pytest.param(e, id=e.name, marks=pytest.mark.slow) for e in EXAMPLES]
)
def test_example(example: Example, document_runs) -> None:
    document_runs(example.doc).run_through(example)


def test_parser_reads_markers(tmp_path) -> None:
    # The markers are the docs' only way to change how an example runs: check each is seen.
    doc = tmp_path / "guide.md"
    doc.write_text(
        "Intro.\n\n<!-- not run: needs a GPU -->\n```sh\nnvidia-smi\n```\n\n"
        '```python\nprint("a"); print("b")\n```\n<!-- output -->\n```text\nb\n```\n\n'
        '<!-- background until "ready" -->\n```bash\nserve\n```\n\n```\nnot an example\n```\n'
    )
    examples = parse(doc, root=tmp_path)
    assert [(e.lang, e.skip, e.background, e.expected) for e in examples] == [
        ("sh", "needs a GPU", None, []),
        ("python", None, None, ["b"]),
        ("sh", None, "ready", []),
    ]


def test_expected_output_is_matched_in_order() -> None:
    example = Example("d.md", 1, "python", "", expected=["first ...", "second"])
    _check_output(example, "noise\nfirst line\nsecond\n")
    with pytest.raises(AssertionError, match="in this order"):
        _check_output(example, "second\nfirst line\n")
