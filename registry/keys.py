"""Registry signing keys: ed25519 key pairs in PEM files, as securesystemslib signers, and
the trust anchor that names the root keys (``root.json``, see :func:`trusted_root_bytes`).

The roles and who holds their keys:

* ``root`` (several keys, a threshold; offline): says which keys sign every
  other top-level role. Used only to rotate keys.
* ``targets`` (offline, the registry admin): onboards vendors by delegating
  ``<vendor>/*`` to the vendor's keys.
* ``snapshot`` and ``timestamp`` (online, on the server): re-sign the
  repository's state after every accepted change and before expiry.
* one role per vendor (the vendor's own keys, its threshold): signs its releases.

Example:
    >>> write_key(Path("keys/acme.pem"))  # doctest: +SKIP
    >>> load_signer(Path("keys/acme.pem")).public_key.keytype  # doctest: +SKIP
    'ed25519'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root

from photoimmune.sdk.errors import InputError, OutputExistsError, OutputPathError
from photoimmune.sdk.io import atomic_write_bytes, check_input_file, check_output_path

from . import errors


def generate_signer() -> CryptoSigner:
    """A fresh ed25519 signer."""
    return CryptoSigner.generate_ed25519()


def write_key(path: Path) -> CryptoSigner:
    """Write a new private key (PKCS#8 PEM, mode 0600) at ``path`` and its public key beside
    it, named by :func:`public_path` (``keys/acme.pem`` -> ``keys/acme.pub.pem``).

    Refuses to replace an existing key, private or public: a lost key can't be recovered,
    and a public half replaced alone would no longer match its private key. A folder the
    file system will not create the file in is an
    :class:`~photoimmune.sdk.errors.OutputPathError` naming ``path``, before any key is made.
    """
    for dest in (path, public_path(path)):
        if os.path.lexists(dest):
            raise OutputExistsError(
                f"{dest}: a key is already there; keys are never replaced, pick a new path"
            )
        check_output_path(dest)  # a parent that is a file, a name too long
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Only creating a file tells whether the folder takes one (os.access lets root "write"
        # in /proc, which refuses every new file); asked before either half is written, so a
        # refusal here is the path's fault, and a later one the disk's.
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as err:
        raise OutputPathError(
            f"{path}: cannot create the key file ({err.strerror or err}); check the path, or "
            "choose another folder"
        ) from None
    signer = generate_signer()
    atomic_write_bytes(path, signer.private_bytes, mode=0o600)
    try:
        atomic_write_bytes(public_path(path), public_pem(signer.public_key), overwrite=True)
    except BaseException:
        # A private half alone would make a rerun refuse its path; it was never used.
        path.unlink(missing_ok=True)
        raise
    return signer


def public_path(path: Path) -> Path:
    """Where :func:`write_key` puts the public half: ``.pem`` replaced by ``.pub.pem``
    (``keys/acme.pem`` -> ``keys/acme.pub.pem``), else ``.pub.pem`` added (``keys/acme`` ->
    ``keys/acme.pub.pem``)."""
    return path.with_name(path.name.removesuffix(".pem") + ".pub.pem")


def public_pem(key: SSlibKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what a vendor hands the registry admin)."""
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.keyval["public"]))
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_signer(path: Path) -> CryptoSigner:
    """A signer from a private key PEM file written by :func:`write_key` (or openssl).

    Example:
        >>> load_signer(Path("keys/targets.pem"))  # doctest: +SKIP
    """
    check_input_file(path, "private key")  # a FIFO would hang the read, /dev/zero fill memory
    try:
        private = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"{path}: not an unencrypted PEM private key ({exc}); create one with "
            "`photoimmune registry keygen`"
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise InputError(f"{path}: registry keys are ed25519; create one with registry keygen")
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def load_public_key(path: Path) -> SSlibKey:
    """A public key from a ``.pub.pem`` file, as :func:`write_key` writes it.

    A private key file is refused, not quietly reduced to its public half: whoever is
    handed it (a registry admin) could sign as its owner.

    Example:
        >>> load_public_key(Path("keys/acme.pub.pem")).keytype  # doctest: +SKIP
        'ed25519'
    """
    data = check_input_file(path, "public key (.pub.pem)").read_bytes()
    if b"PRIVATE KEY" in data:
        raise InputError(
            f"{path}: a private key, which must never leave its owner; pass its public half "
            f"({public_path(Path(path))}, as `photoimmune registry keygen` names it)"
        )
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(
            f"{path}: not a PEM public key; pass the .pub.pem that `photoimmune registry "
            "keygen` wrote"
        ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise InputError(f"{path}: registry keys are ed25519; create one with registry keygen")
    return SSlibKey.from_crypto(public)


def trusted_root_bytes(trusted_root: bytes | os.PathLike[str]) -> bytes:
    """The trust anchor's bytes, refused (:class:`~.errors.TrustedRootError`) unless they
    are TUF root metadata: a wrong file given as the anchor is named as such, never
    blamed on the registry.

    Example:
        >>> trusted_root_bytes(Path("reg/root.json"))  # doctest: +SKIP
    """
    where = "the trusted root" if isinstance(trusted_root, bytes) else os.fspath(trusted_root)
    try:
        data = trusted_root if isinstance(trusted_root, bytes) else Path(where).read_bytes()
    except OSError as exc:
        raise errors.TrustedRootError(
            f"{where}: cannot read the trusted root ({exc.strerror or exc}); pass the "
            "registry's root.json (--root) as its admin distributes it"
        ) from None
    try:
        signed = Metadata.from_bytes(data).signed
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError):
        signed = None
    if not isinstance(signed, Root):
        raise errors.TrustedRootError(
            f"{where}: not a registry's root.json (TUF root metadata); pass the root.json "
            "that `photoimmune registry init` wrote, as the registry's admin distributes it"
        )
    return data
