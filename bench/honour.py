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

``--recognition`` prints instead, for every scikit-image sample photo, the
newest encoder's gate score (:mod:`photoimmune.sdk.mark`) of the photo
protected against the previous version and of its JPEG 75 copy, then the
detection rates: the share of protected photos whose score opens the gate, and
the share above the 99th percentile of clean pictures (issue 28's 1 % FPR).

    .venv/bin/python bench/honour.py [--newest tiny-ldm@4] [--previous tiny-ldm@3]
        [--photos chelsea.png coffee.png camera.png] [--size 128] [--no-native]
        [--recognition]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from photoimmune.sdk import immunize
from photoimmune.sdk.evaluate.harness import same_eps_noise
from photoimmune.sdk.evaluate.metrics import edit_similarity
from photoimmune.sdk.evaluate.processing import PROCESSING
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.honour import handled_crops, jpeg
from photoimmune.sdk.models.pipelines import edit_image, load_vae
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
    """Per sample photo, the newest encoder's gate score (the honoured marks' z-score) of
    the photo protected against ``previous`` as publishers protect it, and of its JPEG
    75 copy; then the true positive rates at the gate's threshold and at 1 % false
    positives among clean pictures: every sample photo, its same-ε noisy copy, 256
    handled crops of the sample photos, and the JPEG 75 copies of all of these."""
    gate = load_vae(newest).honour
    old_target = build_target(previous)

    def score(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return gate.score(batch * 2 - 1)

    print(f"{'photo':24} {'protected':>10} {'JPEG 75':>8} {'clean':>7}")
    protected, clean = [], []
    for path in sorted(sample_dir().glob("*.png")):
        photo = sample_pixels(path.name, size)
        treated = immunize(photo, old_target, eps=EPS, seed=0).pixels
        noisy = same_eps_noise(photo, EPS, np.random.default_rng(0))
        both = pixels_to_tensor([treated, photo, noisy])
        scores = torch.cat([score(both), score(jpeg(both))])
        protected += [scores[0], scores[3]]
        clean += [scores[1], scores[2], scores[4], scores[5]]
        row = f"{scores[0]:10.2f} {scores[3]:8.2f} {scores[1]:7.2f}"
        print(f"{path.name:24} {row}", flush=True)
    photos = [sample_pixels(p.name) for p in sorted(sample_dir().glob("*.png"))]
    crops = handled_crops(photos, 256, size, torch.Generator().manual_seed(0))
    clean_scores = torch.cat([torch.stack(clean), score(crops), score(jpeg(crops))])
    hits = torch.stack(protected).view(-1, 2)  # (photo, [as published, JPEG 75])
    p99 = float(torch.quantile(clean_scores, 0.99))
    print(
        f"\n{len(clean_scores)} clean pictures: highest {float(clean_scores.max()):.2f}, 99th "
        f"percentile {p99:.2f}; the gate opens from {float(gate.threshold):.2f}"
    )
    for label, cut in (("the gate's threshold", float(gate.threshold)), ("1 % FPR", p99)):
        fpr = float((clean_scores > cut).float().mean())
        tpr = (hits > cut).float().mean(dim=0).tolist()
        print(f"at {label} ({cut:.2f}): FPR {fpr:.1%}, TPR {tpr[0]:.1%} (JPEG 75: {tpr[1]:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--newest", default="tiny-ldm@4")
    parser.add_argument("--previous", default="tiny-ldm@3")
    parser.add_argument("--photos", nargs="+", default=["chelsea.png", "coffee.png", "camera.png"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--no-native", action="store_true")
    parser.add_argument("--recognition", action="store_true", help="the per-photo table")
    args = parser.parse_args()
    if args.recognition:
        recognition(args.newest, args.previous, args.size)
        return
    newest, previous = load_pipeline(args.newest), load_pipeline(args.previous)
    to_jpeg = PROCESSING["jpeg75"]
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
        gaps["honoured, JPEG 75"].append(ssim(to_jpeg(noise)) - ssim(to_jpeg(old)))
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
