"""``photoimmune targets ...``: a model release's attack target, built, trained, scored.

Example:
    photoimmune targets build --model ./my-sd --ref acme/sd@1.5 -o release
    photoimmune targets score release --model ./my-sd -o release/scorecard.json
    photoimmune registry publish release --key keys/acme.pem --registry reg
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from photoimmune.sdk.errors import InputError, OutputExistsError
from photoimmune.sdk.limits import MAX_SEED, MAX_STEPS

from . import checks
from .common import console, progress_bar, quiet_libraries, table

targets_app = typer.Typer(help="Attack targets for a model release.", no_args_is_help=True)

OVERWRITE_HELP = "Replace the release already in --out (its scorecard and immunizer too)."
TRAINING_NAME = "training.json"  # train-immunizer's record, kept beside the release


def _check_release_folder(out: Path, overwrite: bool) -> None:
    """``-o/--out`` of a release: a folder that holds none yet (what `targets build`,
    `train-immunizer` and `targets score` write there), unless --overwrite."""
    from photoimmune.sdk.descriptor import DESCRIPTOR_NAME, IMMUNIZER_NAME, TENSORS_NAME
    from photoimmune.sdk.scorecard import SCORECARD_NAME

    checks.output_folder(out, "-o/--out")
    names = (DESCRIPTOR_NAME, TENSORS_NAME, IMMUNIZER_NAME, SCORECARD_NAME, TRAINING_NAME)
    held = [name for name in names if (out / name).exists()]
    if held and not overwrite:
        raise OutputExistsError(
            f"-o/--out {out}: already holds a release ({', '.join(held)}); pass --overwrite "
            "to replace it, or choose another folder"
        )


def _save_release(target, out: Path) -> Path:
    """Save ``target`` in ``out`` (see :func:`_check_release_folder`), without what the
    release it replaces had beyond it (an immunizer, a scorecard, a training record):
    left there, they would be published with, or taken for, the new target's."""
    from photoimmune.sdk.descriptor import IMMUNIZER_NAME
    from photoimmune.sdk.scorecard import SCORECARD_NAME
    from photoimmune.sdk.targets import save_target

    stale = [SCORECARD_NAME, TRAINING_NAME] + ([IMMUNIZER_NAME] if not target.immunizer else [])
    for name in stale:
        (out / name).unlink(missing_ok=True)
    return save_target(target, out)  # replaces the descriptor and tensors


@targets_app.command("build")
def build(
    model: Annotated[str, typer.Option(help="Bundled model (tiny-ldm@1) or diffusers folder.")],
    ref: Annotated[str, typer.Option(help="The release's name, vendor/model@version.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for target.json + tensors.")],
    recipe: Annotated[
        str | None,
        typer.Option(help="gray (PhotoGuard) or checker (Mist-like) (default: gray)."),
    ] = None,
    target_image: Annotated[
        Path | None, typer.Option(help="Use this image as the target instead of a recipe.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE_HELP)] = False,
) -> None:
    """Build the attack target a vendor publishes for one model release."""
    from photoimmune.sdk.refs import ModelRef

    ModelRef.parse(ref)  # vendor/model@version, checked before the model loads
    checks.models([model])
    if recipe is not None:
        checks.one_of(recipe, checks.RECIPES, "--recipe")
        if target_image is not None:  # the image would replace the recipe without a word
            raise InputError(
                "--recipe and --target-image both choose the target image: drop --recipe "
                "to use the image, or --target-image to use the recipe"
            )
    _check_release_folder(out, overwrite)
    if target_image is not None:
        checks.input_files([target_image], "--target-image")
    from photoimmune.sdk.io import load_image, pixels_to_tensor
    from photoimmune.sdk.targets import build_target

    image = None if target_image is None else pixels_to_tensor(load_image(target_image).pixels)
    chosen = {} if recipe is None else {"recipe": recipe}  # None: build_target's default
    target = build_target(model, ref=ref, image=image, **chosen)  # type: ignore[arg-type]
    path = _save_release(target, out)
    console.print(f"{target.ref}: {escape(str(path))} (digest {target.digest[:16]}…)")


@targets_app.command("train-immunizer")
def train_immunizer_command(
    model: Annotated[str, typer.Option(help="Bundled model (tiny-ldm@2) or diffusers folder.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for target.json, tensors and immunizer.")
    ],
    ref: Annotated[
        str | None,
        typer.Option(help="The release's name, vendor/model@version (default: the bundled one's)."),
    ] = None,
    recipe: Annotated[str, typer.Option(help="gray (PhotoGuard) or checker (Mist-like).")] = "gray",
    steps: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_STEPS,
            help="Training steps (0.7 s each on 2 cores in bf16, 1.4 s in fp32).",
        ),
    ] = 400,
    batch: Annotated[int, typer.Option(min=1, help="Photo crops per step.")] = 8,
    width: Annotated[
        int, typer.Option(min=4, help="Generator width (32: about 0.6 M weights).")
    ] = 32,
    eps: Annotated[str, typer.Option(help="L-inf budget it is trained at.")] = "8/255",
    finish_steps: Annotated[
        int, typer.Option(min=0, help="PGD steps publishers run after the pass by default.")
    ] = 5,
    eot: Annotated[
        bool, typer.Option(help="Train under random JPEG/resize/blur (robuster).")
    ] = False,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the weights and the crops.")
    ] = 0,
    lr: Annotated[
        float, typer.Option(min=0, help="Adam's learning rate (cosine decay; 1e-3 to fine-tune).")
    ] = 2e-3,
    objective: Annotated[
        str,
        typer.Option(
            help="encoder (pull the latent to the target's) or edit (push the guided "
            "edit away from the photo's; loads the whole pipeline; docs/models.md)."
        ),
    ] = "encoder",
    crop: Annotated[
        int | None,
        typer.Option(min=16, help="Crop side (default: the target's resolution; half for edit)."),
    ] = None,
    start: Annotated[
        Path | None,
        typer.Option(help="A target folder whose immunizer to start from (a fine-tune)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE_HELP)] = False,
) -> None:
    """Train a one-pass immunizer for a release's target and write the target carrying it
    (publish that folder as usual: its weights are signed with it), with training.json,
    the settings, time and losses (kept for the record; not published)."""
    from photoimmune.sdk.refs import ModelRef

    if ref is not None:
        ModelRef.parse(ref)
    checks.models([model])
    checks.one_of(recipe, checks.RECIPES, "--recipe")
    from photoimmune.sdk.descriptor import IMMUNIZER_OBJECTIVES

    checks.one_of(objective, IMMUNIZER_OBJECTIVES, "--objective")
    eps = checks.budget(eps)
    _check_release_folder(out, overwrite)
    import time

    from photoimmune.sdk.immunizer import ImmunizerTraining, train_immunizer, training_record
    from photoimmune.sdk.io import atomic_write_bytes
    from photoimmune.sdk.targets import build_target, load_target

    training = ImmunizerTraining(
        steps=steps,
        batch=batch,
        width=width,
        eps=eps,
        finish_steps=finish_steps,
        eot=eot,
        seed=seed,
        lr=lr,
        objective=objective,  # type: ignore[arg-type]
        crop=crop,
    )
    target = build_target(model, ref=ref, recipe=recipe)  # type: ignore[arg-type]
    first = None if start is None else load_target(start)
    history: list[float] = []
    started = time.perf_counter()
    with progress_bar("loss {task.fields[loss]:.4f}", remaining=True) as bar:
        task = bar.add_task("training", total=steps, loss=1.0)

        def report(step: int, _total: int, loss: float) -> None:
            history.append(loss)
            bar.update(task, completed=step, loss=loss)

        trained = train_immunizer(target, training, start=first, progress=report)
    path = _save_release(trained, out)
    record = training_record(training, time.perf_counter() - started, history, first)
    atomic_write_bytes(out / TRAINING_NAME, json.dumps(record, indent=2).encode(), overwrite=True)
    console.print(
        f"{trained.ref}: {escape(str(path))} with a one-pass immunizer "
        f"(digest {trained.digest[:16]}…, trained for {trained.base_digest[:16]}…)"
    )


@targets_app.command("score")
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
