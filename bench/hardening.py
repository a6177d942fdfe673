"""What hardened immunization (EOT over the purifiers) costs in time, in the same process.

Times ``immunize(photos, MODEL)`` (the encoder attack, its recommended budget)
without and with ``eot=True`` on the held-out photos at 128 px, after one
untimed warm-up call of each, best of ``--repeats``, and prints the ratio.
Whether the protection it buys is worth it is eval's question
(docs/evaluation.md, "Purifiers").

    .venv/bin/python bench/hardening.py [--model tiny-ldm@2] [--repeats 2] [--steps 100]
"""

from __future__ import annotations

import argparse
import time

from photoimmune.sdk.immunization import immunize
from photoimmune.sdk.samples import sample_pixels

PHOTOS = ("chelsea.png", "coffee.png", "camera.png")


def _seconds(photos, model: str, steps: int, eot: bool, repeats: int) -> float:
    immunize(photos[:1], model, steps=2, eot=eot)  # warm-up: weights loaded, kernels chosen
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        immunize(photos, model, steps=steps, eot=eot)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ldm@2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    photos = [sample_pixels(name, 128) for name in PHOTOS]
    plain = _seconds(photos, args.model, args.steps, False, args.repeats)
    hardened = _seconds(photos, args.model, args.steps, True, args.repeats)
    print(f"{args.model}, {len(photos)} photos at 128 px, {args.steps} steps")
    print(f"plain     {plain:.2f} s")
    print(f"eot=True  {hardened:.2f} s")
    print(f"ratio     {hardened / plain:.2f}x")


if __name__ == "__main__":
    main()
