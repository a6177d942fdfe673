"""Registry errors: each says what happened and what to do.

A client error names the attack the check caught (rollback, freeze, mix-and-match,
tampering, endless data, missing signatures), because that is what an operator
needs to know: the mirror or the network is misbehaving, not the local setup.
"""

from __future__ import annotations

from photoimmune.sdk.errors import InputError, PhotoimmuneError


class RegistryError(PhotoimmuneError):
    """Base class of registry errors."""

    exit_code = 1


class StaleRegistryError(RegistryError):
    """A local registry publishes bundled releases as an earlier photoimmune built them."""

    exit_code = 2


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached, or answered with an HTTP error."""


class RegistryLocationError(RegistryError, InputError):
    """No registry where one was named: a folder that holds none, a malformed URL."""

    exit_code = 2


class TrustedRootError(RegistryError, InputError):
    """The trust anchor is missing or unusable: no root.json given for a server, or a
    file that is not a registry's root metadata."""

    exit_code = 2


class UnknownReleaseError(RegistryError):
    """No such vendor, model or version in the registry."""

    exit_code = 2


class ReleaseRejectedError(RegistryError):
    """The server refused an upload (bad signatures, wrong namespace, stale version...)."""


class QuotaExceededError(ReleaseRejectedError):
    """A release would take the vendor past its storage quota (the server answers 413)."""

    def __init__(self, message: str, *, vendor: str, quota: int, used: int, adds: int) -> None:
        super().__init__(message)
        self.vendor, self.quota, self.used, self.adds = vendor, quota, used, adds


class UnknownVendorError(ReleaseRejectedError):
    """An upload for a name no delegation of this registry lists (the server answers 404)."""


class InvalidNameError(ReleaseRejectedError, InputError):
    """A name the registry cannot use: a vendor name that is no namespace, or TUF's own."""

    exit_code = 2


class InvalidThresholdError(ReleaseRejectedError, InputError):
    """A signature threshold that no set of the given keys can meet (or that is zero)."""

    exit_code = 2


class MetadataRollbackError(RegistryError):
    """Metadata older than what the client already trusts: a rollback attack."""


class MixAndMatchError(MetadataRollbackError):
    """Metadata versions that do not agree with the snapshot/timestamp that list them."""


class MetadataExpiredError(RegistryError):
    """Expired metadata: a freeze attack, or a registry that stopped re-signing."""


class SignatureThresholdError(RegistryError):
    """Metadata without enough valid signatures from the keys that may sign it."""


class TamperedTargetError(RegistryError):
    """A downloaded file's length or hash differs from what signed metadata says."""


class AmbiguousReleaseError(RegistryError):
    """Weights match releases of more than one vendor or model: which one is meant is unclear."""


class OversizedDataError(RegistryError):
    """A download exceeded its limit: an endless-data attack or a broken mirror."""
