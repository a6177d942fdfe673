"""Peak memory of one piece of work, on a CPU: the peak RSS of a fresh process.

A process's peak RSS cannot be reset, and freed memory is not always returned to
the OS, so each measurement runs in its own spawned process that does only that
work (model weights included).
"""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable


def _run_and_report(work: Callable[..., object], args: tuple, queue) -> None:
    work(*args)
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def fresh_process_peak_rss(work: Callable[..., object], *args: object) -> float:
    """Bytes of peak RSS of a new process running ``work(*args)`` (a module-level function)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_and_report, args=(work, args, queue))
    proc.start()
    peak = queue.get()
    proc.join()
    return float(peak)
