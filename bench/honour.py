"""Does a cooperative release honour the protections made for its predecessor?

Photos immunized against ``--previous`` (``immunize``'s defaults at 8/255, seed
0: the target's recommended method and steps) and same-ε uniform noise are
edited by ``--newest`` (img2img strength 0.5, 20 steps, guidance 7.5, "a
photo", seed 1234) and compared (SSIM) with its edit of the clean photo; the
gap is noise's SSIM minus the immunized photo's (higher = the protection shows
more). Rows:

* ``honoured``: immunized against the previous version, as published;
* ``native``:   immunized against the newest version itself (skip: ``--no-native``);
* ``honoured, JPEG 75``: both images re-saved as JPEG 75 before the edit;

and the newest VAE's reconstruction PSNR against the previous one's (the
honouring fine-tune may cost quality). Issue 28's bars: honoured gap ≥ native
gap - 0.01 and ≥ 0.10; ≥ 80 % of it kept after JPEG 75; ≤ 0.3 dB drop (on
the mean and on the worst photo).

``--recognition`` prints instead, for every scikit-image sample photo, which
old protections the newest encoder recognises: its latent distance to the
target over the previous encoder's, for the immunized photo (near 0:
recognised and sent to the target) and for the clean one (about 1: kept), with
how much the previous version's own loss fell (its immunization's strength).

    .venv/bin/python bench/honour.py --newest DIR_OR_NAME [--previous tiny-ldm@2]
        [--photos chelsea.png coffee.png camera.png] [--size 128] [--no-native]
        [--recognition]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from photoimmune.diffusers_plugin.detection import LatentDetector
from photoimmune.sdk import immunize
from photoimmune.sdk.evaluate.harness import same_eps_noise
from photoimmune.sdk.evaluate.metrics import edit_similarity
from photoimmune.sdk.evaluate.processing import PROCESSING
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.samples import sample_dir, sample_pixels
from photoimmune.sdk.targets import build_target

EPS = "8/255"


def reconstruction_psnr(vae, pixels: np.ndarray) -> float:
    """The VAE's encode-decode PSNR on one uint8 photo (float output, not rounded)."""
    x = pixels_to_tensor(pixels, value_range="signed")
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return float(-10 * torch.log10(((recon - x) / 2).pow(2).mean()))


def recognition(newest: str, previous: str, size: int) -> None:
    """Per sample photo: the new/old latent distance to the target, immunized and clean."""
    old_target = build_target(previous)
    new, old = LatentDetector(build_target(newest)), LatentDetector(old_target)
    print(f"{'photo':24} {'old loss cut':>12} {'immunized':>10} {'clean':>7}")
    for path in sorted(sample_dir().glob("*.png")):
        photo = sample_pixels(path.name, size)
        result = immunize(photo, old_target, eps=EPS, seed=0)
        cut = result.protections[0].loss_cut
        pair = [result.pixels, photo]
        ratios = np.divide(new.distances(pair), old.distances(pair))
        print(f"{path.name:24} {cut:12.1%} {ratios[0]:10.3f} {ratios[1]:7.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--newest", required=True)
    parser.add_argument("--previous", default="tiny-ldm@2")
    parser.add_argument("--photos", nargs="+", default=["chelsea.png", "coffee.png", "camera.png"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--no-native", action="store_true")
    parser.add_argument("--recognition", action="store_true", help="the per-photo table")
    args = parser.parse_args()
    if args.recognition:
        recognition(args.newest, args.previous, args.size)
        return
    newest, previous = load_pipeline(args.newest), load_pipeline(args.previous)
    jpeg = PROCESSING["jpeg75"]
    gaps: dict[str, list[float]] = {"honoured": [], "native": [], "honoured, JPEG 75": []}
    drops = []
    for name in args.photos:
        photo = sample_pixels(name, args.size)

        clean = edit_image(newest, photo, "a photo", steps=20, seed=1234)

        def ssim(pixels: np.ndarray, clean: np.ndarray = clean) -> float:
            edited = edit_image(newest, pixels, "a photo", steps=20, seed=1234)
            return edit_similarity(clean, edited)[0]

        noise = same_eps_noise(photo, EPS, np.random.default_rng(0))
        old = immunize(photo, args.previous, eps=EPS, seed=0).pixels
        gaps["honoured"].append(ssim(noise) - ssim(old))
        gaps["honoured, JPEG 75"].append(ssim(jpeg(noise)) - ssim(jpeg(old)))
        if not args.no_native:
            gaps["native"].append(ssim(noise) - ssim(immunize(photo, args.newest, eps=EPS).pixels))
        drops.append(
            reconstruction_psnr(previous.vae, photo) - reconstruction_psnr(newest.vae, photo)
        )
        row = {k: round(v[-1], 4) for k, v in gaps.items() if v}
        print(name, {**row, "reconstruction drop (dB)": round(drops[-1], 2)}, flush=True)
    print(f"\n{args.newest} edits, {args.size}px, ε {EPS}; SSIM gap over same-ε noise")
    for row, values in gaps.items():
        if values:
            print(f"{row:20} {statistics.fmean(values):7.3f}")
    kept = statistics.fmean(gaps["honoured, JPEG 75"]) / statistics.fmean(gaps["honoured"])
    print(f"{'kept after JPEG 75':20} {kept:7.1%}")
    # The mean hides a photo the fine-tune costs more (it once read 0.08 dB over a 0.41 dB
    # drop on coffee), so the bar is held to the worst photo too.
    print(f"{'reconstruction drop':20} {statistics.fmean(drops):7.2f} dB (worst {max(drops):.2f})")


if __name__ == "__main__":
    main()
