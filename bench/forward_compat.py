"""Forward compatibility: does the plugin's re-immunization protect against the new version?

A publisher immunizes each validation photo against ``--old`` and signs it. The
*new* version's img2img pipeline then edits it three ways, and each edit is
compared with the new pipeline's edit of the clean photo (lower SSIM/PSNR = the
edit was disrupted more):

* ``old only``:     the image as published, plugin off (what happens without it);
* ``old + hook``:   plugin on: the image is re-immunized against the new version
  from the received pixels and edited (what the plugin does);
* ``new native``:   a publisher immunization against the new version from the
  original (the best case: what a publisher job produces);
* ``honoured``:     that ``new native`` image, signed, edited by a later release
  trained to honour the new version's target (``--honoured-by``; default: the
  bundled release whose target honours it, if any) with the plugin on. It is
  ``covered``: no re-immunization, no added ε. Its reference is that release's
  own edit of the clean photo.

    .venv/bin/python bench/forward_compat.py [--old tiny-ldm@1] [--new tiny-ldm@2]
        [--honoured-by FOLDER] [--eps 8] [--steps N] [--photos chelsea.png coffee.png]

``--steps`` defaults to each target's recommendation, as publishers and the plugin
run it (for tiny-ldm@3: its edit-trained pass, then 40 steps of the edit attack).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from efficacy import PROMPTS  # bench/ is on sys.path when this script runs

import photoimmune.diffusers_plugin  # noqa: F401  (adds enable_immunization_check)
from photoimmune.registry.admin import local_registry
from photoimmune.sdk import immunize, sign_pixels
from photoimmune.sdk.evaluate.metrics import edit_similarity
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.bundled import VENDOR
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.models.train_tiny import VALIDATION_PHOTOS
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import honouring_release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="tiny-ldm@1")
    parser.add_argument("--new", default="tiny-ldm@2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--eps", type=int, default=8, help="8-bit levels, publisher and hook")
    parser.add_argument("--photos", nargs="+", default=list(VALIDATION_PHOTOS))
    parser.add_argument("--honoured-by", default=None, help="default: a bundled honouring one")
    args = parser.parse_args()
    honouring = args.honoured_by or honouring_release(args.new)
    work = Path(tempfile.mkdtemp(prefix="forward-compat-"))
    releases = [args.old, args.new, *([honouring] if honouring else [])]
    client = local_registry(work / "registry", releases)
    keys = init_keys(work / "keys")
    eps = f"{args.eps}/255"
    settings = {"signer": keys.signer("vendor"), "trust": keys.ca_cert, "eps": eps}
    plain, checked = load_pipeline(args.new), load_pipeline(args.new)
    checked.enable_immunization_check(client, steps=args.steps, **settings)
    if honouring:
        later, later_checked = load_pipeline(honouring), load_pipeline(honouring)
        later_checked.enable_immunization_check(client, steps=args.steps, **settings)
    edit = {"strength": args.strength}
    rows: dict[str, list[tuple[float, float]]] = {
        "old only": [],
        "old + hook": [],
        "new native": [],
        **({"honoured": []} if honouring else {}),
    }
    for name in args.photos:
        photo = sample_pixels(name, args.size)
        old = immunize(photo, client.get(f"{VENDOR}/{args.old}"), eps=eps, steps=args.steps)
        signed = sign_pixels(old.pixels, old.protections, keys.signer("publisher"))
        new = immunize(photo, client.get(f"{VENDOR}/{args.new}"), eps=eps, steps=args.steps)
        new_signed = sign_pixels(new.pixels, new.protections, keys.signer("publisher"))
        # after the first edit: the hook's signed output, then covered (or covered at once
        # when the new release honours the old one's target)
        hooked, first = signed, None
        for prompt in PROMPTS:
            reference = edit_image(plain, photo, prompt, **edit)
            edits = {
                "old only": edit_image(plain, old.pixels, prompt, **edit),
                "old + hook": edit_image(checked, hooked, prompt, **edit),
                "new native": edit_image(plain, new.pixels, prompt, **edit),
            }
            (check,) = checked.immunization_report.images
            first = first or check
            if check.action == "reimmunized":
                hooked = check.signed_image
            for row, edited in edits.items():
                rows[row].append(edit_similarity(reference, edited))
            if honouring:
                honoured = edit_image(later_checked, new_signed, prompt, **edit)
                (covered,) = later_checked.immunization_report.images
                later_reference = edit_image(later, photo, prompt, **edit)
                rows["honoured"].append(edit_similarity(later_reference, honoured))
        assert first is not None  # PROMPTS is not empty
        print(f"{name}: hook {first.status} -> {first.action}, then {check.status}", flush=True)
        if honouring:
            print(f"{name}: {honouring} finds the {args.new} image {covered.status}", flush=True)
    print(f"\nedits by {args.new}, img2img strength {args.strength}, {args.size}px, {PROMPTS}")
    steps = "each target's recommended" if args.steps is None else args.steps
    print(f"budget {eps}, {steps} steps; vs the edit of the clean photo (lower = disrupted)")
    print(f"{'':12} {'SSIM':>7} {'PSNR (dB)':>10}")
    for row, values in rows.items():
        ssim = statistics.mean(v[0] for v in values)
        psnr = statistics.mean(v[1] for v in values)
        print(f"{row:12} {ssim:7.3f} {psnr:10.2f}")


if __name__ == "__main__":
    main()
