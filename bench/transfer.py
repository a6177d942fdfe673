"""Does protection against one model version carry over to the next? (issue 3's gap)

Each validation photo is immunized (encoder attack) against ``--old`` and,
separately, against ``--new``; both are then edited by the *new* version's
img2img pipeline (fixed prompts and seed) and compared with the new version's
edit of the clean photo. Lower SSIM/PSNR = the edit was disrupted more. The gap
between the rows is what re-immunization against each new version buys.

    .venv/bin/python bench/transfer.py [--old tiny-ldm@1] [--new tiny-ldm@2] [--eps 8 16]
        [--method encoder|diffusion] [--recipe gray|checker]

Each row also reports the attack's own loss on the *new* model (the encoder
loss ``‖E_new(x+δ) - z_target‖²`` or the truncated edit's distance to the
target image), so the gap is visible both in what the attack optimises and in
what edits come out.
"""

from __future__ import annotations

import argparse
import statistics

from efficacy import PROMPTS  # bench/ is on sys.path when this script runs

from photoimmune.sdk import immunize
from photoimmune.sdk.evaluate.metrics import edit_similarity
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.models.train_tiny import VALIDATION_PHOTOS
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="tiny-ldm@1")
    parser.add_argument("--new", default="tiny-ldm@2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--eps", nargs="+", type=int, default=[8, 16], help="8-bit levels")
    parser.add_argument("--method", choices=["encoder", "diffusion"], default="encoder")
    parser.add_argument("--recipe", choices=["gray", "checker"], default="gray")
    args = parser.parse_args()
    pipe = load_pipeline(args.new)
    photos = {name: sample_pixels(name, args.size) for name in VALIDATION_PHOTOS}
    clean = {
        (name, p): edit_image(pipe, px, p, strength=args.strength)
        for name, px in photos.items()
        for p in PROMPTS
    }
    new_target = build_target(args.new, recipe=args.recipe)
    print(f"edits by {args.new}, img2img strength {args.strength}, {args.size}px, {PROMPTS}")
    print(f"{args.method} attack, {args.steps} steps, {args.recipe} target")
    print(f"{'eps':>7} {'immunized against':18} {'SSIM':>7} {'PSNR (dB)':>10} {'new loss':>10}")
    for levels in args.eps:
        for against in (args.old, args.new):
            ssims, psnrs, losses = [], [], []
            for name, px in photos.items():
                treated = immunize(
                    px,
                    build_target(against, recipe=args.recipe),
                    method=args.method,
                    eps=f"{levels}/255",
                    steps=args.steps,
                ).pixels
                # The new model's own loss on the treated image (loss_before of a 0-step run).
                check = immunize(treated, new_target, method=args.method, eps="1/255", steps=0)
                losses.append(float(check.protections[0].loss_before))
                for p in PROMPTS:
                    edited = edit_image(pipe, treated, p, strength=args.strength)
                    ssim, psnr = edit_similarity(clean[(name, p)], edited)
                    ssims.append(ssim)
                    psnrs.append(psnr)
            print(
                f"{levels:>3}/255 {against:18} {statistics.mean(ssims):7.3f} "
                f"{statistics.mean(psnrs):10.2f} {statistics.mean(losses):10.5g}",
                flush=True,
            )


if __name__ == "__main__":
    main()
