"""Set-up shared by several test modules, as plain functions (imported, not injected).

* :func:`protection`: one protection record, the claim a signed manifest carries;
* :func:`tiny_release`: a registry release's two files, made by hand (no model);
* :func:`edit`: one quick, seeded img2img edit, what a checked pipeline is given;
* :func:`fuzz_settings`: the Hypothesis settings of the fuzz tests;
* :class:`LoopbackServer`: an ASGI app under a real uvicorn server on loopback;
* :func:`service_world`: a registry with tiny-ldm@1 and a development key folder,
  made once per test process for the service's tests.

Heavy imports (torch, uvicorn, hypothesis) happen inside the functions that need them, so a
module that imports this one for a protection record stays quick to import.
``tests/test_fuzz.py`` also runs as a script (atheris), with ``tests/`` on
``sys.path``: this module imports nothing from the tests package.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photoimmune.sdk.protection import Protection

if TYPE_CHECKING:
    import hypothesis
    import uvicorn

WAIT_S = 120.0  # how long a test waits for a server before it gives up (never asserted)
#: Examples per fuzz test under ``make fuzz`` (0: each test's bounded CI count).
FUZZ_EXAMPLES = int(os.environ.get("PHOTOIMMUNE_FUZZ_EXAMPLES", "0") or 0)


def protection(ref: str = "photoimmune/tiny-ldm@1", **changes: Any) -> Protection:
    """An encoder protection against ``ref`` (8/255 L∞, 10 steps), ``changes`` applied."""
    fields: dict[str, Any] = {
        "target_ref": ref,
        "target_digest": "ab" * 32,
        "method": "encoder",
        "norm": "linf",
        "eps": "8/255",
        "steps": 10,
        "loss_before": "1.5",
        "loss_after": "0.9",
        "duration_ms": 10,
    }
    return Protection(**{**fields, **changes})


def tiny_release(ref: str, seed: int = 0) -> dict[str, bytes]:
    """A release's two files, made by hand in milliseconds (no model, no build_target).

    The registry checks a descriptor against its tensor file, never against a model,
    so small random tensors of the right names are a complete release. ``seed`` draws
    the tensors and picks the fingerprints (``2 * seed`` and ``2 * seed + 1`` repeated).
    """
    import torch
    from safetensors.torch import save as save_safetensors

    from photoimmune.registry import metadata as tm
    from photoimmune.sdk.refs import ModelRef
    from photoimmune.sdk.targets import (
        DESCRIPTOR_NAME,
        AttackTarget,
        EncoderSpec,
        TensorFile,
        WeightFingerprints,
    )

    generator = torch.Generator().manual_seed(seed)
    tensors = save_safetensors(
        {
            "x_target": torch.rand(1, 3, 8, 8, generator=generator),
            "z_target": torch.rand(1, 4, 1, 1, generator=generator),
        }
    )
    target = AttackTarget(
        ref=ModelRef.parse(ref),
        fingerprints=WeightFingerprints(vae=f"{2 * seed}" * 64, denoiser=f"{2 * seed + 1}" * 64),
        encoder=EncoderSpec(resolution=8, latent_scaling="0.18215"),
        tensors=TensorFile(sha256=hashlib.sha256(tensors).hexdigest(), length=len(tensors)),
    )
    descriptor = json.dumps(target.model_dump(mode="json"), sort_keys=True).encode()
    folder = tm.release_dir(target.ref)
    return {f"{folder}/{DESCRIPTOR_NAME}": descriptor, f"{folder}/{target.tensors.path}": tensors}


def edit(pipe, image, **kwargs):
    """``pipe`` edits ``image`` (or a list of them) into "a photo of a cat": 2 steps,
    strength 0.5, seed 0; the edited images as arrays."""
    import torch

    out = pipe(
        ["a photo of a cat"] * len(image) if isinstance(image, list) else "a photo of a cat",
        image=image,
        num_inference_steps=2,
        strength=0.5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    )
    return out.images


def fuzz_settings(ci_examples: int) -> hypothesis.settings:
    """Bounded and repeatable in CI; long, random and remembered under ``make fuzz``.

    No per-example deadline: the machine is shared with training jobs, so wall-clock
    deadlines would be flaky; ``tests/test_fuzz.py``'s watchdog catches real hangs instead.
    """
    from hypothesis import HealthCheck, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    common = {
        "deadline": None,
        "suppress_health_check": [
            HealthCheck.too_slow,
            # the suite's autouse key-folder fixture; the API fuzz tests' registry fixtures
            # hold state across examples on purpose
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        "print_blob": True,
    }
    if FUZZ_EXAMPLES:
        database = DirectoryBasedExampleDatabase(".pytest_cache/photoimmune-fuzz")
        return settings(max_examples=FUZZ_EXAMPLES, database=database, **common)
    return settings(max_examples=ci_examples, derandomize=True, database=None, **common)


class LoopbackServer:
    """An ASGI app under uvicorn on one loopback port, stopped and restarted at will;
    ``config`` goes to ``uvicorn.Config``."""

    def __init__(self, app, **config) -> None:
        self.app, self.config = app, config
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        import uvicorn

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))  # the same port again after a restart
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, **{"log_level": "warning", "lifespan": "off", **self.config}
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        give_up = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive() and time.monotonic() < give_up, "uvicorn did not start"
            time.sleep(0.05)
        self._server, self._thread, self._sock = server, thread, sock

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None and self._sock is not None
        self._server.should_exit = True
        self._thread.join(WAIT_S)
        self._sock.close()
        self._server = None


@functools.cache
def service_world() -> tuple[Path, Path]:
    """A registry folder where tiny-ldm@1 is published and a development key folder (a CA
    and a vendor key, as ``make demo`` leaves in out/demo), made once per test process and
    only read afterwards: the service's tests share them. Removed at exit."""
    from photoimmune.registry.admin import local_registry
    from photoimmune.sdk.keys import init_keys

    base = Path(tempfile.mkdtemp(prefix="photoimmune-service-tests-"))
    atexit.register(shutil.rmtree, base, True)
    local_registry(base / "registry", ["tiny-ldm@1"])
    return base / "registry", init_keys(base / "keys").path
