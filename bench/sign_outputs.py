"""What ``sign_outputs`` costs per output picture (goal: at most 30 ms at 512x512).

One output of a pipeline call is a 512x512 picture (a validation photo stands in);
signing it is a PNG encode (:func:`~photoimmune.sdk.codec.encode_png_fast`: Sub
filter, Huffman-only deflate) and a C2PA manifest (ES256, development key):
``c2pa.created`` alone, or ``c2pa.edited`` with the signed, immunized input
(512x512, carrying its own manifest) as the ingredient. The reference is
Pillow's PNG encode at its default level 6, what saving an output costs anyway;
Pillow at level 1 was the encoder before. Medians over ``--repeat`` runs after
one warm-up, in this process; sizes are of the bytes each row produces.

    .venv/bin/python bench/sign_outputs.py [--repeat 20] [--size 512]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from manifest import PROTECTION  # bench/ is on sys.path when this script runs
from PIL import Image
from rich.console import Console
from rich.table import Table

from photoimmune.diffusers_plugin.outputs import sign_outputs
from photoimmune.sdk.codec import encode_image, encode_png_fast
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.manifest import sign_pixels
from photoimmune.sdk.samples import sample_pixels


def median_ms(fn, repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``fn()`` and the size of what it returned, in bytes."""
    made = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    data = made if isinstance(made, bytes) else made[0].signed_image
    return statistics.median(times), len(data)


def pillow_png(pixels, level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    output = sample_pixels("coffee.png", args.size)
    with tempfile.TemporaryDirectory() as tmp:
        keys = init_keys(Path(tmp) / "keys")
        signer = keys.signer("vendor")
        # the input an edit signs as its ingredient: a photo signed as immunized
        source = sign_pixels(sample_pixels("chelsea.png", args.size), [PROTECTION], keys.signer())
        model = "photoimmune/tiny-ldm@1"
        rows = {
            "reference: PNG encode, Pillow level 6": lambda: encode_image(output, "PNG"),
            "PNG encode, Pillow level 1 (before)": lambda: pillow_png(output, 1),
            "PNG encode, encode_png_fast": lambda: encode_png_fast(output),
            "signed output, generation (c2pa.created)": lambda: sign_outputs(
                [output], [], signer, model
            ),
            "signed output, edit (c2pa.edited + ingredient)": lambda: sign_outputs(
                [output], [("input.png", source)], signer, model
            ),
        }
        measured = {name: median_ms(fn, args.repeat) for name, fn in rows.items()}
    ref_ms, ref_bytes = next(iter(measured.values()))
    listing = Table(title=f"signing one {args.size}x{args.size} output ({args.repeat} repeats)")
    for column in ("what", "median ms", "time vs reference", "KiB", "size vs reference"):
        listing.add_column(column, justify="right" if column != "what" else "left")
    for name, (ms, size) in measured.items():
        listing.add_row(
            name, f"{ms:.1f}", f"{ms / ref_ms:.2f}", f"{size / 1024:.0f}", f"{size / ref_bytes:.2f}"
        )
    Console().print(listing)


if __name__ == "__main__":
    main()
