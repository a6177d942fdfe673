"""Manifest-free detection: true and false positive rates of the plugin's detector.

Clean images are random square crops of every scikit-image sample photo (all
of them, validation photos included); immunized ones are the first
``--immunized`` of those crops, immunized against ``--old`` (encoder attack,
``--steps`` steps, or ``default``: ``immunize``'s defaults, as publishers make
them) at each budget and stripped of any manifest. Each image is scored the way
a ``--new`` pipeline with the check on scores it: with the new version's
encoder, and with the old version's when its weights are at hand (the bundled
ones are); the lower score counts. The reference row is the new version's
encoder alone. The last row is for a ``--new`` trained to honour ``--old``
(issue 28): the new encoder's latent distance to the target over the old
one's, about 1 for a clean image and near 0 for one it honours; its threshold
is the lowest clean score, so its FPR is 0 by construction.

    .venv/bin/python bench/detection.py [--old tiny-ldm@1] [--new tiny-ldm@2]
        [--eps 8 16] [--steps 100|default] [--crops 2] [--immunized 12] [--threshold 0.94]
"""

from __future__ import annotations

import argparse

import numpy as np

from photoimmune.diffusers_plugin.detection import DEFAULT_THRESHOLD, LatentDetector
from photoimmune.sdk import immunize
from photoimmune.sdk.io import load_image
from photoimmune.sdk.samples import sample_dir, square_resize
from photoimmune.sdk.targets import build_target


def random_crops(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random square crops of each sample photo, resized to ``size``."""
    rng = np.random.default_rng(seed)
    crops = []
    for path in sorted(sample_dir().glob("*.png")):
        pixels = load_image(path).pixels
        height, width = pixels.shape[:2]
        for _ in range(count):
            side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            crops.append(square_resize(pixels[top : top + side, left : left + side], size))
    return crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="tiny-ldm@1")
    parser.add_argument("--new", default="tiny-ldm@2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--eps", nargs="+", type=int, default=[8, 16], help="8-bit levels")
    parser.add_argument("--steps", default="100", help="PGD steps, or 'default'")
    parser.add_argument("--crops", type=int, default=2, help="clean crops per sample photo")
    parser.add_argument("--immunized", type=int, default=12, help="crops to immunize")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    clean = random_crops(args.crops, args.size)
    # One crop per photo first, so the immunized set spans different photos.
    chosen = clean[:: args.crops][: args.immunized]
    old_target, new_target = build_target(args.old), build_target(args.new)
    detectors = {
        f"{args.new} + {args.old} encoders (plugin)": [
            LatentDetector(new_target, args.threshold),
            LatentDetector(old_target, args.threshold),
        ],
        f"{args.new} encoder only": [LatentDetector(new_target, args.threshold)],
    }

    def scores(images: list[np.ndarray], members: list[LatentDetector]) -> np.ndarray:
        return np.min([d.scores(images) for d in members], axis=0)

    immunized = {}
    for levels in args.eps:
        steps = None if args.steps == "default" else int(args.steps)
        results = immunize(chosen, old_target, eps=f"{levels}/255", steps=steps, seed=0)
        immunized[levels] = [r.pixels for r in results]
        print(f"immunized {len(chosen)} crops against {args.old} at {levels}/255", flush=True)
    print(
        f"\n{len(clean)} clean crops of {len(clean) // args.crops} photos, {args.size}px; "
        f"threshold {args.threshold}; immunized against {args.old}, {args.steps} steps"
    )
    header = f"{'detector':44} {'FPR':>6}" + "".join(f" {f'TPR {e}/255':>11}" for e in args.eps)
    print(header)
    for name, members in detectors.items():
        clean_scores = scores(clean, members)
        fpr = float(np.mean(clean_scores <= args.threshold))
        tprs = [float(np.mean(scores(immunized[e], members) <= args.threshold)) for e in args.eps]
        print(
            f"{name:44} {fpr:6.3f}"
            + "".join(f" {t:11.3f}" for t in tprs)
            + f"   (lowest clean score {float(clean_scores.min()):.3f})",
            flush=True,
        )
    new, old = detectors[f"{args.new} + {args.old} encoders (plugin)"]  # the plugin pair, new first

    def ratios(images: list[np.ndarray]) -> np.ndarray:
        return np.asarray(new.distances(images)) / np.asarray(old.distances(images))

    lowest = float(ratios(clean).min())
    tprs = [float(np.mean(ratios(immunized[e]) < lowest)) for e in args.eps]
    name = f"{args.new} / {args.old} distance ratio"
    print(f"{name:44} {0:6.3f}" + "".join(f" {t:11.3f}" for t in tprs) + f"   (below {lowest:.3f})")


if __name__ == "__main__":
    main()
