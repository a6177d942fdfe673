"""Trust anchors and PEM files: what a reader of manifests trusts, read as it is given.

This module sits below :mod:`~photoimmune.sdk.manifest`, which reads ``trust=`` with
:func:`read_trust_anchors`, and below :mod:`~photoimmune.sdk.keys`, which reads its
keys and certificates with :func:`read_pem_file` and re-exports both. It may import
only the codec, the errors and libraries: keys writes through :mod:`~photoimmune.sdk.io`,
which imports the manifests, so anything higher would close a cycle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography import x509

from .codec import check_input_file
from .errors import InputError

#: Trust anchors as a caller gives them: PEM bytes or text, a file, or a list of them.
TrustFiles = bytes | str | os.PathLike[str] | Sequence[bytes | str | os.PathLike[str]]


class SigningKeyError(InputError):
    """A key or certificate is missing, unreadable or unfit for signing manifests."""


def read_pem_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of the PEM file ``path``, which the messages call ``what``.

    Only a regular file is read: a FIFO would hang the read and ``/dev/zero`` fill the
    memory (:func:`~photoimmune.sdk.codec.check_input_file`).

    Raises:
        SigningKeyError: ``path`` is missing, no regular file, or cannot be read.

    Example:
        >>> read_pem_file("/dev/zero", "certificate")
        Traceback (most recent call last):
        photoimmune.sdk.trust.SigningKeyError: /dev/zero: is a character device, not a ...
    """
    source = check_input_file(path, what, error=SigningKeyError)
    try:
        return source.read_bytes()
    except OSError as err:
        raise SigningKeyError(f"{path}: cannot read the {what} ({err.strerror or err})") from None


def read_trust_anchors(trust: TrustFiles | None) -> list[bytes] | None:
    """PEM trust anchors (CA certificates) from PEM bytes or text, a file, or a list of them.

    Each must hold a PEM certificate: anything else would make every signature look
    untrusted or altered, blaming the image for a mistake in the call, so it raises
    :class:`SigningKeyError` instead.

    Args:
        trust: one anchor or a sequence of anchors; each is PEM (bytes, or text that
            holds ``-----BEGIN``) or the path of a PEM file. ``None`` stays ``None``.

    Example:
        >>> from photoimmune.sdk.keys import init_keys
        >>> keys = init_keys("keys")
        >>> read_trust_anchors(keys.ca_cert) == [keys.ca_cert.read_bytes()]
        True
        >>> read_trust_anchors(b"not a certificate")
        Traceback (most recent call last):
        photoimmune.sdk.trust.SigningKeyError: trust anchor bytes: not a PEM CA certificate; ...
    """
    if trust is None:
        return None
    items = [trust] if isinstance(trust, bytes | str | os.PathLike) else list(trust)
    anchors = []
    for item in items:
        if isinstance(item, bytes):
            pem, where = item, "trust anchor bytes"
        elif isinstance(item, str) and "-----BEGIN" in item:
            pem, where = item.encode(), "trust anchor text"
        else:
            pem = read_pem_file(item, "trust anchor (a CA certificate PEM)")
            where = os.fspath(item)
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise SigningKeyError(
                f"{where}: not a PEM CA certificate; pass the ca.pem that `photoimmune keys "
                "init` wrote, or your CA's certificate"
            ) from None
        anchors.append(pem)
    return anchors
