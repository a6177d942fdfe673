"""What the immunization check costs a pipeline call, at 512x512 by default.

Times the check alone (``ImmunizationCheck.prepare_call``: read the file, verify
the C2PA manifest and its pixel binding, decide) for an image already covered
against the pipeline's version, given as a path, as bytes and as an opened PIL
image; the manifest-free detection of a clean photo; and the one-off cost of
recognising the pipeline by weight fingerprint. The reference, in the same
process, is one img2img call of the same pipeline without the check.

    .venv/bin/python bench/plugin_overhead.py [--size 512] [--repeats 20] [--model tiny-ldm@2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

import photoimmune.diffusers_plugin  # noqa: F401  (adds enable_immunization_check)
from photoimmune.registry.admin import local_registry
from photoimmune.sdk import immunize, sign_pixels
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.bundled import VENDOR
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.samples import sample_pixels


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ldm@2")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--edit-steps", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="plugin-overhead-"))
    client = local_registry(work / "registry", [args.model])
    keys = init_keys(work / "keys")
    photo = sample_pixels("astronaut.png", args.size)
    # A covering manifest needs a real protection record; a few steps make one quickly.
    result = immunize(photo, client.get(f"{VENDOR}/{args.model}"), steps=5)
    covered = sign_pixels(result.pixels, result.protections, keys.signer("publisher"))
    path = work / "covered.png"
    path.write_bytes(covered)

    pipe = load_pipeline(args.model)
    reference_ms = _median_ms(
        lambda: edit_image(pipe, photo, "a photo", steps=args.edit_steps), max(3, args.repeats // 5)
    )
    pipe.enable_immunization_check(client, trust=keys.ca_cert, signer=keys.signer("vendor"))
    check = pipe._immunization_check
    call = type(pipe).__mro__[1].__call__

    def run(image) -> str:
        check.prepare_call(call, ("a photo",), {"image": image})
        return pipe.immunization_report.images[0].status

    started = time.perf_counter()
    assert run(str(path)) == "covered"  # first call: fingerprints, registry lookup
    first_ms = (time.perf_counter() - started) * 1000
    rows = {
        "covered, path": _median_ms(lambda: run(str(path)), args.repeats),
        "covered, bytes": _median_ms(lambda: run(covered), args.repeats),
        "covered, opened PIL": _median_ms(lambda: run(Image.open(path)), args.repeats),
        "clean, detection": _median_ms(lambda: run(Image.fromarray(photo)), args.repeats),
    }
    print(f"{args.model} img2img at {args.size}x{args.size}, {args.edit_steps} steps, CPU")
    print(f"reference: one edit without the check      {reference_ms:9.1f} ms")
    print(f"first call (fingerprints + registry)        {first_ms:9.1f} ms (once per pipeline)")
    for name, ms in rows.items():
        print(f"check, {name:36} {ms:9.1f} ms  {ms / reference_ms:6.3f} x edit")


if __name__ == "__main__":
    main()
