"""photoimmune.diffusers_plugin: ``pipe.enable_immunization_check()`` for diffusers pipelines.

Importing this package adds two methods to every ``diffusers.DiffusionPipeline``:

* ``enable_immunization_check(registry, *, model=None, policy="reimmunize", signer=None,
  trust=None, eps=None, steps=None, ...)``: from then on, every image the pipeline is
  asked to edit is checked first: its C2PA manifest (signature, trust, pixel
  binding, which model versions it covers) or, without one, traces of
  immunization in its pixels. An image immunized only against other versions of
  this model is re-immunized against this one, re-signed with the vendor's key,
  and edited (``reimmunize``), or refused, warned about, or let through, as the
  policy says. ``pipe.immunization_report`` tells what was found and done.
* ``disable_immunization_check()``.

Example:
    >>> import photoimmune.diffusers_plugin  # noqa: F401
    >>> from photoimmune.sdk.models import load_pipeline
    >>> pipe = load_pipeline("tiny-ldm@2")  # doctest: +SKIP
    >>> pipe.enable_immunization_check("out/demo/registry", trust="ca.pem")  # doctest: +SKIP
    >>> pipe("a cat", image="immunized-v1.png").images[0]  # doctest: +SKIP
    >>> pipe.immunization_report.images[0].status  # doctest: +SKIP
    'outdated'
"""

from __future__ import annotations

from .check import ImmunizationCheck, ImmunizationWarning
from .detection import LatentDetector
from .errors import ImmunizationCheckError, ImmunizedImageError, UnregisteredModelError
from .hook import disable_immunization_check, enable_immunization_check, install
from .inputs import edited_argument_names
from .report import ImageCheck, ImmunizationReport, Policy, SignedOutput

install()

__all__ = [
    "ImageCheck",
    "ImmunizationCheck",
    "ImmunizationCheckError",
    "ImmunizationReport",
    "ImmunizationWarning",
    "ImmunizedImageError",
    "LatentDetector",
    "Policy",
    "SignedOutput",
    "UnregisteredModelError",
    "disable_immunization_check",
    "edited_argument_names",
    "enable_immunization_check",
    "install",
]
