"""photoimmune.registry: vendors publish signed, versioned attack targets (TUF metadata).

* :class:`RegistryClient` - verified reads (``latest``, ``get``, ``identify``) from a
  server, a registry folder or a static export;
* :mod:`.admin` - what the people involved do: ``init_registry``, ``add_vendor``,
  ``publish``, ``rotate_root``;
* :class:`RegistryService` / :func:`create_app` - the server's rules and its HTTP API;
* :mod:`.errors` - one exception per attack the client catches.

Example:
    >>> from photoimmune.registry import RegistryClient
    >>> client = RegistryClient("http://127.0.0.1:8470", trusted_root="root.json")  # doctest: +SKIP
    >>> target = client.get(client.latest("photoimmune/tiny-ldm"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from photoimmune.sdk.lazy import lazy_getattr

from .errors import (
    AmbiguousReleaseError,
    MetadataExpiredError,
    MetadataRollbackError,
    MixAndMatchError,
    OversizedDataError,
    RegistryError,
    RegistryUnavailableError,
    ReleaseRejectedError,
    SignatureThresholdError,
    StaleRegistryError,
    TamperedTargetError,
    UnknownReleaseError,
    UnknownVendorError,
)

if TYPE_CHECKING:
    from .admin import (
        add_vendor,
        init_registry,
        local_registry,
        open_registry,
        publish,
        rotate_root,
    )
    from .client import RegistryClient, connect
    from .server import create_app
    from .service import RegistryService

_LAZY = {
    "RegistryClient": "client",
    "connect": "client",
    "RegistryService": "service",
    "create_app": "server",
    "add_vendor": "admin",
    "init_registry": "admin",
    "local_registry": "admin",
    "open_registry": "admin",
    "publish": "admin",
    "rotate_root": "admin",
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "AmbiguousReleaseError",
    "MetadataExpiredError",
    "MetadataRollbackError",
    "MixAndMatchError",
    "OversizedDataError",
    "RegistryClient",
    "RegistryError",
    "RegistryService",
    "RegistryUnavailableError",
    "ReleaseRejectedError",
    "SignatureThresholdError",
    "StaleRegistryError",
    "TamperedTargetError",
    "UnknownReleaseError",
    "UnknownVendorError",
    "add_vendor",
    "connect",
    "create_app",
    "init_registry",
    "local_registry",
    "open_registry",
    "publish",
    "rotate_root",
]
