"""Errors the immunization check raises."""

from __future__ import annotations

from photoimmune.sdk.errors import InputError, PhotoimmuneError


class ImmunizationCheckError(PhotoimmuneError):
    """The check could not run: no registry, an unknown model, no key to sign with..."""


class UnregisteredModelError(ImmunizationCheckError, InputError):
    """The pipeline's weights match no release in the registry."""


class ImmunizedImageError(InputError):
    """Policy ``refuse``: an input image is immunized (or claims to be) against this edit.

    ``check`` is the :class:`~photoimmune.diffusers_plugin.report.ImageCheck` of that image.
    """

    def __init__(self, message: str, check) -> None:
        super().__init__(message)
        self.check = check
