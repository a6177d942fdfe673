"""What ``sign_outputs`` costs per output picture (goal: at most 30 ms at 512x512).

One output of a pipeline call is a 512x512 picture (a validation photo stands in);
signing it is a PNG encode (zlib level 1) and a C2PA manifest (ES256, development
key): ``c2pa.created`` alone, or ``c2pa.edited`` with the signed, immunized input
(512x512, carrying its own manifest) as the ingredient. The reference is the
PNG encode at the default level 6, what saving an output costs anyway. Medians
over ``--repeat`` runs after one warm-up, in this process.

    .venv/bin/python bench/sign_outputs.py [--repeat 20] [--size 512]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from photoimmune.diffusers_plugin.outputs import sign_outputs
from photoimmune.sdk.codec import encode_image
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.manifest import sign_pixels
from photoimmune.sdk.samples import sample_pixels


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    output = sample_pixels("coffee.png", args.size)
    with tempfile.TemporaryDirectory() as tmp:
        keys = init_keys(Path(tmp) / "keys")
        signer = keys.signer("vendor")
        source = sign_pixels(sample_pixels("chelsea.png", args.size), [], keys.signer())
        model = "photoimmune/tiny-ldm@1"
        rows = {
            "reference: PNG encode, level 6": lambda: encode_image(output, "PNG"),
            "PNG encode, level 1": lambda: encode_image(output, "PNG", png_level=1),
            "signed output, generation (c2pa.created)": lambda: sign_outputs(
                [output], [], signer, model
            ),
            "signed output, edit (c2pa.edited + ingredient)": lambda: sign_outputs(
                [output], [("input.png", source)], signer, model
            ),
        }
        times = {name: median_ms(fn, args.repeat) for name, fn in rows.items()}
    reference = next(iter(times.values()))
    listing = Table(title=f"signing one {args.size}x{args.size} output ({args.repeat} repeats)")
    for column in ("what", "median ms", "vs reference"):
        listing.add_column(column, justify="right" if column != "what" else "left")
    for name, ms in times.items():
        listing.add_row(name, f"{ms:.1f}", f"{ms / reference:.2f}")
    Console().print(listing)


if __name__ == "__main__":
    main()
