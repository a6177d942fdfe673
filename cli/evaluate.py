"""``photoimmune eval``: the evaluation table from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.table import Table

from photoimmune.sdk.descriptor import METHODS, PipelineKind
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.evaluate.processing import PROCESSING_NAMES
from photoimmune.sdk.limits import MAX_SEED, MAX_STEPS

from . import checks
from .common import console, print_wide, progress_bar, quiet_libraries

#: The harness's ``EvalMethod`` (same-ε noise or an attack), mirrored because the harness
#: imports torch; a test keeps them equal.
EVAL_METHODS = ("noise", *METHODS)


def eval_command(
    photos: Annotated[
        list[str] | None,
        typer.Argument(help="Photos (paths, or scikit-image sample names such as chelsea.png)."),
    ] = None,
    model: Annotated[str, typer.Option(help="Bundled model or local diffusers folder.")] = (
        "tiny-ldm@1"
    ),
    edit: Annotated[str, typer.Option(help="img2img or inpaint.")] = "img2img",
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="Edit prompt; repeatable.")
    ] = None,
    strength: Annotated[float, typer.Option(min=0, max=1, help="img2img strength.")] = 0.5,
    edit_steps: Annotated[
        int, typer.Option(min=1, max=MAX_STEPS, help="Denoising steps of each edit.")
    ] = 20,
    eps: Annotated[str, typer.Option(help="L∞ budget, e.g. 8/255.")] = "8/255",
    steps: Annotated[
        int, typer.Option(min=1, max=MAX_STEPS, help="Encoder attack iterations.")
    ] = 100,
    diffusion_steps: Annotated[
        int, typer.Option(min=1, max=MAX_STEPS, help="Diffusion attack iterations.")
    ] = 20,
    methods: Annotated[str, typer.Option(help="Comma-separated: noise,encoder,diffusion,edit.")] = (
        "noise,encoder,diffusion"
    ),
    processing: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated processing before each edit: none, jpeg95, jpeg75, jpeg50, "
            "resize0.5, blur1, gauss, upscale, diffpure, impress (docs/evaluation.md). "
            "Overrides --robustness."
        ),
    ] = None,
    robustness: Annotated[
        bool,
        typer.Option(
            help="Shorthand for --processing with every step (common processing and "
            "purifiers); --no-robustness: none only."
        ),
    ] = True,
    eot: Annotated[
        bool,
        typer.Option(
            help="Immunize with EOT (expectation over JPEG, resize, blur, noise and noisy "
            "upscaling): the hardened protection."
        ),
    ] = False,
    size: Annotated[
        int, typer.Option(min=64, help="Photos are centre-cropped to this square.")
    ] = 128,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the edits and attacks.")
    ] = 0,
    features: Annotated[
        Path | None,
        typer.Option(help="torchvision classifier weights for FID and precision/recall."),
    ] = None,
    features_arch: Annotated[
        str | None,
        typer.Option(help="The --features weights' torchvision architecture (inception_v3)."),
    ] = None,
    clip: Annotated[
        Path | None, typer.Option(help="Local CLIP folder for image-prompt similarity.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where pictures go.")] = Path("out/eval"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV here.")] = None,
) -> None:
    """Edit clean and immunized photos; report SSIM, PSNR, VIFp, FSIM (FID, P/R, CLIP)."""
    _check_options(model, edit, eps, methods, processing, out, csv, features, features_arch, clip)
    checks.edits(size, strength, edit_steps, img2img=edit == "img2img")
    from pydantic import ValidationError

    from photoimmune.sdk.evaluate.harness import EvalSettings, evaluate
    from photoimmune.sdk.io import atomic_write_bytes, check_not_an_input
    from photoimmune.sdk.models.train_tiny import VALIDATION_PHOTOS
    from photoimmune.sdk.samples import sample_path

    quiet_libraries()
    sources = [p if Path(p).exists() else str(sample_path(p)) for p in photos or VALIDATION_PHOTOS]
    if csv is not None:
        check_not_an_input(csv, sources, option="--csv")
    try:
        settings = EvalSettings(
            model=model,
            edit=edit,  # type: ignore[arg-type]  # pydantic validates it
            prompts=tuple(prompt) if prompt else EvalSettings().prompts,
            strength=strength,
            edit_steps=edit_steps,
            seed=seed,
            size=size,
            eps=eps,
            steps=steps,
            diffusion_steps=diffusion_steps,
            methods=tuple(m.strip() for m in methods.split(",")),  # type: ignore[misc]  # ditto
            processing=_processing(processing, robustness),  # type: ignore[arg-type]  # ditto
            eot=eot,
            features=str(features) if features else None,
            **({"features_arch": features_arch} if features_arch else {}),
            clip=str(clip) if clip else None,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"eval settings: {problems}") from None
    stages = 1 + len(settings.methods) * (1 + len(settings.processing))
    with progress_bar() as bar:
        task = bar.add_task("evaluating", total=stages)

        def say(message: str) -> None:
            bar.update(task, advance=1, description=message)

        report = evaluate(sources, settings, out_dir=out, progress=say)
    if csv is not None:
        atomic_write_bytes(csv, report.to_csv().encode(), overwrite=True)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json")))
        return
    table = Table(
        title=f"{settings.model} {settings.edit}, ε {settings.eps}: edits of treated vs clean "
        f"photos ({len(sources)} photos x {len(settings.prompts)} prompts; lower = disrupted)"
    )
    columns = [c for c in report.columns if c not in report.absent]
    table.add_column("method")
    table.add_column("processing")
    for column in columns:
        table.add_column(column)
    for row in report.rows:
        cells = []
        for column in columns:
            stat = row.metrics.get(column)
            if stat is None:
                cells.append("-")
            elif stat.std is None:
                cells.append(f"{stat.mean:.3f}")
            else:
                cells.append(f"{stat.mean:.3f}±{stat.std:.3f}")
        table.add_row(row.method, row.processing, *cells)
    print_wide(table)  # up to ten columns: never squeeze them
    for column, reason in report.absent.items():
        console.print(f"[dim]{column}: {reason}[/]")
    if report.reference_clip is not None:
        console.print(
            f"CLIP similarity of the clean photos' edits: {report.reference_clip.mean:.2f}"
        )
    _print_kept(report)
    seconds = ", ".join(f"{m} {t:.1f} s" for m, t in report.treat_seconds.items())
    console.print(f"treating took: {seconds}{' (EOT)' if settings.eot else ''}")
    console.print(f"pictures: {', '.join(report.grids)}, {report.chart}")


def _processing(processing: str | None, robustness: bool) -> tuple[str, ...]:
    if processing is not None:
        return tuple(p.strip() for p in processing.split(","))
    return PROCESSING_NAMES if robustness else ("none",)


def _print_kept(report) -> None:
    """The gap over same-ε noise per processing step, and the fraction of it kept."""
    kept = report.kept()
    if not kept:
        return
    table = Table(
        title="protection kept: gap over same-ε noise after each processing step "
        "(noise's similarity - the method's) / the gap without processing"
    )
    for column in ("method", "processing", "SSIM gap", "SSIM kept", "PSNR gap", "PSNR kept"):
        table.add_column(column)
    for k in kept:
        cells = []
        for name in ("ssim", "psnr"):
            fraction = k.kept[name]
            cells += [f"{k.gap[name]:.3f}", "-" if fraction is None else f"{fraction:.0%}"]
        table.add_row(k.method, k.processing, *cells)
    print_wide(table)


def _check_options(
    model: str,
    edit: str,
    eps: str,
    methods: str,
    processing: str | None,
    out: Path,
    csv: Path | None,
    features: Path | None,
    features_arch: str | None,
    clip: Path | None,
) -> None:
    """Everything a mistake could hide in, before the harness imports torch (minutes later
    a typo would only then be found)."""
    checks.models([model])
    checks.one_of(edit, get_args(PipelineKind), "--edit")
    checks.budget(eps)
    for method in methods.split(","):
        checks.one_of(method.strip(), EVAL_METHODS, "--methods")
    for step in (processing or "none").split(","):
        checks.one_of(step.strip(), PROCESSING_NAMES, "--processing")
    checks.output_folder(out, "--out")
    if csv is not None:
        checks.output_file(csv, "--csv", overwrite=True)
    if features is not None:
        checks.input_files([features], "--features")
    if features_arch is not None and features is None:
        raise InputError("--features-arch names the --features weights' architecture: add them")
    if clip is not None and not clip.is_dir():
        raise InputError(
            f"--clip {clip}: not a folder; pass a CLIPModel saved with save_pretrained"
        )
