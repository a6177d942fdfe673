"""``photoimmune demo``: immunize a sample photo, edit it, and show what changed.

Everything is embedded: the bundled tiny model (it stands in for Stable
Diffusion; its numbers are not SD's), a scikit-image sample photo, and a fixed
prompt and seed, so two runs print the same table and draw the same grid.

Two steps, on ``tiny-ldm@3`` (why not on a later version: below):

1. the vendor publishes the targets of ``tiny-ldm@3`` and of the version before
   it to a local registry; a publisher immunizes the photo against v3 and signs
   it (``immunized.png``);
2. forward compatibility: a copy protected against v2 only, as publishers made
   them before v3 shipped (``immunized-previous.png``), is edited by the v3
   pipeline with the immunization check on, which re-immunizes it against v3
   and signs it as a new link of its manifest chain (``reimmunized.png``). Its
   edit is compared with the v3 edit of the v2-only image (no check) and of
   step 1's v3-native immunization (``forward.png``); and, where a bundled
   release honours v3 (``tiny-ldm@4``, a cooperative release), step 1's image
   is edited by that release with the check on too: ``covered``, so it passes
   untouched, and its mark alone breaks the edit.

The demo's model stays v3, whose protections the cooperative v4 honours, so that
all three steps show: v4 is v3's weights plus that gate, and v6 is v3 with the
upper half of its decoder retrained, whose edits of protected photos break more
(docs/models.md); v3's protections are v6's (the same target latent, pass and
mark), but no bundled release honours v6's target by its digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photoimmune.registry.admin import local_registry
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.errors import StaleRegistryError
from photoimmune.sdk.attacks.pgd import ProgressFn
from photoimmune.sdk.attacks.sizing import check_photo_size
from photoimmune.sdk.evaluate import edit_similarity, same_eps_noise
from photoimmune.sdk.immunization import ImmunizationResult, immunize
from photoimmune.sdk.io import atomic_write_bytes, save_image
from photoimmune.sdk.keys import KeyDir, open_keys
from photoimmune.sdk.limits import check_edit_steps
from photoimmune.sdk.manifest import read_manifest, sign_pixels
from photoimmune.sdk.models.bundled import VENDOR, bundled_models
from photoimmune.sdk.models.pipelines import edit_image, load_pipeline
from photoimmune.sdk.pictures import amplify_delta, bar_chart, comparison_grid, loss_curve
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import honouring_release


def previous_version(model: str) -> str | None:
    """The bundled version released before ``model`` (None for the first).

    Example:
        >>> previous_version("tiny-ldm@3"), previous_version("tiny-ldm@1")
        ('tiny-ldm@2', None)
    """
    names = [m.name for m in bundled_models()]
    index = names.index(model)
    return names[index - 1] if index else None


@dataclass(frozen=True)
class DemoSettings:
    model: str = "tiny-ldm@3"
    previous: str | None = "tiny-ldm@2"  # the forward-compatibility step's; None skips it
    photo: str = "chelsea.png"
    # At 256 px v3's edits keep more of the photo than at its training size (its VAE
    # blurs a fixed few pixels); the encoder attack still runs at 128 px (the target's
    # resolution), so only the edits cost more.
    size: int = 256
    eps: str = "16/255"  # PhotoGuard's demo budget (0.12 in its [-1, 1] scale)
    # None: each target's recommendation (tiny-ldm@3: its edit-trained pass and 40
    # steps of the edit attack; the table prints the method and steps it ran)
    steps: int | None = None
    prompt: str = "a photo of a cat in the snow"
    # At 0.2 v3's edit of the cat is a soft but believable cat, SSIM 0.57 to the photo
    # (0.51 at 0.3); at the paper's 0.5 it keeps far less (docs/research.md). The demo
    # prints which it used.
    strength: float = 0.2
    edit_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        # Settings are checked as they are made: run_demo writes keys and a registry, and
        # the command prints its header, before the first edit or resize would fail.
        check_photo_size(self.size)
        check_edit_steps(self.strength, self.edit_steps)

    @property
    def edit_options(self) -> dict:
        """The keyword arguments of every edit the demo runs (``edit_image``)."""
        return {"strength": self.strength, "steps": self.edit_steps, "seed": self.seed}


@dataclass(frozen=True)
class ForwardReport:
    """Step 2: the version's edits of older protections, each against its edit of the
    clean photo."""

    model: str
    previous: str
    status: str  # what the check found: "outdated"
    action: str  # what it did: "reimmunized"
    chain: tuple[str, ...]  # the re-signed image's protections, oldest first
    rows: tuple[tuple[str, float, float], ...]  # (case, SSIM, PSNR)
    seconds: float  # the check, re-immunization included
    grid: Path
    image: Path
    honouring: str | None = None  # a release that honours ``model``'s protections
    honoured_status: str | None = None  # what its check found step 1's image: "covered"


@dataclass(frozen=True)
class EffectRow:
    """One treated photo's edit against the edit of the clean photo."""

    case: str  # "uniform noise" (the paper's baseline) or "immunized"
    eps: str
    ssim: float
    psnr: float
    gap: float | None  # immunized only: how much lower its SSIM is than same-ε noise's


@dataclass(frozen=True)
class DemoReport:
    settings: DemoSettings
    ssim: float  # between the edit of the clean photo and the edit of the immunized one
    psnr: float
    fidelity: float  # SSIM(edit of the clean photo, photo): how believable the edit is
    effect: tuple[EffectRow, ...]  # noise and immunized, at the default ε and at settings.eps
    max_abs_delta: int
    method: str  # the attack the target recommended and the demo ran
    steps: int  # its PGD steps (after the target's one-pass immunizer, when it carries one)
    loss_before: str
    loss_after: str
    immunize_seconds: float
    grid: Path
    curve: Path
    chart: Path  # effect.png: how far each edit drifted from the clean edit
    target_ref: str = ""
    target_digest: str = ""
    forward: ForwardReport | None = None
    moved_registry: Path | None = None  # an earlier photoimmune's registry, moved aside


def run_demo(
    out_dir: Path,
    settings: DemoSettings | None = None,
    progress: Callable[[str], ProgressFn] | None = None,
) -> DemoReport:
    """Run the demo, write ``grid.png``, ``loss.png`` and ``immunized.png`` to ``out_dir``.

    ``progress(label)``, when given, returns the callback that follows the attack
    named ``label`` (each of the demo's attacks asks for one).

    Example:
        >>> report = run_demo(Path("out/demo"))  # doctest: +SKIP
        >>> report.ssim < 0.9  # doctest: +SKIP
        True
    """
    s = settings or DemoSettings()  # checked when made: see DemoSettings.__post_init__
    keys, _ = open_keys(out_dir / "keys")
    photo = sample_pixels(s.photo, s.size)
    # The vendor publishes the targets; the publisher fetches them back, verified.
    honouring = honouring_release(s.model) if s.previous else None
    releases = [m for m in (s.previous, s.model, honouring) if m]
    client, moved = _demo_registry(out_dir / "registry", releases)
    target = client.get(f"{VENDOR}/{s.model}")
    started = time.perf_counter()
    result = _immunized(photo, target, s.eps, s, progress)
    seconds = time.perf_counter() - started
    pipe = load_pipeline(s.model)
    edit = s.edit_options
    edit_clean = edit_image(pipe, photo, s.prompt, **edit)
    edit_immunized = edit_image(pipe, result.pixels, s.prompt, **edit)
    ssim, psnr = edit_similarity(edit_clean, edit_immunized)
    effect, edits = _effect(pipe, photo, edit_clean, edit_immunized, target, s, progress)
    grid = comparison_grid(
        [photo, result.pixels, edit_clean, *edits.values(), amplify_delta(photo, result.pixels)],
        [
            "original",
            f"immunized ({s.eps})",
            "edit of original",
            *(f"edit of immunized, {eps}" for eps in edits),
            "delta x10",
        ],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_path = out_dir / "grid.png"
    curve_path = out_dir / "loss.png"
    # Demo outputs are regenerated on every run; they are never originals.
    save_image(np.asarray(grid), grid_path, overwrite=True)
    save_image(
        np.asarray(loss_curve(result.loss_history, title=f"{result.protections[0].method} loss")),
        curve_path,
        overwrite=True,
    )
    chart_path = out_dir / "effect.png"
    save_image(np.asarray(_effect_chart(effect)), chart_path, overwrite=True)
    signed = sign_pixels(result.pixels, result.protections, keys.signer("publisher"))
    atomic_write_bytes(out_dir / "immunized.png", signed, overwrite=True)
    forward = None
    if s.previous and s.previous != s.model:
        forward = run_forward_step(out_dir, s, client, photo, result, keys, progress, honouring)
    protection = result.protections[0]
    return DemoReport(
        settings=s,
        ssim=ssim,
        psnr=psnr,
        fidelity=edit_similarity(edit_clean, photo)[0],
        effect=effect,
        max_abs_delta=result.max_abs_delta,
        method=protection.method,
        steps=protection.steps,
        loss_before=protection.loss_before,
        loss_after=protection.loss_after,
        immunize_seconds=round(seconds, 2),
        grid=grid_path,
        curve=curve_path,
        chart=chart_path,
        target_ref=str(target.ref),
        target_digest=target.digest,
        forward=forward,
        moved_registry=moved,
    )


def _demo_registry(folder: Path, models: list[str]) -> tuple[RegistryClient, Path | None]:
    """The demo's local registry, and where an earlier photoimmune's was moved to, if it
    published other releases under these versions (they are never replaced in place)."""
    try:
        return local_registry(folder, models), None
    except StaleRegistryError:
        moved = folder.with_name(f"{folder.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(moved)
        return local_registry(folder, models), moved


def _effect(pipe, photo, edit_clean, edit_immunized, target, s: DemoSettings, progress):
    """The paper's comparison: an immunization counts as far as its edit drifts further
    than same-ε noise's, at the budget the target recommends and at the demo's own
    (``s.eps``, whose immunized edit is ``edit_immunized``). Returns the rows and each
    budget's immunized edit, for the grid."""
    recommended = target.recommended_budget()
    rows: list[EffectRow] = []
    edits: dict[str, np.ndarray] = {}
    for eps in dict.fromkeys([recommended.eps if recommended else "8/255", s.eps]):
        noisy = same_eps_noise(photo, eps, np.random.default_rng(s.seed))
        noise = edit_similarity(edit_clean, edit_image(pipe, noisy, s.prompt, **s.edit_options))
        edited = edit_immunized
        if eps != s.eps:
            treated = _immunized(photo, target, eps, s, progress).pixels
            edited = edit_image(pipe, treated, s.prompt, **s.edit_options)
        immunized = edit_similarity(edit_clean, edited)
        edits[eps] = edited
        rows.append(EffectRow("uniform noise", eps, *noise, gap=None))
        rows.append(EffectRow("immunized", eps, *immunized, gap=noise[0] - immunized[0]))
    return tuple(rows), edits


def _effect_chart(rows: tuple[EffectRow, ...]):
    """1 - SSIM to the clean edit for every edit, on one scale: noise's beside immunization's."""
    drift = {f"{row.case.split()[-1]} {row.eps}": {"1 - SSIM": 1 - row.ssim} for row in rows}
    return bar_chart(drift, title="drift from the clean edit")


def _immunized(photo, target, eps: str, s: DemoSettings, progress) -> ImmunizationResult:
    label = f"immunizing vs {target.ref.model}@{target.ref.version} at {eps}"
    return immunize(
        photo,
        target,
        eps=eps,
        steps=s.steps,
        seed=s.seed,
        progress=progress(label) if progress else None,
    )


def run_forward_step(
    out_dir: Path,
    s: DemoSettings,
    client: RegistryClient,
    photo: np.ndarray,
    native: ImmunizationResult,
    keys: KeyDir,
    progress: Callable[[str], ProgressFn] | None = None,
    honouring: str | None = None,
) -> ForwardReport:
    """Step 2 (see the module docstring): a copy protected against ``s.previous`` only
    meets ``s.model``'s checked pipeline; ``client`` reads the registry step 1 published
    the targets to, and ``native`` is step 1's immunization. ``honouring``, a release
    that honours ``s.model`` (published too), adds the row of its checked edit of
    ``native``, against its own edit of the photo.

    Example:
        >>> step = run_forward_step(out, settings, client, photo, result, keys)  # doctest: +SKIP
        >>> step.action, step.chain  # doctest: +SKIP
        ('reimmunized', ('photoimmune/tiny-ldm@2', 'photoimmune/tiny-ldm@3'))
    """
    import photoimmune.diffusers_plugin  # noqa: F401  (adds enable_immunization_check)

    assert s.previous is not None
    old = _immunized(photo, client.get(f"{VENDOR}/{s.previous}"), s.eps, s, progress)
    old_image = out_dir / "immunized-previous.png"
    signed = sign_pixels(old.pixels, old.protections, keys.signer("publisher"))
    atomic_write_bytes(old_image, signed, overwrite=True)
    plain = load_pipeline(s.model)
    checked = load_pipeline(s.model)
    checked.enable_immunization_check(
        client,
        signer=keys.signer("vendor"),
        trust=keys.ca_cert,
        eps=s.eps,
        steps=s.steps,
        seed=s.seed,
        progress=progress(f"check re-immunizes for {s.model}") if progress else None,
    )
    edit = s.edit_options
    clean_edit = edit_image(plain, photo, s.prompt, **edit)
    started = time.perf_counter()
    hooked_edit = edit_image(checked, old_image, s.prompt, **edit)
    seconds = time.perf_counter() - started
    (check,) = checked.immunization_report.images
    edits = {
        f"{s.previous} only, no check": edit_image(plain, old.pixels, s.prompt, **edit),
        f"{s.previous} + re-immunized by the check": hooked_edit,
        f"{s.model} native": edit_image(plain, native.pixels, s.prompt, **edit),
    }
    rows = tuple((case, *edit_similarity(clean_edit, e)) for case, e in edits.items())
    labels = ["edit, no check", "edit, check on", f"edit, {s.model} native"]
    honoured_status = None
    if honouring:
        later, later_checked = load_pipeline(honouring), load_pipeline(honouring)
        later_checked.enable_immunization_check(client, trust=keys.ca_cert, eps=s.eps)
        native_image = out_dir / "immunized.png"  # step 1's, signed
        honoured = edit_image(later_checked, native_image, s.prompt, **edit)
        (covered,) = later_checked.immunization_report.images
        honoured_status = covered.status
        reference = edit_image(later, photo, s.prompt, **edit)
        case = f"{s.model} native, edited by {honouring}"
        rows += ((case, *edit_similarity(reference, honoured)),)
        edits[case] = honoured
        labels.append(f"{s.model} native, {honouring}")
    image = out_dir / "reimmunized.png"
    chain: tuple[str, ...] = ()
    if check.signed_image is not None:
        atomic_write_bytes(image, check.signed_image, overwrite=True)
        manifest = read_manifest(check.signed_image, trust=keys.trust_anchor_pem())
        chain = manifest.protected_against
    grid = comparison_grid(
        [photo, old.pixels, clean_edit, *edits.values()],
        ["original", f"immunized vs {s.previous}", f"{s.model} edit of original", *labels],
    )
    grid_path = out_dir / "forward.png"
    save_image(np.asarray(grid), grid_path, overwrite=True)
    return ForwardReport(
        model=s.model,
        previous=s.previous,
        status=check.status,
        action=check.action,
        chain=chain,
        rows=rows,
        seconds=round(seconds, 2),
        grid=grid_path,
        image=image,
        honouring=honouring,
        honoured_status=honoured_status,
    )
