"""``evaluate()``: the paper's table for given photos, model, edit and budget.

For each photo and prompt, the model edits the clean photo (the reference) and
the photo treated by each method: random noise of the same ε (the baseline),
the encoder attack, the diffusion attack. Each treated photo is also edited
after common processing (JPEG, resize, blur) and after purifiers (noise, noisy
upscaling, DiffPure, IMPRESS: :mod:`.processing`), to show how much protection
survives them. Edits are compared with the reference edit (lower similarity =
the edit was disrupted more) and summarised as mean ± standard deviation over
photos and prompts, as in the paper. :meth:`EvalReport.kept` turns the table into
the gap over same-ε noise per processing step and the fraction of it kept.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..attacks.budget import BudgetText, parse_budget
from ..attacks.sizing import check_photo_size
from ..descriptor import Method, PipelineKind
from ..errors import InputError
from ..io import ImageSource, check_not_an_input, check_output_dir, load_image, save_image
from ..limits import Seed, Steps, StepsFromZero, check_edit_steps, settings_of
from ..samples import square_resize
from .metrics import (
    PAIR_METRICS,
    SET_METRICS,
    ClipScorer,
    FeatureExtractor,
    pair_metrics,
    set_metrics,
)
from .processing import PROCESSING_NAMES, ProcessingName, processing_steps

#: What an evaluation can treat photos with: same-ε noise (the baseline) or one of the
#: attacks (:data:`~photoimmune.sdk.descriptor.Method`).
EvalMethod = Literal["noise", Method]
#: What an evaluation runs unless told; "edit" (the edit attack at the target's
#: recommended steps) is asked for by name.
DEFAULT_METHODS: tuple[EvalMethod, ...] = ("noise", "encoder", "diffusion")


class EvalSettings(BaseModel):
    """What to evaluate. Budgets in [0, 1] pixel scale (``"8/255"``)."""

    model_config = ConfigDict(frozen=True)

    model: str = "tiny-ldm@1"
    edit: PipelineKind = "img2img"
    prompts: tuple[str, ...] = Field(
        default=("a photo of a cat in the snow", "an oil painting of a landscape"), min_length=1
    )
    strength: float = Field(default=0.5, gt=0, le=1)
    edit_steps: Steps = 20
    seed: Seed = 0
    size: int = Field(
        default=128, ge=64, multiple_of=8, description="photos are centre-cropped to this square"
    )
    eps: BudgetText = "8/255"
    steps: StepsFromZero = Field(default=100, description="encoder attack iterations")
    diffusion_steps: StepsFromZero = 20
    methods: tuple[EvalMethod, ...] = Field(default=DEFAULT_METHODS, min_length=1)
    processing: tuple[ProcessingName, ...] = Field(default=PROCESSING_NAMES, min_length=1)
    eot: bool = Field(
        default=False, description="immunize with EOT over the differentiable purifiers"
    )
    features: str | None = Field(default=None, description="torchvision weights for FID/PR")
    features_arch: str = "inception_v3"
    clip: str | None = Field(default=None, description="local CLIP folder for CLIP similarity")

    @field_validator("size")
    @classmethod
    def _size_fits(cls, size: int) -> int:
        check_photo_size(size)
        return size

    @model_validator(mode="after")
    def _edits_denoise(self) -> EvalSettings:
        if self.edit == "img2img":  # checked now: the attacks run before the first edit
            check_edit_steps(self.strength, self.edit_steps)
        return self


class Stat(BaseModel):
    """Mean and standard deviation over photos x prompts (std None for set metrics)."""

    mean: float
    std: float | None = None


class EvalRow(BaseModel):
    """One line of the table: the edits of photos treated by ``method``, then processed by
    ``processing``, compared with the clean photos' edits. ``metrics`` maps each column
    computed to its :class:`Stat`; a set metric (FID, precision, recall) is None where it
    could not be computed, and a column not computed at all is absent
    (:attr:`EvalReport.absent` says why).

    Example:
        >>> row = EvalRow(method="encoder", processing="jpeg75", metrics={"ssim": Stat(mean=0.6)})
        >>> row.metrics["ssim"].mean
        0.6
    """

    method: str
    processing: str
    metrics: dict[str, Stat | None]


#: The metrics whose gap over noise :meth:`EvalReport.kept` reports.
GAP_METRICS = ("ssim", "psnr")


class KeptRow(BaseModel):
    """How much protection one processing step leaves: per metric of :data:`GAP_METRICS`,
    the gap over same-ε noise (noise's similarity minus the method's, both after this
    step; larger = more disrupted) and the fraction of the unprocessed gap it keeps."""

    method: str
    processing: str
    gap: dict[str, float]
    kept: dict[str, float | None] = Field(description="None where the unprocessed gap is not > 0")


class EvalReport(BaseModel):
    """The table, why columns are absent, and where the pictures went."""

    settings: EvalSettings
    photos: list[str]
    rows: list[EvalRow]
    reference_clip: Stat | None = Field(
        default=None, description="CLIP similarity of the clean photos' edits to their prompts"
    )
    absent: dict[str, str] = Field(default_factory=dict, description="column -> why it is empty")
    grids: list[str] = Field(default_factory=list)
    chart: str | None = None
    treat_seconds: dict[str, float] = Field(
        default_factory=dict, description="method -> seconds spent treating all photos"
    )

    @property
    def columns(self) -> list[str]:
        return [*PAIR_METRICS, *SET_METRICS, "clip"]

    def mean(self, method: str, processing: str, metric: str) -> float:
        """One cell of the table: the mean of ``metric`` (NaN where absent).

        Example:
            >>> report.mean("encoder", "jpeg75", "ssim")  # doctest: +SKIP
            0.93
        """
        for row in self.rows:
            if (row.method, row.processing) == (method, processing):
                stat = row.metrics.get(metric)
                return math.nan if stat is None else stat.mean
        return math.nan

    def kept(self) -> list[KeptRow]:
        """Per method (noise aside) and processing step: the gap over same-ε noise and the
        fraction of the unprocessed gap kept. Empty without ``noise`` and ``none`` rows.

        Example:
            >>> [(k.processing, round(k.kept["ssim"], 2)) for k in report.kept()]  # doctest: +SKIP
            [('none', 1.0), ('jpeg75', 0.98), ('upscale', 0.71)]
        """
        order = [(r.method, r.processing) for r in self.rows]
        present = set(order)
        out = []
        for method, processing in order:
            needed = {("noise", processing), (method, "none"), ("noise", "none")}
            if method == "noise" or not needed <= present:
                continue
            gap: dict[str, float] = {}
            kept: dict[str, float | None] = {}
            for name in GAP_METRICS:
                gap[name] = self.mean("noise", processing, name) - self.mean(
                    method, processing, name
                )
                before = self.mean("noise", "none", name) - self.mean(method, "none", name)
                kept[name] = gap[name] / before if before > 0 else None
            out.append(KeptRow(method=method, processing=processing, gap=gap, kept=kept))
        return out

    def to_csv(self) -> str:
        """One line per method x processing x metric: mean and std; then the gaps over noise
        and fractions kept (:meth:`kept`) as metrics ``ssim_gap``, ``ssim_kept``... without std.
        """
        lines = ["method,processing,metric,mean,std"]
        if self.reference_clip is not None:
            clip = self.reference_clip
            lines.append(f"clean,none,clip,{clip.mean:.6g},{clip.std:.6g}")
        for row in self.rows:
            for name in self.columns:
                stat = row.metrics.get(name)
                if stat is not None:
                    std = "" if stat.std is None else f"{stat.std:.6g}"
                    lines.append(f"{row.method},{row.processing},{name},{stat.mean:.6g},{std}")
        for k in self.kept():
            for name in GAP_METRICS:
                lines.append(f"{k.method},{k.processing},{name}_gap,{k.gap[name]:.6g},")
                kept = k.kept[name]
                if kept is not None:
                    lines.append(f"{k.method},{k.processing},{name}_kept,{kept:.6g},")
        return "\n".join(lines) + "\n"


def _stat(values: list[float]) -> Stat:
    return Stat(mean=statistics.fmean(values), std=statistics.pstdev(values))


def same_eps_noise(
    pixels: np.ndarray,
    eps: str | float,
    rng: np.random.Generator,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's baseline: the photo plus uniform 8-bit noise of the same budget.

    Immunization counts only as far as it disrupts an edit more than this does.

    Args:
        pixels: ``uint8`` ``(H, W, 3)`` photo.
        eps: the budget (``"8/255"`` or a float in [0, 1]); the noise never exceeds it.
        rng: where the noise comes from (seed it for repeatable figures).
        keep: nonzero where noise may go (inpainting: the pixels the edit keeps);
            default everywhere.

    Example:
        >>> photo = np.full((2, 2, 3), 100, np.uint8)
        >>> noisy = same_eps_noise(photo, "8/255", np.random.default_rng(0))
        >>> int(np.abs(noisy.astype(int) - 100).max()) <= 8
        True
    """
    levels = math.floor(float(parse_budget(eps)) * 255)  # never over budget
    noise = rng.integers(-levels, levels + 1, pixels.shape)
    if keep is not None:
        noise = noise * (keep[..., None] != 0)
    return np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8)


def treat(
    method: EvalMethod,
    images: list[np.ndarray],
    settings: EvalSettings,
    target,
    keep: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The photos as ``method`` leaves them: 8-bit, within the budget.

    ``keep`` (inpainting: nonzero where the edit keeps the photo) confines every
    method to the pixels the edit keeps, as a publisher would. ``target`` is what the
    attacks run against (an :class:`~photoimmune.sdk.descriptor.AttackTarget` or a model
    name); noise needs none.

    Example:
        >>> photo = np.full((64, 64, 3), 100, np.uint8)
        >>> (noisy,) = treat("noise", [photo], EvalSettings(eps="8/255"), target=None)
        >>> int(np.abs(noisy.astype(int) - 100).max()) <= 8
        True
        >>> (immunized,) = treat("encoder", [photo], EvalSettings(), "tiny-ldm@1")  # doctest: +SKIP
    """
    from ..immunization import immunize

    if method == "noise":
        rng = np.random.default_rng(settings.seed)
        return [same_eps_noise(pixels, settings.eps, rng, keep) for pixels in images]
    steps = {"encoder": settings.steps, "diffusion": settings.diffusion_steps}.get(method)
    results = immunize(
        list(images),
        target,
        method=method,
        eps=settings.eps,
        steps=steps,
        seed=settings.seed,
        mask=keep,
        prompt=settings.prompts[0] if method == "diffusion" else "",
        eot=settings.eot,
    )
    return [r.pixels for r in results]


def evaluate(
    photos: ImageSource | Sequence[ImageSource],
    settings: EvalSettings | Mapping[str, Any] | None = None,
    *,
    target=None,
    out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Edit clean and treated photos; return the table (and draw pictures into ``out_dir``).

    ``photos`` is a list of photos, or one photo alone (a path, bytes, an array, an
    image); ``settings`` an :class:`EvalSettings` or a dict of its fields.
    ``target`` (an :class:`~photoimmune.sdk.targets.AttackTarget` with weights attached)
    is what the attacks optimise against; default: the target built from ``settings.model``.

    Example:
        >>> report = evaluate(["photo.png"], EvalSettings(steps=50))  # doctest: +SKIP
        >>> report.rows[0].method, report.rows[0].metrics["ssim"].mean  # doctest: +SKIP
        ('noise', 0.97)
    """
    from ..models.pipelines import edit_image, load_pipeline
    from ..targets import build_target

    s = settings_of(EvalSettings, settings)
    photos = _photo_list(photos)
    say = progress or (lambda message: None)
    loaded = [load_image(p) for p in photos]
    names = [image.name for image in loaded]
    if out_dir is not None:  # the pictures are drawn last: a file in the way must fail first
        check_output_dir(out_dir, option="out_dir")
        for path in _picture_paths(out_dir, names):
            check_not_an_input(path, photos, option="out_dir")
    pipe = load_pipeline(s.model, s.edit)
    target = target or build_target(s.model)
    steps = processing_steps(s.processing, s.model, seed=s.seed)
    images = [square_resize(image.pixels, s.size) for image in loaded]
    mask = _repaint_mask(s.size) if s.edit == "inpaint" else None
    keep = None if mask is None else (mask == 0).astype(np.uint8)
    # Local networks load first, so a wrong path fails before minutes of editing.
    features = FeatureExtractor(s.features, s.features_arch) if s.features else None
    clip = ClipScorer(s.clip) if s.clip else None

    def edit(pixels: np.ndarray, prompt: str) -> np.ndarray:
        return edit_image(
            pipe, pixels, prompt, strength=s.strength, steps=s.edit_steps, seed=s.seed, mask=mask
        )

    say("editing the clean photos")
    reference = [[edit(px, p) for p in s.prompts] for px in images]
    flat_reference = [e for edits in reference for e in edits]
    reference_features = features(flat_reference) if features else None
    rows, treated_by, plain_edits = [], {}, {}
    seconds: dict[str, float] = {}
    for method in s.methods:
        say(f"{method}: treating {len(images)} photo(s)")
        started = time.perf_counter()
        treated_by[method] = treat(method, images, s, target, keep)
        seconds[method] = time.perf_counter() - started
        for name in s.processing:
            say(f"{method}, {name}: editing")
            edits = [[edit(steps[name](t), p) for p in s.prompts] for t in treated_by[method]]
            if name == "none":
                plain_edits[method] = edits
            rows.append(
                _row(method, name, reference, edits, s.prompts, reference_features, features, clip)
            )
    reference_clip = (
        _stat([clip(e, p) for es in reference for e, p in zip(es, s.prompts, strict=True)])
        if clip
        else None
    )
    report = EvalReport(
        settings=s,
        photos=names,
        rows=rows,
        reference_clip=reference_clip,
        absent=_absent(s, len(images) * len(s.prompts)),
        treat_seconds=seconds,
    )
    if out_dir is None:
        return report
    grids, chart = _draw_pictures(
        out_dir, s, names, images, reference, treated_by, plain_edits, rows, edit
    )
    return report.model_copy(update={"grids": grids, "chart": str(chart)})


def _photo_list(photos: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    """``photos`` as a non-empty list: one photo given alone (a path, bytes, an array, an
    image) is one item, never its characters, bytes or rows."""
    from PIL import Image

    from ..codec import DecodedImage

    single = (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image, DecodedImage)
    if isinstance(photos, single):
        return [photos]  # type: ignore[list-item]
    if not isinstance(photos, Iterable):
        raise InputError(f"photos={photos!r}: give a photo (a path, bytes, an array) or a list")
    items = list(photos)
    if not items:
        raise InputError("no photos to evaluate; give at least one (a path, bytes, an array)")
    return items


def _draw_pictures(
    out_dir: Path,
    s: EvalSettings,
    names: list[str],
    images: list[np.ndarray],
    reference: list[list[np.ndarray]],
    treated_by: dict,
    plain_edits: dict,
    rows: list,
    edit: Callable[[np.ndarray, str], np.ndarray],
) -> tuple[list[str], Path]:
    """One comparison grid per photo and a bar chart of the unprocessed rows."""
    from ..pictures import bar_chart, comparison_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    *grid_paths, chart = _picture_paths(out_dir, names)
    for i, (path, px) in enumerate(zip(grid_paths, images, strict=True)):
        panels, labels = [px, reference[i][0]], ["original", "edit of original"]
        for method in s.methods:
            treated = treated_by[method][i]
            edited = plain_edits[method][i][0] if method in plain_edits else None
            panels += [treated, edited if edited is not None else edit(treated, s.prompts[0])]
            labels += [method, f"edit of {method}"]
        save_image(np.asarray(comparison_grid(panels, labels)), path, overwrite=True)
    shown = s.processing[0]  # "none" unless the caller left it out
    plain = {
        r.method: {k: stat.mean for k in PAIR_METRICS if (stat := r.metrics[k]) is not None}
        for r in rows
        if r.processing == shown
    }
    save_image(
        np.asarray(
            bar_chart(
                plain,
                title=f"edits of treated ({shown}) vs clean photos, eps {s.eps}, lower = disrupted",
            )
        ),
        chart,
        overwrite=True,
    )
    return [str(path) for path in grid_paths], chart


def _picture_paths(out_dir: Path, names: list[str]) -> list[Path]:
    """Where the pictures go: one grid per photo, then the chart. They replace their own
    earlier copies on a rerun, so no input may be among them."""
    grids = [out_dir / f"grid-{i}-{Path(name).stem}.png" for i, name in enumerate(names)]
    return [*grids, out_dir / "metrics.png"]


def _row(
    method, processing, reference, edits, prompts, reference_features, features, clip
) -> EvalRow:
    pairs = [
        pair_metrics(r, e)
        for ref_edits, treated_edits in zip(reference, edits, strict=True)
        for r, e in zip(ref_edits, treated_edits, strict=True)
    ]
    metrics: dict[str, Stat | None] = {k: _stat([p[k] for p in pairs]) for k in PAIR_METRICS}
    flat = [e for es in edits for e in es]
    if features is not None:
        for k, v in set_metrics(reference_features, features(flat)).items():
            metrics[k] = None if v is None else Stat(mean=v)
    if clip is not None:
        metrics["clip"] = _stat(
            [clip(e, p) for es in edits for e, p in zip(es, prompts, strict=True)]
        )
    return EvalRow(method=method, processing=processing, metrics=metrics)


def _absent(s: EvalSettings, edits: int) -> dict[str, str]:
    absent: dict[str, str] = {}
    if s.features is None:
        reason = "no feature extractor weights given (--features inception_v3.pth)"
        absent |= dict.fromkeys(SET_METRICS, reason)
    else:
        few = f"too few edits per set ({edits}); add photos or prompts"
        absent |= {"fid": few} if edits < 2 else {}
        absent |= dict.fromkeys(("precision", "recall"), few) if edits < 3 else {}
    if s.clip is None:
        absent["clip"] = "no local CLIP folder given (--clip DIR)"
    return absent


def _repaint_mask(size: int) -> np.ndarray:
    """Inpainting edits repaint the border and keep the centre, as PhotoGuard's demo does."""
    mask = np.ones((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0
    return mask
