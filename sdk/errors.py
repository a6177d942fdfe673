"""The photoimmune exception hierarchy.

Every error a user can cause derives from :class:`PhotoimmuneError` and carries a
message that says what went wrong *and what to do about it*. The CLI prints such
errors without a traceback and exits with :attr:`PhotoimmuneError.exit_code`.
"""

from __future__ import annotations


class PhotoimmuneError(Exception):
    """Base class of every error photoimmune raises on purpose.

    Example:
        >>> try:
        ...     raise ImageLoadError("cat.png: file is empty; re-export the image")
        ... except PhotoimmuneError as err:
        ...     print(err.exit_code)
        2
    """

    #: Process exit status the CLI uses for this error (2: bad input, 1: failure).
    exit_code: int = 1


class InputError(PhotoimmuneError):
    """The caller passed something unusable: a bad file, option or value."""

    exit_code = 2


class ImageLoadError(InputError):
    """An image could not be read: missing, corrupt, truncated, too big or not an image."""


class ImageTooLargeError(ImageLoadError):
    """An image over a size limit: too many bytes, or too many pixels (a likely
    decompression bomb). Refused before it is decoded."""


class ImageWriteError(PhotoimmuneError):
    """An image or file could not be written; nothing at the destination was changed."""


class OutputExistsError(ImageWriteError, InputError):
    """The destination already exists and overwriting was not requested."""

    exit_code = 2


class OutputPathError(ImageWriteError, InputError):
    """The destination can never be written: a name too long for its file system, a
    folder that is a file or lies under one, or one this user may not write in.

    Raised before any work is spent on the content, so nothing is computed in vain.
    """

    exit_code = 2


class AttackSizeError(InputError):
    """An image's shape is unsafe to attack: too elongated, or too large at the
    model's working size. The message says how to crop or downscale it."""


class UnknownModelError(InputError):
    """A model name or path does not resolve to a diffusers model folder."""


class DatabaseLocationError(InputError):
    """A database named wrongly: a URL no SQLAlchemy dialect reads, a driver that is not
    installed, an SQLite file in a folder that is not there or that is no database, one a
    reading command expects that does not exist, or a schema newer than this photoimmune."""


class DatabaseUnavailableError(PhotoimmuneError):
    """A database server that cannot be used: down, unreachable, or refusing the login."""


class ManifestError(PhotoimmuneError):
    """A C2PA manifest could not be written, or an image's manifest does not hold up."""
