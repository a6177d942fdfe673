"""The attack target's descriptor: pure data, torch-free.

A vendor publishes one target per model release (``vendor/model@version``). Its
descriptor says which weights it is for (fingerprints of the VAE and the
denoiser), the resolution editors use the model at, and the attacks' specs:

* encoder attack: ``x_target``, the image whose latent the perturbation pushes
  the photo's latent to, and ``z_target``, that latent at the model's resolution;
* diffusion attack: the truncated edit to back-propagate through (steps,
  guidance, scheduler, prompts) and the image its output is pushed to;
* recommended budgets, the first being what immunization runs by default. Their
  method may also be ``"edit"``, the untargeted edit-aware attack
  (:mod:`photoimmune.sdk.attacks.edit`), whose settings are the SDK's;
* ``honours``: the digests of earlier targets this release was trained to honour
  (a cooperative release: photos immunized against those targets already edit
  badly on it, with no re-immunization);
* ``mark``: a keyed pattern every protection made against the target carries
  inside its ε (:mod:`photoimmune.sdk.mark`), which a later release that honours
  the target recognises, after JPEG too (GuardDoor's protective trigger).

Tensors live in a safetensors file next to the descriptor, referenced by its
sha256, so the descriptor (a small JSON file, canonical and float-free) is what
gets signed and its digest is what a :class:`Protection` names.

This module never imports torch: the registry server validates and serves
descriptors with it alone (:func:`parse_descriptor` checks the tensor file as
bytes). The weights side (fingerprints, binding to a model or pipeline, loading
the tensors and the encoder, building a target) is :mod:`photoimmune.sdk.targets`.

Example:
    >>> target = parse_descriptor(open("target.json", "rb").read(), tensors)  # doctest: +SKIP
    >>> target.digest == hashlib.sha256(target.canonical_json()).hexdigest()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .errors import InputError, PhotoimmuneError, UnknownModelError
from .refs import ModelRef

Recipe = Literal["gray", "checker", "image"]
RECIPES: tuple[Recipe, ...] = ("gray", "checker")
PipelineKind = Literal["img2img", "inpaint"]
DESCRIPTOR_NAME = "target.json"
TENSORS_NAME = "tensors.safetensors"
IMMUNIZER_NAME = "immunizer.safetensors"
#: Largest immunizer weights file a target may carry: it travels with every fetch.
MAX_IMMUNIZER_BYTES = 5 * 1024 * 1024
#: A sha256 digest as lowercase hex: the pattern of every digest field (targets, tensor
#: files, protections, assertions, scorecards) and of the registry's blob names.
SHA256_HEX = r"^[0-9a-f]{64}$"
#: Bytes per element of each safetensors dtype (the format's own list).
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class TargetIntegrityError(PhotoimmuneError):
    """A target's files do not match its descriptor (tampered or truncated)."""

    exit_code = 1


class ImmunizerMismatchError(TargetIntegrityError):
    """A one-pass immunizer was trained for another target than the one it comes with."""

    exit_code = 2


class WeightFingerprints(BaseModel):
    """sha256 of the VAE's and the denoiser's weights (see
    :func:`~photoimmune.sdk.targets.fingerprint_module`)."""

    model_config = ConfigDict(frozen=True)

    vae: str = Field(pattern=SHA256_HEX)
    denoiser: str = Field(pattern=SHA256_HEX)


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


#: PGD's attacks: toward the target latent, toward the target image through a truncated
#: edit, or the guided one-step edit pushed away from the clean photo's.
Method = Literal["encoder", "diffusion", "edit"]
METHODS: tuple[Method, ...] = ("encoder", "diffusion", "edit")
#: What ``immunize(method=...)`` accepts: a target's PGD methods, or the one-pass
#: immunizer alone ("amortized": the objective it was trained on, in one pass).
ImmunizeMethod = Literal[Method, "amortized"]
IMMUNIZE_METHODS: tuple[ImmunizeMethod, ...] = (*METHODS, "amortized")


class Budget(BaseModel):
    """A budget the vendor recommends (ε in [0, 1] pixel scale).

    ``resolution`` is the short side, in pixels, up to which the attack sees a photo at
    its own size, the size an editor edits it at; a larger photo is seen scaled down to
    it. Left out (None), the attack works at the model's resolution, as every budget did
    before the field existed: their targets keep their digests.

    ``full_steps_up_to`` is the short side up to which the attack runs all its steps; a
    photo seen larger runs ``steps * full_steps_up_to / side`` of them (rounded up), so
    each photo costs about what its side does, not its area. A step at a larger size
    moves more pixels, and on tiny-ldm@3 20 steps at 256 px protect as well as 40
    (docs/research.md). Left out, every photo runs all the steps.

    Example:
        >>> Budget(method="edit", eps="8/255", steps=40, resolution=256).resolution
        256
    """

    model_config = ConfigDict(frozen=True)

    method: Method
    norm: Literal["linf", "l2"] = "linf"
    eps: str
    steps: int = Field(gt=0)
    resolution: int | None = Field(
        default=None,
        gt=0,
        multiple_of=8,
        exclude_if=lambda resolution: resolution is None,
        description="the short side up to which the attack sees a photo at its own size; "
        "None: the model's resolution",
    )
    full_steps_up_to: int | None = Field(
        default=None,
        gt=0,
        exclude_if=lambda side: side is None,
        description="the short side up to which the attack runs all its steps; a photo "
        "seen larger runs steps x this / its side; None: all steps at every size",
    )


class TensorFile(BaseModel):
    """The safetensors file a descriptor refers to."""

    model_config = ConfigDict(frozen=True)

    path: str = TENSORS_NAME
    sha256: str = Field(pattern=SHA256_HEX)
    length: int = Field(ge=0)


#: What a one-pass immunizer is trained on (:class:`ImmunizerSpec.objective`): the loss
#: of the attack of that :data:`Method`, which is the one its pass gives a start to.
ImmunizerObjective = Literal["encoder", "edit"]
IMMUNIZER_OBJECTIVES: tuple[ImmunizerObjective, ...] = ("encoder", "edit")


class ImmunizerSpec(BaseModel):
    """A one-pass immunizer (:mod:`photoimmune.sdk.immunizer`): ``δ = ε · tanh(G(x))``.

    ``target`` is the :attr:`AttackTarget.base_digest` of the target it was trained
    for: the descriptor it is carried in must have that digest, so a generator is
    never paired with another release's target. ``weights`` names its safetensors
    file by sha256, so signing the descriptor signs the weights too.
    """

    model_config = ConfigDict(frozen=True)

    arch: Literal["unet3-tanh"] = "unet3-tanh"
    width: int = Field(gt=0)
    eps: str = Field(description="the budget it was trained at, e.g. 8/255")
    finish_steps: int = Field(
        default=10,
        ge=0,
        description="PGD steps the vendor recommends after the pass, of the attack "
        "its objective names",
    )
    # Left out of the JSON when "encoder", so descriptors from before it keep their digests.
    objective: ImmunizerObjective = Field(
        default="encoder",
        exclude_if=lambda objective: objective == "encoder",
        description="what the pass was trained on: the target's encoder loss, or the "
        "edit-aware objective (photoimmune.sdk.attacks.edit)",
    )
    target: str = Field(pattern=SHA256_HEX)
    weights: TensorFile


class MarkSpec(BaseModel):
    """The keyed pattern protections against a target carry (:mod:`photoimmune.sdk.mark`).

    ``seed`` draws a ±1 pattern of ``cell`` x ``cell`` pixel squares at the image's
    own size; ``immunize`` adds ``amplitude`` of it to the perturbation, inside the
    budget, on photos whose short side is at most ``side``, and less on larger ones
    (``amplitude x side / short side``, at least one level): the mark's score grows
    with the pixel count, its cost to the perturbation does not. It is public on
    purpose: it only tells a release that honours the target which pictures were
    protected against it.

    Example:
        >>> MarkSpec(seed=3).amplitude
        '2/255'
    """

    model_config = ConfigDict(frozen=True)

    seed: int = Field(ge=0, lt=2**32)
    cell: int = Field(default=2, ge=1, le=16)
    amplitude: str = Field(default="2/255", pattern=r"^[1-9][0-9]*/255$")
    side: int = Field(default=128, ge=8)

    def levels_at(self, height: int, width: int) -> int:
        """The 8-bit levels of the pattern added to a ``height`` x ``width`` photo.

        Example:
            >>> [MarkSpec(seed=3).levels_at(s, s) for s in (64, 128, 256, 512)]
            [2, 2, 1, 1]
        """
        full = int(self.amplitude.split("/")[0])
        return max(1, round(full * min(1.0, self.side / min(height, width))))


DEFAULT_BUDGETS = (
    Budget(method="encoder", eps="8/255", steps=100),
    Budget(method="encoder", eps="16/255", steps=200),
    Budget(method="diffusion", eps="16/255", steps=20),
)


class AttackTarget(BaseModel):
    """One model version's published attack target.

    The fields are the descriptor a vendor signs. What is attached at run time
    (the loaded tensors, the local weights) sits in private attributes that the
    weights side fills: :func:`~photoimmune.sdk.targets.parse_target` loads the
    tensors, :meth:`bind_model` and :meth:`bind_pipeline` return a *new* target
    with weights attached; this one is never changed.

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
    # Left out of the JSON when empty, so targets that honour nothing keep the digests
    # they were published (and their images signed) with.
    honours: tuple[Annotated[str, Field(pattern=SHA256_HEX)], ...] = Field(
        default=(), exclude_if=lambda digests: not digests
    )
    # Left out when absent, for the same reason.
    immunizer: ImmunizerSpec | None = Field(default=None, exclude_if=lambda spec: spec is None)
    mark: MarkSpec | None = Field(default=None, exclude_if=lambda spec: spec is None)

    # Filled by the weights side (photoimmune.sdk.targets); torch objects, typed Any here.
    _tensors: dict[str, Any] = PrivateAttr(default_factory=dict)
    _model_path: str | None = PrivateAttr(default=None)
    _encoder: Any = PrivateAttr(default=None)
    _immunizer_weights: bytes | None = PrivateAttr(default=None)
    # Target latents the encoder attack computed with this target's encoder, by device then
    # working size; a copy with other weights starts afresh (with_weights).
    _latents: dict[Any, Any] = PrivateAttr(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.encoder.resolution

    def recommended_budget(self, method: Method | None = None) -> Budget | None:
        """The vendor's recommendation: its first budget, or its first for ``method``.

        The order of ``budgets`` is the vendor's: the first is what immunization runs
        when the publisher does not choose (``immunize``, the plugin, the jobs).

        Example:
            >>> target.recommended_budget()  # doctest: +SKIP
            Budget(method='encoder', norm='linf', eps='8/255', steps=100)
            >>> target.recommended_budget("diffusion").steps  # doctest: +SKIP
            20
        """
        return next((b for b in self.budgets if method in (None, b.method)), None)

    def canonical_json(self, *, immunizer: bool = True) -> bytes:
        """The descriptor as canonical JSON (sorted keys, no spaces): what is hashed and signed.

        ``immunizer=False`` leaves the immunizer out: what :attr:`base_digest` hashes.
        """
        data = self.model_dump(mode="json", exclude=None if immunizer else {"immunizer"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def digest(self) -> str:
        """sha256 of :meth:`canonical_json`; names this exact target in a Protection."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @property
    def base_digest(self) -> str:
        """The digest of this target without its immunizer: what an immunizer is bound to
        (equal to :attr:`digest` when there is none)."""
        return hashlib.sha256(self.canonical_json(immunizer=False)).hexdigest()

    def files(self) -> dict[str, TensorFile]:
        """Every file the descriptor names besides itself, by path: the tensors, and the
        immunizer's weights when it carries one (each published and hash-checked)."""
        files = {self.tensors.path: self.tensors}
        if self.immunizer is not None:
            files[self.immunizer.weights.path] = self.immunizer.weights
        return files

    def with_immunizer(self, spec: ImmunizerSpec, weights: bytes) -> AttackTarget:
        """A copy carrying a one-pass immunizer, after checking that ``spec`` was trained
        for this target and that ``weights`` are the file it names.

        Raises:
            ImmunizerMismatchError: ``spec.target`` is not this target's base digest.
            TargetIntegrityError: ``weights`` are not the file ``spec`` names.
        """
        copy = self.model_copy(update={"immunizer": spec})
        check_immunizer(copy, weights)
        copy._tensors, copy._model_path, copy._encoder = (
            self._tensors,
            self._model_path,
            self._encoder,
        )
        copy._immunizer_weights = weights
        return copy

    def tensor(self, name: str) -> Any:  # -> torch.Tensor
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
                "target = target.bind_model(PATH) with the model's diffusers folder "
                "(bundled releases attach themselves)"
            )
        return self._model_path

    @property
    def has_weights(self) -> bool:
        """Whether local weights are attached (bundled, bound folder or bound pipeline)."""
        return self._model_path is not None or self._encoder is not None

    def with_weights(self, *, model_path: str | None = None, encoder: Any = None) -> AttackTarget:
        """A copy of this target with a weights folder or an encoder attached; same descriptor,
        same tensors. The weights side checks the weights before it calls this."""
        copy = self.model_copy()
        copy._tensors = self._tensors
        copy._model_path = model_path if model_path is not None else self._model_path
        copy._encoder = encoder if encoder is not None else self._encoder
        copy._immunizer_weights = self._immunizer_weights
        copy._latents = {}
        return copy

    def bind_model(self, model: str | os.PathLike[str]) -> AttackTarget:
        """A new target bound to the local weights in ``model``, checked to be this release's.

        See :func:`photoimmune.sdk.targets.bind_model`.

        Example:
            >>> target.bind_model("/models/sd15").model_path  # doctest: +SKIP
            '/models/sd15'
        """
        from .targets import bind_model

        return bind_model(self, model)

    def bind_pipeline(
        self, pipe: Any, fingerprints: WeightFingerprints | None = None
    ) -> AttackTarget:
        """A new target that attacks the VAE of an already loaded pipeline.

        See :func:`photoimmune.sdk.targets.bind_pipeline`.

        Example:
            >>> target.bind_pipeline(pipe).vae_encoder().resolution  # doctest: +SKIP
            128
        """
        from .targets import bind_pipeline

        return bind_pipeline(self, pipe, fingerprints)

    def vae_encoder(self) -> Any:  # -> VAEEncoder
        """The encoder to attack: the bound pipeline's, else one loaded from :attr:`model_path`."""
        if self._encoder is not None:
            return self._encoder
        from .targets import load_encoder

        return load_encoder(self.model_path)


def safetensors_names(data: bytes) -> set[str]:
    """The tensor names in a safetensors file, after checking its layout as bytes.

    Checks what a loader would: the header's length and JSON, each tensor's dtype,
    and that its byte range matches its shape and lies inside the file, the ranges
    covering the data without gaps or overlaps.

    Args:
        data: the whole file.

    Example:
        >>> header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        >>> safetensors_names(len(header).to_bytes(8, "little") + header + bytes(4))
        {'a'}
    """
    try:
        (size,) = struct.unpack_from("<Q", data)
        header = json.loads(data[8 : 8 + size]) if 8 + size <= len(data) else None
    except (struct.error, ValueError):
        header = None
    if not isinstance(header, dict):
        raise TargetIntegrityError("the tensor file is not a safetensors file (bad header)")
    header.pop("__metadata__", None)
    spans = []
    for name, info in header.items():
        try:
            begin, end = (int(offset) for offset in info["data_offsets"])
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            nbytes = count * _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise TargetIntegrityError(f"the tensor file's entry {name!r} is malformed") from None
        if not 0 <= begin <= end or end - begin != nbytes:
            raise TargetIntegrityError(f"the tensor file's entry {name!r} has a wrong byte range")
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise TargetIntegrityError("the tensor file's byte ranges overlap or leave gaps")
        position = end
    if 8 + size + position != len(data):
        raise TargetIntegrityError("the tensor file's length does not match its header")
    return set(header)


def check_file(target: AttackTarget, spec: TensorFile, data: bytes) -> None:
    """Raise :class:`TargetIntegrityError` unless ``data`` is the file ``spec`` names."""
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != spec.length or digest != spec.sha256:
        raise TargetIntegrityError(
            f"{target.ref}: {spec.path} does not match the descriptor (sha256 {digest[:12]}… "
            f"!= {spec.sha256[:12]}…); fetch the release again from its registry"
        )


def check_immunizer(target: AttackTarget, weights: bytes | None) -> None:
    """Check a target's immunizer: trained for this target (by digest), and ``weights``
    (when given) the file its spec names. Nothing to check without an immunizer.

    Raises:
        ImmunizerMismatchError: the immunizer names another target's digest.
        TargetIntegrityError: the weights are not the file the spec names.
    """
    spec = target.immunizer
    if spec is None:
        return
    if spec.weights.length > MAX_IMMUNIZER_BYTES:
        raise TargetIntegrityError(
            f"{target.ref}: its immunizer's weights take {spec.weights.length} bytes, over the "
            f"{MAX_IMMUNIZER_BYTES} a target may carry; train a narrower one (--width)"
        )
    if spec.target != target.base_digest:
        raise ImmunizerMismatchError(
            f"{target.ref}: its immunizer was trained for target {spec.target[:12]}…, not "
            f"this one ({target.base_digest[:12]}…); train one for this target with "
            "`photoimmune targets train-immunizer`"
        )
    if weights is not None:
        check_file(target, spec.weights, weights)
        try:
            safetensors_names(weights)
        except TargetIntegrityError as exc:
            raise TargetIntegrityError(f"{target.ref}: immunizer weights: {exc}") from None


def parse_descriptor(
    descriptor: bytes, tensors: bytes, immunizer: bytes | None = None
) -> AttackTarget:
    """A target from its descriptor bytes, checked against its tensor file's bytes (length,
    sha256, layout, the tensors the specs name), without loading the tensors.

    Args:
        descriptor: the ``target.json`` bytes.
        tensors: the safetensors file's bytes.
        immunizer: the immunizer weights' bytes, when the descriptor names some.
            Default: None (not checked here; the spec's binding still is).

    Raises:
        TargetIntegrityError: a file does not match the descriptor.
        ImmunizerMismatchError: the immunizer was trained for another target.

    Example:
        >>> parse_descriptor(descriptor, tensors).ref  # doctest: +SKIP
        ModelRef(vendor='photoimmune', model='tiny-ldm', version='1')
    """
    try:
        target = AttackTarget.model_validate_json(descriptor)
    except ValueError as exc:
        raise TargetIntegrityError(f"not an attack target descriptor: {exc}") from None
    check_file(target, target.tensors, tensors)
    check_immunizer(target, immunizer)
    try:
        names = safetensors_names(tensors)
    except TargetIntegrityError as exc:
        raise TargetIntegrityError(f"{target.ref}: {exc}") from None
    missing = {target.encoder.x_target, target.encoder.z_target} - names
    if missing:
        raise TargetIntegrityError(f"{target.ref}: tensor file lacks {sorted(missing)}")
    return target


def read_target_files(folder: Path) -> tuple[bytes, bytes, bytes | None]:
    """The descriptor's, the tensor file's and (when it names one) the immunizer
    weights' bytes in a target folder.

    Args:
        folder: a folder written by :func:`~photoimmune.sdk.targets.save_target`.

    Example:
        >>> descriptor, tensors, immunizer = read_target_files(Path("release"))  # doctest: +SKIP
    """
    try:
        descriptor = (folder / DESCRIPTOR_NAME).read_bytes()
        meta = json.loads(descriptor)
        tensors = (folder / meta.get("tensors", {}).get("path", TENSORS_NAME)).read_bytes()
        spec = meta.get("immunizer")
        immunizer = (
            (folder / spec.get("weights", {}).get("path", IMMUNIZER_NAME)).read_bytes()
            if spec
            else None
        )
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{folder}: not a target folder ({exc}); build one with `photoimmune targets build`"
        ) from None
    return descriptor, tensors, immunizer
