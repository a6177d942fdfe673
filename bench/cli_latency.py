"""How long a mistyped command takes to say so: five bad options, timed to the error.

Each case runs the installed ``photoimmune`` entry point in a fresh process, as a
user would, and is timed from start to exit (the error is its only output). The
reference is ``photoimmune --version`` in the same way: the floor any command pays
for starting Python and the CLI. Before issue 31 each case took about 6 s (torch
was imported, and for some the model loaded, before the option was looked at).
Medians over ``--repeat`` runs, after one warm-up each.

    .venv/bin/python bench/cli_latency.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from photoimmune.sdk.io import save_image
from photoimmune.sdk.samples import sample_pixels

# (what is wrong, the arguments): each must be refused with exit status 2.
CASES = [
    ("--eps 16 (not in [0, 1])", ["immunize", "photo.jpg", "-o", "out", "--eps", "16"]),
    ("--method foo", ["immunize", "photo.jpg", "-o", "out", "--method", "foo"]),
    ("--steps 0", ["immunize", "photo.jpg", "-o", "out", "--steps", "0"]),
    ("--model nope", ["immunize", "photo.jpg", "-o", "out", "--model", "nope"]),
    ("-o an existing file", ["immunize", "photo.jpg", "-o", "photo.jpg"]),
]


def entry_point() -> str:
    """The console script next to this interpreter (.venv/bin/photoimmune), else on PATH."""
    beside = Path(sys.executable).parent / "photoimmune"
    found = str(beside) if beside.exists() else shutil.which("photoimmune")
    if found is None:
        raise SystemExit("photoimmune is not installed: run `make venv` first")
    return found


def time_run(command: list[str], folder: Path, expect: int) -> float:
    """Seconds from start to exit of one run; its exit status must be ``expect``."""
    env = {**os.environ, "PHOTOIMMUNE_KEY_DIR": str(folder / "keys")}  # never the user's keys
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(
            f"{' '.join(command)}: exit {done.returncode}, expected {expect}\n{done.stderr}"
        )
    return seconds


def median_time(command: list[str], folder: Path, expect: int, repeat: int) -> float:
    time_run(command, folder, expect)  # warm-up: the page cache, .pyc files
    return statistics.median(time_run(command, folder, expect) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case")
    args = parser.parse_args()
    exe = entry_point()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_image(sample_pixels("chelsea.png", 128), folder / "photo.jpg")
        reference = median_time([exe, "--version"], folder, 0, args.repeat)
        table = Table(title=f"time to the error, median of {args.repeat} ({os.cpu_count()} CPUs)")
        for column in ("bad option", "seconds", "vs --version"):
            table.add_column(column)
        table.add_row("reference: photoimmune --version", f"{reference:.3f}", "1.00")
        for label, case in CASES:
            seconds = median_time([exe, *case], folder, 2, args.repeat)
            table.add_row(label, f"{seconds:.3f}", f"{seconds / reference:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
