"""``AttackTarget``: what immunization must attack for one model version.

A vendor publishes one target per model release (``vendor/model@version``). It
says which weights it is for (fingerprints of the VAE and the denoiser), the
resolution editors use the model at, and the attacks' specs:

* encoder attack: ``x_target``, the image whose latent the perturbation pushes
  the photo's latent to, and ``z_target``, that latent at the model's resolution;
* diffusion attack: the truncated edit to back-propagate through (steps,
  guidance, scheduler, prompts) and the image its output is pushed to;
* recommended budgets.

Tensors live in a safetensors file next to the descriptor, referenced by its
sha256, so the descriptor (a small JSON file, canonical and float-free) is what
gets signed and its digest is what a :class:`Protection` names.

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
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .errors import InputError, PhotoimmuneError, UnknownModelError
from .refs import ModelRef

Recipe = Literal["gray", "checker", "image"]
RECIPES: tuple[Recipe, ...] = ("gray", "checker")
PipelineKind = Literal["img2img", "inpaint"]
DESCRIPTOR_NAME = "target.json"
TENSORS_NAME = "tensors.safetensors"
_HEX64 = r"^[0-9a-f]{64}$"


class TargetIntegrityError(PhotoimmuneError):
    """A target's files do not match its descriptor (tampered or truncated)."""

    exit_code = 1


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


class WeightFingerprints(BaseModel):
    """sha256 of the VAE's and the denoiser's weights (see :func:`fingerprint_module`)."""

    model_config = ConfigDict(frozen=True)

    vae: str = Field(pattern=_HEX64)
    denoiser: str = Field(pattern=_HEX64)


class EncoderSpec(BaseModel):
    """The encoder attack: minimise ``‖E(x + δ) - z_target‖²`` (mean over latent elements)."""

    model_config = ConfigDict(frozen=True)

    loss: Literal["mse"] = "mse"
    x_target: str = "x_target"
    z_target: str = "z_target"
    resolution: int = Field(gt=0, multiple_of=8)
    latent_scaling: str = Field(description="the VAE's scaling_factor, as a decimal string")


class DiffusionSpec(BaseModel):
    """The diffusion attack: the truncated edit and the image its output is pushed to."""

    model_config = ConfigDict(frozen=True)

    x_target: str = "x_target"
    steps: int = Field(default=4, gt=0)
    guidance: str = "7.5"
    eta: str = "1"
    strength: str = "1"
    scheduler: str = "DDIMScheduler"
    prompts: tuple[str, ...] = ("",)


class Budget(BaseModel):
    """A budget the vendor recommends (ε in [0, 1] pixel scale)."""

    model_config = ConfigDict(frozen=True)

    method: Literal["encoder", "diffusion"]
    norm: Literal["linf", "l2"] = "linf"
    eps: str
    steps: int = Field(gt=0)


class TensorFile(BaseModel):
    """The safetensors file a descriptor refers to."""

    model_config = ConfigDict(frozen=True)

    path: str = TENSORS_NAME
    sha256: str = Field(pattern=_HEX64)
    length: int = Field(ge=0)


DEFAULT_BUDGETS = (
    Budget(method="encoder", eps="8/255", steps=100),
    Budget(method="encoder", eps="16/255", steps=200),
    Budget(method="diffusion", eps="16/255", steps=20),
)


class AttackTarget(BaseModel):
    """One model version's published attack target.

    The descriptor fields are what a vendor signs; the tensors and the local
    folder of the model's weights are attached at run time (see :meth:`tensor`
    and :meth:`bind_model`).

    Example:
        >>> target = build_target("tiny-ldm@1")  # doctest: +SKIP
        >>> str(target.ref), target.recipe, target.encoder.resolution  # doctest: +SKIP
        ('photoimmune/tiny-ldm@1', 'gray', 128)
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    ref: ModelRef
    pipelines: tuple[PipelineKind, ...] = ("img2img", "inpaint")
    fingerprints: WeightFingerprints
    recipe: Recipe = "gray"
    encoder: EncoderSpec
    diffusion: DiffusionSpec = DiffusionSpec()
    budgets: tuple[Budget, ...] = DEFAULT_BUDGETS
    tensors: TensorFile

    _tensors: dict[str, torch.Tensor] = PrivateAttr(default_factory=dict)
    _model_path: str | None = PrivateAttr(default=None)
    _encoder: torch.nn.Module | None = PrivateAttr(default=None)

    @property
    def resolution(self) -> int:
        return self.encoder.resolution

    def canonical_json(self) -> bytes:
        """The descriptor as canonical JSON (sorted keys, no spaces): what is hashed and signed."""
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def digest(self) -> str:
        """sha256 of :meth:`canonical_json`; names this exact target in a Protection."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    def tensor(self, name: str) -> torch.Tensor:
        """A tensor of this target (``"x_target"``, ``"z_target"``), float32."""
        if name not in self._tensors:
            raise TargetIntegrityError(
                f"{self.ref}: tensor {name!r} is not loaded; load the target with load_target()"
            )
        return self._tensors[name].float()

    @property
    def model_path(self) -> str:
        """The local diffusers folder of the weights this target is for."""
        if self._model_path is None:
            raise UnknownModelError(
                f"{self.ref}: no local weights attached to this target; call "
                "target.bind_model(PATH) with the model's diffusers folder "
                "(bundled releases attach themselves)"
            )
        return self._model_path

    @property
    def has_weights(self) -> bool:
        """Whether local weights are attached (bundled, bound folder or bound pipeline)."""
        return self._model_path is not None or self._encoder is not None

    def bind_model(self, model: str | os.PathLike[str]) -> AttackTarget:
        """Attach the local weights to attack, after checking they are this target's model.

        Example:
            >>> target.bind_model("/models/sd15").model_path  # doctest: +SKIP
            '/models/sd15'
        """
        from .models.bundled import resolve_model

        path = resolve_model(model).resolve()
        found = model_fingerprints(str(path))
        if found != self.fingerprints:
            raise InputError(
                f"{path}: these weights are not {self.ref} (their fingerprints differ from "
                "the published target's); pass the folder of that exact release"
            )
        self._model_path = str(path)
        return self

    def bind_pipeline(self, pipe, fingerprints: WeightFingerprints | None = None) -> AttackTarget:
        """Attack the VAE of an already loaded pipeline instead of loading weights from disk.

        Only the VAE must be this release's: the encoder attack never touches the
        denoiser, so a LoRA or other denoiser change does not stop it. ``fingerprints``
        saves recomputing :func:`pipeline_fingerprints`. The pipeline's modules are
        shared, not copied.

        Example:
            >>> target.bind_pipeline(pipe).vae_encoder().resolution  # doctest: +SKIP
            128
        """
        from .attacks.encoder import VAEEncoder

        vae = fingerprints.vae if fingerprints else fingerprint_module(pipe.vae)
        if vae != self.fingerprints.vae:
            raise InputError(
                f"{type(pipe).__name__}: its VAE is not {self.ref}'s (its fingerprint differs "
                "from the published target's); pass the target of the model this pipeline runs"
            )
        self._encoder = VAEEncoder(pipe.vae)
        return self

    def vae_encoder(self):  # -> VAEEncoder
        """The encoder to attack: the bound pipeline's, else one loaded from :attr:`model_path`."""
        return self._encoder if self._encoder is not None else load_encoder(self.model_path)


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

    root = Path(model_path)
    index = model_index(root)
    name = "unet" if "unet" in index else "transformer"
    if not isinstance(index.get(name), list) or not hasattr(diffusers, index[name][1]):
        raise UnknownModelError(
            f"{root}: model_index.json names no diffusers unet or transformer; "
            "pass a latent diffusion pipeline's folder"
        )
    denoiser_class = getattr(diffusers, index[name][1])
    vae = diffusers.AutoencoderKL.from_pretrained(root / "vae", local_files_only=True)
    denoiser = denoiser_class.from_pretrained(root / name, local_files_only=True)
    return WeightFingerprints(vae=fingerprint_module(vae), denoiser=fingerprint_module(denoiser))


@lru_cache(maxsize=4)
def load_encoder(model_path: str):  # -> VAEEncoder; cached: loading costs more than a few steps
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
) -> AttackTarget:
    """Build the attack target for a bundled model or a local diffusers folder.

    ``image`` (``(1, 3, h, w)`` in [0, 1]) replaces the recipe with a chosen
    target image; it is resized to the model's resolution.

    Example:
        >>> build_target("tiny-ldm@2", recipe="checker").resolution  # doctest: +SKIP
        128
    """
    from .models.bundled import resolve_model

    path = resolve_model(model).resolve()
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
    target = AttackTarget(
        ref=ModelRef.parse(ref) if isinstance(ref, str) else (ref or _default_ref(path)),
        fingerprints=model_fingerprints(str(path)),
        recipe=recipe,
        encoder=EncoderSpec(
            resolution=encoder.resolution, latent_scaling=format(encoder.scaling_factor, ".6g")
        ),
        diffusion=DiffusionSpec(prompts=prompts),
        tensors=tensor_file,
    )
    target._tensors.update(tensors)
    target._model_path = str(path)
    return target


def save_target(target: AttackTarget, folder: Path) -> Path:
    """Write ``target.json`` and its tensors into ``folder`` (created; files written atomically).

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
    descriptor = json.dumps(target.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(folder / DESCRIPTOR_NAME, descriptor.encode(), overwrite=True)
    return folder / DESCRIPTOR_NAME


def parse_target(descriptor: bytes, tensors: bytes) -> AttackTarget:
    """A target from its descriptor bytes and tensor-file bytes, checked against each other."""
    try:
        target = AttackTarget.model_validate_json(descriptor)
    except ValueError as exc:
        raise TargetIntegrityError(f"not an attack target descriptor: {exc}") from None
    digest = hashlib.sha256(tensors).hexdigest()
    if len(tensors) != target.tensors.length or digest != target.tensors.sha256:
        raise TargetIntegrityError(
            f"{target.ref}: the tensor file does not match the descriptor (sha256 {digest[:12]}… "
            f"!= {target.tensors.sha256[:12]}…); fetch the release again from its registry"
        )
    loaded = load_safetensors(tensors)
    missing = {target.encoder.x_target, target.encoder.z_target} - set(loaded)
    if missing:
        raise TargetIntegrityError(f"{target.ref}: tensor file lacks {sorted(missing)}")
    target._tensors.update(loaded)
    return target


def load_target(folder: Path) -> AttackTarget:
    """Read a target written by :func:`save_target` (or fetched from a registry).

    Bundled releases attach their weights automatically; otherwise call
    :meth:`AttackTarget.bind_model`.
    """
    try:
        descriptor = (folder / DESCRIPTOR_NAME).read_bytes()
        meta = json.loads(descriptor)
        tensors = (folder / meta.get("tensors", {}).get("path", TENSORS_NAME)).read_bytes()
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{folder}: not a target folder ({exc}); build one with `photoimmune targets build`"
        ) from None
    target = parse_target(descriptor, tensors)
    attach_bundled(target)
    return target


def attach_bundled(target: AttackTarget) -> None:
    """Attach bundled weights when the ref names a bundled release whose fingerprints match."""
    from .models.bundled import VENDOR, bundled_models

    for entry in bundled_models():
        path = str(entry.path.resolve())
        if (
            target.ref.vendor == VENDOR
            and f"{target.ref.model}@{target.ref.version}" == entry.name
            and model_fingerprints(path) == target.fingerprints
        ):
            target._model_path = path
