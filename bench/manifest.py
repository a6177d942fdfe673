"""What a signed immunization manifest costs: bytes added, time to sign, time to verify.

Measured on a 512x512 PNG of a validation photo, with a freshly made development
key (ES256 and Ed25519, each as a PEM key and through a ``cryptography`` callback,
the shape a KMS/HSM signer takes). Times are medians over ``--repeat`` runs, in
the same process, after one warm-up.

    .venv/bin/python bench/manifest.py [--repeat 20] [--size 512]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.table import Table

from photoimmune.sdk.io import encode_image
from photoimmune.sdk.keys import ManifestSigner, cryptography_callback, init_keys
from photoimmune.sdk.manifest import read_manifest, sign_image
from photoimmune.sdk.protection import Protection
from photoimmune.sdk.samples import sample_pixels

PROTECTION = Protection(
    target_ref="photoimmune/tiny-ldm@1",
    target_digest="0" * 64,
    method="encoder",
    norm="linf",
    eps="8/255",
    steps=100,
    loss_before="1.5888",
    loss_after="0.90726",
    duration_ms=30000,
)


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up: imports, native library set-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    png = encode_image(sample_pixels("chelsea.png", args.size), "PNG")
    table = Table(title=f"manifest on a {args.size}x{args.size} PNG ({len(png)} bytes)")
    for column in ("signer", "bytes added", "sign (ms)", "verify (ms)", "verdict"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as tmp:
        for alg in ("es256", "ed25519"):
            keys = init_keys(Path(tmp) / alg, alg=alg)
            key = serialization.load_pem_private_key(keys.key("publisher").read_bytes(), None)
            chain = keys.cert("publisher").read_bytes()
            signers = {
                f"{alg} PEM": keys.signer(),
                f"{alg} callback": ManifestSigner.from_callback(
                    cryptography_callback(key), alg, chain
                ),
            }
            for name, signer in signers.items():
                signed = sign_image(png, [PROTECTION], signer)
                anchors = keys.trust_anchor_pem()
                sign_s = median_seconds(
                    lambda s=signer: sign_image(png, [PROTECTION], s), args.repeat
                )
                verify_s = median_seconds(
                    lambda d=signed, a=anchors: read_manifest(d, trust=a), args.repeat
                )
                verdict = read_manifest(signed, trust=anchors).verdict
                table.add_row(
                    name,
                    str(len(signed) - len(png)),
                    f"{sign_s * 1000:.1f}",
                    f"{verify_s * 1000:.1f}",
                    verdict,
                )
    Console().print(table)


if __name__ == "__main__":
    main()
