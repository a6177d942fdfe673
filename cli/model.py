"""``photoimmune model ...``: list, locate, check and train the bundled models."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID

from photoimmune.sdk.models.bundled import bundled_models, model_index, resolve_model

from . import checks
from .common import console, plain, progress_bar, quiet_libraries, table

model_app = typer.Typer(
    help="The bundled tiny models and local diffusers folders.", no_args_is_help=True
)


@model_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model.")] = False,
) -> None:
    """List the bundled models (they load offline, like any diffusers folder)."""
    listing = table("name", "registry ref", "latent scaling", "size", "path")
    for m in bundled_models():
        vae_config = json.loads((m.path / "vae" / "config.json").read_text())
        size = sum(f.stat().st_size for f in m.path.rglob("*") if f.is_file())
        record = {
            "name": m.name,
            "ref": m.ref,
            "latent_scaling": vae_config["scaling_factor"],
            "bytes": size,
            "path": str(m.path),
        }
        if as_json:
            typer.echo(json.dumps(record))
            continue
        listing.add_row(
            m.name, m.ref, str(record["latent_scaling"]), f"{size / 1e6:.1f} MB", plain(m.path)
        )
    if not as_json:
        console.print(listing)


@model_app.command("path")
def model_path(
    model: Annotated[str, typer.Argument(help="A bundled name (tiny-ldm@1) or a local folder.")],
) -> None:
    """Print the local diffusers folder of MODEL, for from_pretrained(path)."""
    path = resolve_model(model)
    model_index(path)  # fail here, not in the caller's from_pretrained
    typer.echo(str(path))


@model_app.command("check")
def check(
    model: Annotated[str, typer.Argument(help="A bundled name or a local diffusers folder.")],
    resolution: Annotated[
        int, typer.Option(min=8, help="Square size the photos are resized to.")
    ] = 128,
    strength: Annotated[float, typer.Option(min=0, max=1, help="img2img strength.")] = 0.3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure VAE PSNR and img2img fidelity on the held-out validation photos."""
    checks.models([model], "MODEL")
    quiet_libraries()
    from dataclasses import asdict

    from photoimmune.sdk.models.quality import check_model

    report = check_model(model, resolution=resolution, strength=strength)
    if as_json:
        typer.echo(json.dumps(asdict(report)))
        return
    scores = table("photo", "VAE PSNR (dB)", f"img2img@{strength} PSNR (dB)", title=report.model)
    for name, score in report.vae_psnr_db.items():
        scores.add_row(name, f"{score:.2f}", f"{report.img2img_psnr_db[name]:.2f}")
    console.print(scores)
    console.print(
        f"load {report.load_seconds:.2f} s, one img2img call ({resolution}px, 10 steps) "
        f"{report.img2img_seconds:.2f} s"
    )


@model_app.command("train-tiny")
def train_tiny_command(
    version: Annotated[int, typer.Option(help="Which release recipe to train (1-6).")],
    out: Annotated[Path, typer.Option(help="Folder to create (must not exist).")],
) -> None:
    """Train a tiny model release (deterministic; v1 from scratch, v2 and v3 each from
    the one before, v4 from v3 with an encoder that honours v3's protections, v5 from
    v3 with a wider UNet for edits that keep the photo, v6 from v3 with the upper half
    of its decoder fine-tuned against a patch discriminator)."""
    from photoimmune.sdk.models.train_tiny import RELEASES, train_tiny

    checks.one_of(str(version), [str(v) for v in RELEASES], "--version")
    checks.new_folder(out, "--out")
    quiet_libraries()

    with progress_bar("loss {task.fields[loss]:.4f}", remaining=True) as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, loss=loss)
            bar.update(tasks[stage], completed=step, loss=loss)

        # Train into a sibling temp folder and rename: a crash never leaves half a model.
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            summary = train_tiny(RELEASES[version], staging, report)
            staging.rename(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    console.print(f"wrote {out} in {summary['train_seconds']['total']:.0f} s")
