"""Attack targets, the weights side: fingerprints, binding to weights, tensors, building.

The descriptor itself (:class:`AttackTarget`, its specs, canonical JSON, digest,
hash checks) is pure data in :mod:`photoimmune.sdk.descriptor`, which never
imports torch; its names are re-exported here for existing callers. This module
adds what needs torch: fingerprints of weights, :func:`bind_model` and
:func:`bind_pipeline` (each returns a new target, the descriptor is frozen),
loading the tensors and the encoder, and :func:`build_target`.

Target recipes (what ``x_target`` is):

* ``"gray"``: flat mid-gray, PhotoGuard's choice;
* ``"checker"``: a high-contrast black-and-white checkerboard of 8-pixel cells,
  in the spirit of Mist's textured target: edits inherit a visible pattern;
* ``"image"``: an image the vendor chose (``targets build --target-image``).

Example:
    >>> target = build_target("tiny-ldm@1")  # doctest: +SKIP
    >>> save_target(target, Path("release"))  # doctest: +SKIP
    >>> load_target(Path("release")).digest == target.digest  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .descriptor import (
    DEFAULT_BUDGETS,
    DESCRIPTOR_NAME,
    IMMUNIZER_NAME,
    RECIPES,
    TENSORS_NAME,
    AttackTarget,
    Budget,
    DiffusionSpec,
    EncoderSpec,
    ImmunizerMismatchError,
    ImmunizerSpec,
    MarkSpec,
    PipelineKind,
    Recipe,
    TargetIntegrityError,
    TensorFile,
    WeightFingerprints,
    parse_descriptor,
    read_target_files,
)
from .errors import InputError, UnknownModelError
from .refs import ModelRef

__all__ = [
    "DEFAULT_BUDGETS",
    "DESCRIPTOR_NAME",
    "IMMUNIZER_NAME",
    "RECIPES",
    "TENSORS_NAME",
    "AttackTarget",
    "Budget",
    "DiffusionSpec",
    "EncoderSpec",
    "ImmunizerMismatchError",
    "ImmunizerSpec",
    "MarkSpec",
    "PipelineKind",
    "Recipe",
    "TargetIntegrityError",
    "TensorFile",
    "WeightFingerprints",
    "attach_bundled",
    "bind_model",
    "bind_pipeline",
    "build_target",
    "fingerprint_module",
    "honouring_release",
    "load_encoder",
    "load_target",
    "model_fingerprints",
    "parse_target",
    "pipeline_fingerprints",
    "save_target",
    "target_image",
    "with_bundled_immunizer",
]


def target_image(recipe: Recipe, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The recipe's image in [0, 1], ``(1, 3, h, w)`` (one tile when ``size`` is None).

    Example:
        >>> target_image("checker").shape
        torch.Size([1, 3, 16, 16])
    """
    if recipe == "gray":
        tile = torch.full((1, 3, 1, 1), 0.5)
    elif recipe == "checker":
        cells = (torch.arange(16)[:, None] // 8 + torch.arange(16)[None, :] // 8) % 2
        tile = cells.float().expand(1, 3, 16, 16).clone()
    else:
        raise InputError(f"unknown target recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if size is None:
        return tile
    from .attacks.sizing import fill_like

    return fill_like(tile, size)


def bind_model(target: AttackTarget, model: str | os.PathLike[str]) -> AttackTarget:
    """A new target bound to the local weights in ``model``, after checking by fingerprint
    that they are this target's release; ``target`` itself is unchanged.

    Args:
        target: the release's target (as fetched or loaded).
        model: a bundled model name or the release's local diffusers folder.

    Example:
        >>> bind_model(target, "/models/sd15").model_path  # doctest: +SKIP
        '/models/sd15'
    """
    from .models.bundled import resolve_model

    path = resolve_model(model).resolve()
    found = model_fingerprints(str(path))
    if found != target.fingerprints:
        raise InputError(
            f"{path}: these weights are not {target.ref} (their fingerprints differ from "
            "the published target's); pass the folder of that exact release"
        )
    return target.with_weights(model_path=str(path))


def bind_pipeline(
    target: AttackTarget, pipe: Any, fingerprints: WeightFingerprints | None = None
) -> AttackTarget:
    """A new target that attacks the VAE of an already loaded pipeline instead of loading
    weights from disk; ``target`` itself is unchanged.

    Only the VAE must be this release's: the encoder attack never touches the
    denoiser, so a LoRA or other denoiser change does not stop it. The pipeline's
    modules are shared, not copied.

    Args:
        target: the release's target.
        pipe: a loaded diffusers pipeline with a ``vae``.
        fingerprints: the pipeline's :func:`pipeline_fingerprints`, to save computing
            them again. Default: computed from ``pipe.vae``.

    Example:
        >>> bind_pipeline(target, pipe).vae_encoder().resolution  # doctest: +SKIP
        128
    """
    from .attacks.encoder import VAEEncoder

    vae = fingerprints.vae if fingerprints else fingerprint_module(pipe.vae)
    if vae != target.fingerprints.vae:
        raise InputError(
            f"{type(pipe).__name__}: its VAE is not {target.ref}'s (its fingerprint differs "
            "from the published target's); pass the target of the model this pipeline runs"
        )
    return target.with_weights(encoder=VAEEncoder(pipe.vae))


def fingerprint_module(module: torch.nn.Module) -> str:
    """sha256 of a module's weights in a canonical form.

    Keys in sorted order; for each: the key (UTF-8), a NUL, the shape as
    ``"d0,d1,..."``, a NUL, then the values rounded to little-endian float16.
    Rounding to float16 makes fp16 and fp32 loads of the same release agree.

    Example:
        >>> fingerprint_module(torch.nn.Linear(2, 2))  # doctest: +SKIP
        '5f0c...'
    """
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode() + b"\0" + ",".join(map(str, value.shape)).encode() + b"\0")
        values = value.detach().to("cpu", torch.float16).contiguous().numpy()
        h.update(values.astype("<f2", copy=False).tobytes())
    return h.hexdigest()


def pipeline_fingerprints(pipe) -> WeightFingerprints:
    """Fingerprints of a loaded pipeline's VAE and denoiser (``unet`` or ``transformer``).

    Example:
        >>> client.identify(pipeline_fingerprints(pipe))  # doctest: +SKIP
        ModelRef(vendor='photoimmune', model='tiny-ldm', version='1')
    """
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if denoiser is None:
        raise InputError(f"{type(pipe).__name__} has neither a unet nor a transformer")
    return WeightFingerprints(
        vae=fingerprint_module(pipe.vae), denoiser=fingerprint_module(denoiser)
    )


@lru_cache(maxsize=8)
def model_fingerprints(model_path: str) -> WeightFingerprints:
    """Fingerprints of the VAE and the denoiser (``unet`` or ``transformer``) in a diffusers folder.

    Equal to :func:`pipeline_fingerprints` of a pipeline loaded from that folder.
    """
    import diffusers

    from .models.bundled import model_index
    from .models.pipelines import load_vae

    root = Path(model_path)
    index = model_index(root)
    name = "unet" if "unet" in index else "transformer"
    if not isinstance(index.get(name), list) or not hasattr(diffusers, index[name][1]):
        raise UnknownModelError(
            f"{root}: model_index.json names no diffusers unet or transformer; "
            "pass a latent diffusion pipeline's folder"
        )
    denoiser_class = getattr(diffusers, index[name][1])
    vae = load_vae(root)
    denoiser = denoiser_class.from_pretrained(root / name, local_files_only=True)
    return WeightFingerprints(vae=fingerprint_module(vae), denoiser=fingerprint_module(denoiser))


@lru_cache(maxsize=4)
def load_encoder(model_path: str):  # -> VAEEncoder; cached: loading costs more than a few steps
    """The VAE encoder of the diffusers folder ``model_path``, ready to attack."""
    from .attacks.encoder import VAEEncoder

    return VAEEncoder.from_pretrained(model_path)


def _default_ref(path: Path) -> ModelRef:
    from .models.bundled import bundled_models

    for entry in bundled_models():
        if entry.path == path:
            return ModelRef.parse(entry.ref)
    name = re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()).strip("-._") or "model"
    return ModelRef(vendor="local", model=name, version="0")


def _tensor_file(tensors: dict[str, torch.Tensor]) -> tuple[bytes, TensorFile]:
    data = save_safetensors({k: v.contiguous() for k, v in sorted(tensors.items())})
    return data, TensorFile(sha256=hashlib.sha256(data).hexdigest(), length=len(data))


def build_target(
    model: str | os.PathLike[str],
    *,
    ref: ModelRef | str | None = None,
    recipe: Recipe = "gray",
    image: torch.Tensor | None = None,
    prompts: tuple[str, ...] = ("",),
    honours: Sequence[AttackTarget | str] | None = None,
    budgets: Sequence[Budget] | None = None,
) -> AttackTarget:
    """Build the attack target for a bundled model or a local diffusers folder.

    ``image`` (``(1, 3, h, w)`` in [0, 1]) replaces the recipe with a chosen
    target image; it is resized to the model's resolution.

    Args:
        model: a bundled model name (``"tiny-ldm@1"``) or a local diffusers folder.
        ref: the release's ``vendor/model@version``. Default: None, the bundled
            model's own ref, or ``local/<folder name>@0`` for a folder.
        recipe: the target image, ``"gray"`` or ``"checker"`` (``"image"`` when
            ``image`` is given). Default: ``"gray"`` (PhotoGuard's).
        image: a chosen target image instead of the recipe. Default: None.
        prompts: prompts whose embeddings the diffusion attack uses. Default: ``("",)``.
        honours: earlier targets (or their digests) this release was trained to honour
            (:mod:`~photoimmune.sdk.models.honour`). Default: None, those the model's
            ``training.json`` names (tiny-ldm releases), built as published (gray).
        budgets: the vendor's recommended budgets, the first being what immunization
            runs by default. Default: None, for the published (gray) target those the
            model folder's ``budgets.json`` lists if it ships one (tiny-ldm@3 leads
            with the edit attack), else :data:`DEFAULT_BUDGETS`. The published
            target also carries the mark the folder's ``mark.json`` names, if any
            (:mod:`photoimmune.sdk.mark`; tiny-ldm@3's is honoured by tiny-ldm@4).

    Example:
        >>> build_target("tiny-ldm@2", recipe="checker").resolution  # doctest: +SKIP
        128
        >>> previous = build_target("tiny-ldm@3")  # doctest: +SKIP
        >>> # a release trained to honour it: `photoimmune model train-tiny --version 4`
        >>> previous.digest in build_target("/tmp/tiny-ldm-4").honours  # doctest: +SKIP
        True
    """
    from .models.bundled import resolve_model

    if not os.fspath(model).strip():  # Path("") would name the current folder
        raise UnknownModelError(
            "an empty model name was given; name a bundled model (e.g. 'tiny-ldm@1') or a "
            "diffusers folder"
        )
    path = resolve_model(model).resolve()
    if not (path / "vae" / "config.json").is_file():
        raise UnknownModelError(
            f"{path}: no vae/config.json, so no VAE to attack; pass a latent diffusion "
            "pipeline's folder, as save_pretrained() writes it"
        )
    encoder = load_encoder(str(path))
    size = (encoder.resolution, encoder.resolution)
    if image is not None:
        recipe = "image"
        x_target = torch.nn.functional.interpolate(
            image.float(), size=size, mode="bilinear", antialias=True
        ).clamp(0, 1)
    else:
        x_target = target_image(recipe, size)
    with torch.no_grad():
        z_target = encoder(x_target).contiguous()
    tensors = {"x_target": x_target.contiguous(), "z_target": z_target}
    _, tensor_file = _tensor_file(tensors)
    published = ref is None and image is None and recipe == "gray" and prompts == ("",)
    if budgets is None:
        budgets = _published_budgets(path) if published else DEFAULT_BUDGETS
    target = AttackTarget(
        ref=ModelRef.parse(ref) if isinstance(ref, str) else (ref or _default_ref(path)),
        fingerprints=model_fingerprints(str(path)),
        recipe=recipe,
        encoder=EncoderSpec(
            resolution=encoder.resolution, latent_scaling=format(encoder.scaling_factor, ".6g")
        ),
        diffusion=DiffusionSpec(prompts=prompts),
        tensors=tensor_file,
        honours=_honoured_digests(path) if honours is None else _digests(honours),
        budgets=tuple(budgets),
        mark=_published_mark(path) if published else None,
    )
    target._tensors.update(tensors)
    target._model_path = str(path)
    return with_bundled_immunizer(target, path) if published else target


#: Where a model folder keeps the immunizer trained for its published (gray) target.
BUNDLED_IMMUNIZER = "immunizer"
#: Where a model folder keeps the budgets its published target recommends (a JSON list).
BUNDLED_BUDGETS = "budgets.json"
#: Where a model folder keeps the mark its published target's protections carry.
BUNDLED_MARK = "mark.json"
#: Where a model folder keeps the record of its training (config, timings, versions).
BUNDLED_TRAINING = "training.json"


def _published_mark(path: Path) -> MarkSpec | None:
    """The mark the model folder gives its published target's protections, if any."""
    from pydantic import ValidationError

    file = path / BUNDLED_MARK
    if not file.is_file():
        return None
    try:
        return MarkSpec.model_validate_json(file.read_bytes())
    except ValidationError as exc:
        raise InputError(
            f"{file}: not a mark ({exc.error_count()} errors); it needs a seed, e.g. "
            '{"seed": 3, "cell": 2, "amplitude": "2/255"}'
        ) from exc


def _published_budgets(path: Path) -> tuple[Budget, ...]:
    """The budgets the model folder recommends for its published target, if it says."""
    from pydantic import TypeAdapter, ValidationError

    file = path / BUNDLED_BUDGETS
    if not file.is_file():
        return DEFAULT_BUDGETS
    try:
        budgets = TypeAdapter(tuple[Budget, ...]).validate_json(file.read_bytes())
    except ValidationError as exc:
        raise InputError(
            f"{file}: not a list of budgets ({exc.error_count()} errors); each needs a "
            'method, eps and steps, e.g. [{"method": "encoder", "eps": "8/255", "steps": 100}]'
        ) from exc
    return budgets


def with_bundled_immunizer(target: AttackTarget, path: str | os.PathLike[str]) -> AttackTarget:
    """``target`` carrying the one-pass immunizer the model folder ``path`` ships, if it
    ships one: the folder's own published (gray) target, or a candidate release's
    target given a bundled version's pass to start from (bench/effect_ceiling.py).

    The shipped spec names the digest its trainer's machine built, but a digest covers
    the target latent the encoder computes here, which differs in its last bits
    between CPUs and even thread counts (tiny-ldm@2: four digests from AVX-512 and
    AVX2, 2 threads and 1). The bundle is the vendor of both, so it binds its
    generator to the target as built here, as the vendor does when it publishes;
    a target loaded from a registry is still checked against the signed spec.

    Example:
        >>> candidate = build_target("/tmp/tiny-ldm-5")  # doctest: +SKIP
        >>> lent = with_bundled_immunizer(candidate, resolve_model("tiny-ldm@3"))  # doctest: +SKIP
        >>> lent.immunizer.objective  # doctest: +SKIP
        'edit'
    """
    folder = Path(path) / BUNDLED_IMMUNIZER
    if not (folder / "spec.json").is_file():
        return target
    spec = ImmunizerSpec.model_validate_json((folder / "spec.json").read_bytes())
    spec = spec.model_copy(update={"target": target.base_digest})
    return target.with_immunizer(spec, (folder / spec.weights.path).read_bytes())


def honouring_release(model: str | os.PathLike[str]) -> str | None:
    """The bundled release whose published target honours ``model``'s, if there is one.

    Example:
        >>> honouring_release("tiny-ldm@3"), honouring_release("tiny-ldm@2")  # doctest: +SKIP
        ('tiny-ldm@4', None)
    """
    from .models.bundled import bundled_models

    digest = build_target(model).digest
    return next((m.name for m in bundled_models() if digest in build_target(m.name).honours), None)


def _digests(targets: Sequence[AttackTarget | str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t if isinstance(t, str) else t.digest for t in targets))


def _honoured_digests(path: Path) -> tuple[str, ...]:
    """The digests of the bundled targets a tiny-ldm release honours: those it was trained
    to honour (the ``honours`` versions its ``training.json`` names; :mod:`.models.honour`),
    and its base's if it kept its base's encoder and UNet (its base's protections are
    then its own, bit for bit: :func:`.models.train_tiny.keeps_base_target`).

    Built, not stored: a digest covers the target's tensors, which are computed
    here, so a stored one could name a target this machine never builds.
    """
    from .models.bundled import FAMILY

    training = path / BUNDLED_TRAINING
    if not training.is_file():
        return ()
    from .models.train_tiny import keeps_base_target

    config = json.loads(training.read_text()).get("config", {})
    versions = [*(config.get("honours") or ())]
    versions += [config["base"]] if keeps_base_target(config) else []
    return _digests([build_target(f"{FAMILY}@{v}") for v in versions])


def save_target(target: AttackTarget, folder: Path) -> Path:
    """Write ``target.json`` and its tensors into ``folder`` (created; files written atomically).

    Args:
        target: the target to save (built, or loaded with its tensors).
        folder: where to write; existing files of the same names are replaced.

    Returns:
        The path of ``target.json``.

    Example:
        >>> save_target(build_target("tiny-ldm@1"), Path("out/tiny-ldm-1"))  # doctest: +SKIP
        PosixPath('out/tiny-ldm-1/target.json')
    """
    from .io import atomic_write_bytes

    data, tensor_file = _tensor_file(target._tensors)
    if tensor_file != target.tensors:
        raise TargetIntegrityError(f"{target.ref}: its tensors changed after it was built")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / target.tensors.path, data, overwrite=True)
    if target.immunizer is not None:
        if target._immunizer_weights is None:
            raise TargetIntegrityError(f"{target.ref}: its immunizer's weights are not loaded")
        path = folder / target.immunizer.weights.path
        atomic_write_bytes(path, target._immunizer_weights, overwrite=True)
    descriptor = json.dumps(target.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(folder / DESCRIPTOR_NAME, descriptor.encode(), overwrite=True)
    return folder / DESCRIPTOR_NAME


def parse_target(descriptor: bytes, tensors: bytes, immunizer: bytes | None = None) -> AttackTarget:
    """A target from its descriptor bytes and tensor-file bytes (and its immunizer's weights
    when it names some), checked against each other
    (:func:`~photoimmune.sdk.descriptor.parse_descriptor`), with its tensors loaded."""
    target = parse_descriptor(descriptor, tensors, immunizer)
    if target.immunizer is not None and immunizer is None:
        raise TargetIntegrityError(
            f"{target.ref}: its immunizer's weights ({target.immunizer.weights.path}) are "
            "missing; fetch the release again from its registry"
        )
    target._tensors.update(load_safetensors(tensors))  # a new object: no one else holds it yet
    target._immunizer_weights = immunizer
    return target


def load_target(folder: Path) -> AttackTarget:
    """Read a target written by :func:`save_target` (or fetched from a registry).

    Bundled releases attach their weights automatically; otherwise call
    :meth:`AttackTarget.bind_model`.

    Args:
        folder: the folder holding ``target.json`` and its tensor file.

    Raises:
        InputError: ``folder`` holds no target.
        TargetIntegrityError: the tensors do not match what the descriptor names.

    Example:
        >>> target = load_target(Path("out/tiny-ldm-1"))  # doctest: +SKIP
        >>> str(target.ref), target.has_weights  # doctest: +SKIP
        ('photoimmune/tiny-ldm@1', True)
    """
    target = parse_target(*read_target_files(folder))
    attach_bundled(target)
    return target


def attach_bundled(target: AttackTarget) -> None:
    """Attach bundled weights when the ref names a bundled release whose fingerprints match.

    Unlike :func:`bind_model` this fills in ``target`` itself: it is for a target just
    parsed (by :func:`load_target` or a registry client), before anyone else holds it.
    """
    from .models.bundled import VENDOR, bundled_models

    for entry in bundled_models():
        path = str(entry.path.resolve())
        if (
            target.ref.vendor == VENDOR
            and f"{target.ref.model}@{target.ref.version}" == entry.name
            and model_fingerprints(path) == target.fingerprints
        ):
            target._model_path = path
