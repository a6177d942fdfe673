"""photoimmune.service: the vendor's immunization service (the paper's policy API).

A vendor runs it beside its registry: clients send a photo with an API key and
get it back immunized against the vendor's current models, signed with the
vendor's key; larger work is queued on the jobs' durable queue and done by
worker processes (or Ray actors). It reads the registry through its client only.

* :class:`Service` / :func:`create_app` - the service's parts and its HTTP API;
* :func:`serve` - the API and its workers, as ``photoimmune service serve`` runs them;
* :func:`add_key`, :func:`revoke_keys`, :func:`list_keys` - API keys.

Example:
    >>> from photoimmune.service import Service, create_app
    >>> service = Service.open("sqlite:///s.db", "out/demo/registry",
    ...                        "out/demo/keys")  # doctest: +SKIP
    >>> app = create_app(service)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from photoimmune.sdk.lazy import lazy_getattr

from .errors import (
    BudgetTooLargeError,
    JobNotFoundError,
    JobNotReadyError,
    RateLimitedError,
    RevokedApiKeyError,
    ServiceError,
    UnknownApiKeyError,
    UnknownTargetModelError,
    UploadError,
    UploadTooLargeError,
)
from .settings import ServiceSettings

if TYPE_CHECKING:
    from .apikeys import KeyRecord, add_key, list_keys, revoke_keys
    from .app import create_app
    from .runtime import Service
    from .serve import serve
    from .store import ServiceStore
    from .worker import ServiceWorker

_LAZY = {
    **dict.fromkeys(["KeyRecord", "add_key", "list_keys", "revoke_keys"], "apikeys"),
    "create_app": "app",
    "Service": "runtime",
    "serve": "serve",
    "ServiceStore": "store",
    "ServiceWorker": "worker",
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "BudgetTooLargeError",
    "JobNotFoundError",
    "JobNotReadyError",
    "KeyRecord",
    "RateLimitedError",
    "RevokedApiKeyError",
    "Service",
    "ServiceError",
    "ServiceSettings",
    "ServiceStore",
    "ServiceWorker",
    "UnknownApiKeyError",
    "UnknownTargetModelError",
    "UploadError",
    "UploadTooLargeError",
    "add_key",
    "create_app",
    "list_keys",
    "revoke_keys",
    "serve",
]
