"""Publisher job throughput: images per second, local engine vs Ray with 2 workers.

The same catalog (``--images`` sample photos at ``--size``) is re-immunized
against the bundled ``tiny-ldm@1`` target twice in this process: by the local
engine (the reference: one process, PyTorch's default threads) and by the Ray
engine (``--workers`` actors, one CPU and one PyTorch thread each, on a local
Ray instance). Each is timed end to end (engine start included) and in steady
state (from the first finished image to the last). Prints the ratios last.

    .venv/bin/python bench/jobs.py [--images 16] [--size 128] [--steps 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from photoimmune.registry.admin import local_registry
from photoimmune.sdk.io import save_image
from photoimmune.sdk.jobs import Catalog, JobSettings, run
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.samples import sample_pixels

PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "motorcycle_left.png", "horse.png")


def _photos(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = sample_pixels(PHOTOS[i % len(PHOTOS)], size + 8 * (i // len(PHOTOS)))
        save_image(np.ascontiguousarray(pixels[: size + 4, : size + 4]), folder / f"p{i:03d}.png")


def _timed_job(work: Path, client, engine: str, args, keys) -> dict:
    catalog = Catalog(work / f"{engine}.db")
    catalog.add([work / "photos"])
    finished: list[float] = []
    started = time.perf_counter()
    summary = run(
        catalog,
        client,
        ["photoimmune/tiny-ldm"],
        out_dir=work / engine,
        signer=keys.signer("publisher"),
        trust=keys.trust_anchor_pem(),
        settings=JobSettings(steps=args.steps, threads=1 if engine == "ray" else None),
        engine=engine,
        workers=args.workers,
        progress=lambda *_: finished.append(time.perf_counter()),
    )
    total = time.perf_counter() - started
    assert len(summary.done) == args.images and not summary.failed, summary
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) if len(finished) > 1 else 0.0
    return {"total": total, "rate": args.images / total, "steady": steady, "by": summary.by_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    _photos(work / "photos", args.images, args.size)
    client = local_registry(work / "registry", ["tiny-ldm@1"])
    keys = init_keys(work / "keys")
    print(f"{args.images} images ~{args.size}px, {args.steps} PGD steps, {os.cpu_count()} CPUs")
    local = _timed_job(work, client, "local", args, keys)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        distributed = _timed_job(work, client, "ray", args, keys)
    finally:
        ray.shutdown()
    for name, r in (("local (reference)", local), (f"ray, {args.workers} workers", distributed)):
        print(
            f"{name:>20}: {r['total']:6.1f} s  {r['rate']:.2f} images/s end to end, "
            f"{r['steady']:.2f} images/s steady  {r['by']}"
        )
    print(
        f"ray / local: {distributed['rate'] / local['rate']:.2f}x end to end, "
        f"{distributed['steady'] / local['steady']:.2f}x steady state"
    )


if __name__ == "__main__":
    main()
