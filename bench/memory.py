"""Peak memory of one step of work, on a CPU: the peak RSS of a fresh process during it.

Each measurement runs in its own spawned process (freed memory is not always
returned to the OS, so one process cannot measure two loops). The process
first builds what the step needs (``prepare(*args)`` returns the step), hands
its freed heap back to the OS, and only then resets the kernel's high-water
mark (Linux ``/proc/self/clear_refs``), so the peak is that of the step with
the model's weights resident, not of building the model (random init and
dtype casts briefly hold two copies of the weights, which on SD 1.5 in float32
alone set an 11.8 GB peak).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import queue as queue_module
import resource
from collections.abc import Callable
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _high_water_mark() -> float:
    """Peak RSS in bytes since the last reset (since start where it cannot be reset)."""
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them otherwise): a process
    that ran a big step holds its RSS, and a fresh process measured beside it can run the
    machine out of memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to hand back
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_high_water_mark() -> bool:
    release_freed_memory()
    try:
        CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS
    except OSError:
        return False
    return True


def _run_and_report(prepare: Callable[..., Callable[[], object]], args: tuple, queue) -> None:
    step = prepare(*args)
    reset = _reset_high_water_mark()
    step()
    queue.put((_high_water_mark(), reset))


def step_peak_rss(prepare: Callable[..., Callable[[], object]], *args: object) -> float:
    """Bytes of peak RSS of a new process while it runs the step ``prepare(*args)`` returns.

    ``prepare`` must be a module-level function (the process is spawned). Where
    the high-water mark cannot be reset (not Linux), the peak includes building.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_and_report, args=(prepare, args, queue))
    proc.start()
    while True:
        try:
            peak, reset = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"the measuring process died (exit code {proc.exitcode}): out of memory? "
                    "free some, or measure a smaller size"
                ) from None
    proc.join()
    if not reset:
        print("peak RSS could not be reset after setup: it includes building the model")
    return peak
