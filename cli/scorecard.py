"""``photoimmune targets score``: measure a release's scorecard (protocol v1).

Example:
    photoimmune targets build --model ./my-sd --ref acme/sd@1.5 -o release
    photoimmune targets score release --model ./my-sd -o release/scorecard.json
    photoimmune registry publish release --key keys/acme.pem --registry reg
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import checks
from .common import console, progress_bar, quiet_libraries, table


def score_command(
    target: Annotated[
        str,
        typer.Argument(
            help="A release folder (targets build) or a bundled model / diffusers folder."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The scorecard file to write.")],
    photos: Annotated[
        list[str] | None,
        typer.Option(
            help="Photos instead of the protocol's (chelsea, coffee, camera); comma-separated "
            "or repeated. The card records which."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="The release's weights (diffusers folder), unless it is bundled."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Measure how much of TARGET's protection survives JPEG, noisy upscaling, DiffPure and
    IMPRESS under the fixed protocol (docs/vendor-guide.md); minutes on a CPU."""
    folder = Path(target)
    is_release = (folder / "target.json").is_file()
    if not is_release:
        checks.models([target], "TARGET")
    if model is not None:
        checks.models([model], "--model")
    checks.output_file(out, "-o/--out", overwrite=overwrite)
    names = [p.strip() for entry in photos or [] for p in entry.split(",") if p.strip()]
    from photoimmune.sdk.samples import sample_path

    for name in names:
        if not Path(name).exists():
            sample_path(name)  # an unknown name fails here, with the names there are
    from photoimmune.sdk.errors import InputError
    from photoimmune.sdk.io import atomic_write_bytes
    from photoimmune.sdk.scorecard import score_target
    from photoimmune.sdk.targets import build_target, load_target

    quiet_libraries()
    if is_release:
        release = load_target(folder)
        built = release.bind_model(model) if model is not None else release
        if not built.has_weights:
            raise InputError(
                f"{target}: {release.ref} is not a bundled release; pass its weights with "
                "--model FOLDER (the diffusers folder it was built from)"
            )
    else:
        built = build_target(target)
    with progress_bar() as bar:
        task = bar.add_task("scoring", total=None)
        card = score_target(
            built,
            names or None,
            progress=lambda message: bar.update(task, description=message),
        )
    atomic_write_bytes(out, card.to_json(), overwrite=overwrite)
    rows = table("processing", "SSIM noise", "SSIM immunized", "SSIM kept", "PSNR kept")
    for row in card.scores:
        rows.add_row(
            row.processing,
            f"{row.ssim_noise:.3f}",
            f"{row.ssim_immunized:.3f}",
            "-" if row.ssim_kept is None else f"{row.ssim_kept:.0%}",
            "-" if row.psnr_kept is None else f"{row.psnr_kept:.0%}",
        )
    console.print(rows)
    console.print(f"{card.target}: scorecard in {escape(str(out))}", highlight=False)
