"""Resolver errors: each says what happened and what to do."""

from __future__ import annotations

from photoimmune.sdk.errors import DatabaseUnavailableError, InputError, PhotoimmuneError


class ResolverError(PhotoimmuneError):
    """Base class of manifest-store and resolver errors."""

    exit_code = 1


class NotSignedError(ResolverError, InputError):
    """A file to record carries no signed immunization manifest with a soft binding."""

    exit_code = 2


class UnknownAssetError(ResolverError, InputError):
    """No such asset in the store (the server answers 404)."""

    exit_code = 2


class ResolverUnavailableError(ResolverError):
    """A resolver could not be reached, answered with an error, or did not answer as a
    resolver does (not its JSON, too much, too slowly): a wrong URL or a server to fix."""


class StoreUnavailableError(ResolverError, DatabaseUnavailableError):
    """The store's database server cannot be used: down, unreachable, refusing the login.

    A wrong URL or SQLite file is bad input instead:
    :class:`~photoimmune.sdk.errors.DatabaseLocationError`.
    """
