"""The service's errors: each one an HTTP status and a message that says what to do.

The app turns every :class:`ServiceError` into ``{"error": message}`` with its
``status``; bad input from the SDK (:class:`~photoimmune.sdk.errors.InputError`,
e.g. an image that does not decode) becomes a 400 the same way.
"""

from __future__ import annotations

from photoimmune.sdk.errors import InputError, PhotoimmuneError


class ServiceError(PhotoimmuneError):
    """Base of the service's errors; ``status`` is the HTTP status it answers with.

    Example:
        >>> UnknownApiKeyError("no such key").status
        401
    """

    status = 500
    #: Response headers (name, value) that come with the error.
    header_items: tuple[tuple[str, str], ...] = ()


class UnknownApiKeyError(ServiceError, InputError):
    """No ``Authorization: Bearer KEY`` header, or a key the service never issued."""

    status = 401
    header_items = (("WWW-Authenticate", "Bearer"),)


class RevokedApiKeyError(ServiceError, InputError):
    """A key its vendor revoked."""

    status = 403


class RateLimitedError(ServiceError):
    """Too many requests for this key: its rate (per minute) or its quota (images)."""

    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.header_items = (("Retry-After", str(retry_after_s)),)


class UploadError(ServiceError, InputError):
    """The upload is unusable: not an image, a form without ``image``, a bad field."""

    status = 400


class UploadTooLargeError(UploadError):
    """The upload is over the size limit (bytes, or pixels: a decompression bomb)."""

    status = 413


class UnknownTargetModelError(UploadError):
    """``models`` names a model this service does not immunize against."""

    status = 422


class BudgetTooLargeError(UploadError):
    """``eps`` is above the vendor's maximum."""

    status = 422


class JobNotFoundError(ServiceError, InputError):
    """No job with that id for this key."""

    status = 404


class JobNotReadyError(ServiceError):
    """The job's result is asked for before the job finished (or after it failed)."""

    status = 409
