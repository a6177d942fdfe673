"""photoimmune.resolver: find the manifest of an image whose manifest was stripped.

* :class:`ManifestStore` - signed immunized files by soft-binding code (SQL);
* :func:`create_app` - the HTTP API that answers lookups by code;
* :class:`ResolverClient`, :func:`recover` - ask resolvers, judge what comes back.

A lookup sends the image's 64-bit ISCC code, never the image.

Example:
    >>> from photoimmune.resolver import recover
    >>> found = recover(pixels, ["http://127.0.0.1:8500"], trust=ca_pem)  # doctest: +SKIP
    >>> found.counts  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from photoimmune.sdk.lazy import lazy_getattr

from .errors import (
    NotSignedError,
    ResolverError,
    ResolverUnavailableError,
    StoreUnavailableError,
    UnknownAssetError,
)
from .match import LookupAnswer, Match

if TYPE_CHECKING:
    from .client import Recovery, ResolverClient, recover
    from .server import create_app
    from .store import ManifestStore

__getattr__ = lazy_getattr(
    __name__,
    {
        "Recovery": "client",
        "ResolverClient": "client",
        "recover": "client",
        "create_app": "server",
        "ManifestStore": "store",
    },
)

__all__ = [
    "LookupAnswer",
    "ManifestStore",
    "Match",
    "NotSignedError",
    "Recovery",
    "ResolverClient",
    "ResolverError",
    "ResolverUnavailableError",
    "StoreUnavailableError",
    "UnknownAssetError",
    "create_app",
    "recover",
]
