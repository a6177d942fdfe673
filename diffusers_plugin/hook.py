"""Attaching the check to one pipeline instance.

diffusers has no plugin entry point, so ``enable_immunization_check`` swaps the
instance's class for a subclass whose ``__call__`` runs the check on the raw
arguments first. The subclass keeps the class's name, module and signature,
so ``isinstance``, ``save_pretrained`` (which records the class name) and
``inspect.signature(pipe.__call__)`` behave as before, and no other instance or
class is touched. One subclass per pipeline class is made and reused. A checked
pipeline pickles (and deep-copies) as its plain class, without the check.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

import torch

from photoimmune.registry.client import RegistryClient
from photoimmune.sdk.errors import InputError

from .check import ImmunizationCheck
from .errors import ImmunizationCheckError

_CHECKED: dict[type, type] = {}
_BASE = "_photoimmune_base"
_CHECK_ATTRIBUTES = ("_immunization_check", "immunization_report")
#: What ``enable_immunization_check`` takes besides ``registry``: the check's keyword arguments.
_SETTINGS = tuple(
    name
    for name, parameter in inspect.signature(ImmunizationCheck).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
)


def _restore(cls: Any, state: dict):  # a pipeline class (diffusers is untyped to us)
    pipe = cls.__new__(cls)
    pipe.__dict__.update(state)
    return pipe


def _checked_class(cls: type) -> type:
    if _BASE in cls.__dict__:
        return cls
    if cls not in _CHECKED:
        original = cls.__call__

        @functools.wraps(original)
        def checked_call(self, *args, **kwargs):
            check: ImmunizationCheck | None = self.__dict__.get("_immunization_check")
            if check is not None:
                # Re-immunizing needs gradients, even in a caller's no_grad/inference_mode.
                with torch.inference_mode(False), torch.enable_grad():
                    args, kwargs = check.prepare_call(original, args, kwargs)
            output = original(self, *args, **kwargs)
            if check is not None:
                check.finish_call(output)
            return output

        def __reduce_ex__(self, protocol):  # noqa: N807 (the pickle protocol's name)
            # Pickled or deep-copied, a checked pipeline is its plain class again: the
            # check holds a registry client and keys, which do not travel.
            state = {k: v for k, v in self.__dict__.items() if k not in _CHECK_ATTRIBUTES}
            return _restore, (cls, state)

        namespace = {
            "__call__": checked_call,
            "__reduce_ex__": __reduce_ex__,
            _BASE: cls,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        }
        _CHECKED[cls] = type(cls.__name__, (cls,), namespace)
    return _CHECKED[cls]


def enable_immunization_check(
    self, registry: RegistryClient | str | os.PathLike[str] | None = None, **settings: Any
) -> None:
    """Check every image this pipeline edits against the registry's immunization targets.

    Args:
        registry: a :class:`~photoimmune.registry.RegistryClient`, a registry folder, or a
            server URL (then pass ``trusted_root``, the registry's ``root.json``).
        model: this pipeline's release (``"vendor/model@version"``); None recognises it by
            weight fingerprint (computed once, on the first call).
        policy: what to do with an image immunized (or claiming to be) but not against this
            version: ``"reimmunize"`` (default), ``"refuse"``, ``"warn"`` or ``"allow"``.
        signer: the vendor's signer for re-immunized images: a
            :class:`~photoimmune.sdk.keys.ManifestSigner` (PEM or callback) or a ``KeyDir``;
            default: the development vendor key. Anything else is refused.
        trust: CA certificates (PEM bytes, text or paths) of the publishers whose manifests
            to trust; a ``KeyDir`` signer's own CA is added.
        method: the re-immunization's attack, ``"encoder"``, ``"diffusion"`` or
            ``"edit"`` (default: the one the target recommends first).
        eps, steps, seed: re-immunization budget and seed (default: the target's
            recommended budget for that method; when the target carries a one-pass
            immunizer, PGD starts from its pass and runs only its few finishing steps).
        detect, detection_threshold: look for immunization in images without a manifest;
            the threshold is from 0 to 1 (default
            :data:`~photoimmune.diffusers_plugin.detection.DEFAULT_THRESHOLD`).
        output_dir: also write each re-immunized, signed image there (never overwriting).
        trusted_root: the registry's ``root.json`` when ``registry`` is a URL.
        progress: ``progress(step, total, loss)`` during a re-immunization.
        resolvers: manifest resolver http(s) URLs, one or a list (``photoimmune manifests
            serve``): an image without a manifest is looked up by its soft binding (only its
            64-bit code is sent); a recovered manifest is used when its signed file's pixels
            are close to the image's.
        sign_outputs: sign each output as the model's work (``c2pa.edited`` +
            compositeWithTrainedAlgorithmicMedia for edits, ``c2pa.created`` +
            trainedAlgorithmicMedia for generation), into
            ``pipe.immunization_report.outputs[i].signed_image``; default: on when
            ``signer`` is given.

    The settings are those of :class:`~photoimmune.diffusers_plugin.check.ImmunizationCheck`.

    Calling it again replaces the settings; :meth:`disable_immunization_check` undoes it.

    Example:
        >>> import photoimmune.diffusers_plugin  # noqa: F401  (adds the methods)
        >>> pipe.enable_immunization_check("out/demo/registry", signer=vendor)  # doctest: +SKIP
        >>> edit = pipe("a cat", image=Image.open("immunized.png")).images[0]  # doctest: +SKIP
        >>> pipe.immunization_report.images[0].action  # doctest: +SKIP
        'reimmunized'
    """
    if registry is None:
        raise ImmunizationCheckError(
            "enable_immunization_check needs registry=: a RegistryClient, a registry folder "
            "or a server URL with trusted_root=root.json"
        )
    unknown = [f"{name}=" for name in settings if name not in _SETTINGS]
    if unknown:
        raise InputError(
            f"enable_immunization_check: unknown setting {', '.join(unknown)}; the settings "
            f"are registry=, {', '.join(f'{name}=' for name in _SETTINGS)}"
        )
    check = ImmunizationCheck(self, registry, **settings)
    self.__class__ = _checked_class(type(self))
    self.__dict__["_immunization_check"] = check
    self.__dict__["immunization_report"] = None


def disable_immunization_check(self) -> None:
    """Stop checking; the pipeline is its plain class again. Idempotent.

    Example:
        >>> pipe.disable_immunization_check()  # doctest: +SKIP
    """
    base = type(self).__dict__.get(_BASE)
    if base is not None:
        self.__class__ = base
    for name in _CHECK_ATTRIBUTES:
        self.__dict__.pop(name, None)


def install() -> None:
    """Add the two methods to ``DiffusionPipeline`` (done on import; idempotent).

    Example:
        >>> from diffusers import DiffusionPipeline
        >>> install()  # what ``import photoimmune.diffusers_plugin`` already did
        >>> hasattr(DiffusionPipeline, "enable_immunization_check")
        True
    """
    from diffusers import DiffusionPipeline

    DiffusionPipeline.enable_immunization_check = enable_immunization_check
    DiffusionPipeline.disable_immunization_check = disable_immunization_check
