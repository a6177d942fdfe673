"""Signing keys and X.509 certificates for C2PA manifests.

C2PA validators accept a manifest only when its signing certificate is an
end-entity certificate (not a CA, not self-signed) with ``digitalSignature`` key
usage and a signing extended key usage, chaining to a trust anchor the reader
configured. :func:`init_keys` creates exactly that for development: a local CA
and two leaf certificates, one for a *publisher* (who immunizes photos) and one
for a *vendor* (whose pipeline re-immunizes them), with 0600 private keys in a
folder created 0700 (an existing folder keeps its mode; a warning says when others
can reach it).

Production keys come in as PEM files (:meth:`ManifestSigner.from_pem`) or, when a
KMS or HSM holds the key and never lets it out, as a callback that signs bytes
(:meth:`ManifestSigner.from_callback`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .codec import check_no_nul
from .errors import ImageWriteError, OutputExistsError
from .io import (
    atomic_write_bytes,
    build_folder,
    check_output_dir,
    env_path,
    interrupted_builds,
)

# Trust anchors are read below the manifests (sdk/trust.py); their old home still serves them.
from .trust import SigningKeyError as SigningKeyError
from .trust import TrustFiles as TrustFiles
from .trust import read_pem_file
from .trust import read_trust_anchors as read_trust_anchors

SigningAlg = Literal["es256", "es384", "ed25519"]
Role = Literal["publisher", "vendor"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

#: Environment variable that moves the default key folder (tests and CI use it).
KEY_DIR_ENV = "PHOTOIMMUNE_KEY_DIR"
ROLES: tuple[Role, ...] = get_args(Role)

_CURVES: dict[str, tuple[type[ec.EllipticCurve], type[hashes.SHA256 | hashes.SHA384], int]] = {
    "es256": (ec.SECP256R1, hashes.SHA256, 32),
    "es384": (ec.SECP384R1, hashes.SHA384, 48),
}
# id-kp-documentSigning (RFC 9336); C2PA lists it beside emailProtection.
_DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
# Certificate names hold at most 64 characters (RFC 5280's upper bound), and the leaves
# are named "<organization> <role>": the longest role sets the organization's limit.
_MAX_ORGANIZATION = 64 - max(len(f" {role}") for role in ROLES)
#: The development CA's lifetime; a leaf may not outlive the CA that vouches for it.
_CA_VALIDITY = dt.timedelta(days=3650)


class KeyFolderWarning(UserWarning):
    """An existing key folder that others can reach (``init_keys`` leaves its mode alone)."""


def default_key_dir() -> Path:
    """The folder ``photoimmune keys init`` and ``immunize`` use when given none.

    ``$PHOTOIMMUNE_KEY_DIR`` if set (and not empty), else ``~/.photoimmune/keys``.

    Example:
        >>> default_key_dir().name  # doctest: +SKIP
        'keys'
    """
    return KeyDir.locate().path


@dataclass(frozen=True)
class ManifestSigner:
    """Everything c2pa needs to sign: an algorithm, a certificate chain and a key.

    Exactly one of ``private_key_pem`` (the key is in this process) and
    ``callback`` (something else holds the key and signs bytes on request) is set.
    The chain is PEM, leaf first; the root stays out of it, readers bring their own.

    Example:
        >>> signer = KeyDir(default_key_dir()).signer("publisher")  # doctest: +SKIP
        >>> signer.alg  # doctest: +SKIP
        'es256'
    """

    alg: SigningAlg
    cert_chain_pem: bytes
    private_key_pem: bytes | None = None
    callback: Callable[[bytes], bytes] | None = None
    #: Where the key came from (its file), for messages; never the key itself.
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.private_key_pem is None) == (self.callback is None):
            raise SigningKeyError("give a ManifestSigner a private key or a callback, not both")
        if self.alg not in get_args(SigningAlg):
            raise SigningKeyError(
                f"signing algorithm {self.alg!r} is not supported; use one of "
                f"{', '.join(get_args(SigningAlg))}"
            )

    def __repr__(self) -> str:
        # Reprs end up in logs and tracebacks: name the key, never show it.
        key = self.source or ("a callback" if self.callback is not None else "in memory")
        return (
            f"ManifestSigner(alg={self.alg!r}, key={key!r}, "
            f"certificate={_describe_leaf(self.cert_chain_pem)!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_pem(cls, key: str | os.PathLike[str], cert: str | os.PathLike[str]) -> ManifestSigner:
        """Load a PEM private key and its PEM certificate chain (leaf first).

        Example:
            >>> ManifestSigner.from_pem("publisher.key", "publisher.pem")  # doctest: +SKIP
            ManifestSigner(alg='es256', ...)
        """
        key_pem, chain_pem = read_pem_file(key, "private key"), read_pem_file(cert, "certificate")
        try:
            private_key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as err:
            raise SigningKeyError(
                f"{key}: not an unencrypted PEM private key ({err}); export it with "
                "`openssl pkey -in KEY -out key.pem`"
            ) from None
        leaf = _load_chain(chain_pem, cert)[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise SigningKeyError(f"{key} does not belong to the first certificate in {cert}")
        return cls(
            alg=_alg_of(private_key, key),
            cert_chain_pem=chain_pem,
            private_key_pem=key_pem,
            source=os.fspath(key),
        )

    @classmethod
    def from_callback(
        cls, callback: Callable[[bytes], bytes], alg: SigningAlg, cert_chain_pem: bytes
    ) -> ManifestSigner:
        """Sign through ``callback(data) -> signature``, e.g. a KMS or HSM client.

        ECDSA signatures must be raw ``r || s`` (IEEE P1363), as COSE uses; see
        :func:`cryptography_callback` for a working example.

        Example:
            >>> signer = ManifestSigner.from_callback(kms.sign, "es256", chain)  # doctest: +SKIP
        """
        _load_chain(cert_chain_pem, "callback certificate chain")
        return cls(alg=alg, cert_chain_pem=cert_chain_pem, callback=callback)

    def chains_to(self, anchors: Sequence[bytes]) -> bool:
        """Whether this signer's chain leads to one of the PEM trust ``anchors``: its last
        certificate is an anchor or carries an anchor's signature (checked, not only
        matched by name).

        A reader trusting ``anchors`` will then find this signer's manifests trusted; a
        job that verifies its own finished files against them needs that.

        Example:
            >>> keys = init_keys("keys")
            >>> keys.signer("publisher").chains_to([keys.ca_cert.read_bytes()])
            True
            >>> keys.signer("publisher").chains_to([])
            False
        """
        top = x509.load_pem_x509_certificates(self.cert_chain_pem)[-1]
        for anchor in (cert for pem in anchors for cert in x509.load_pem_x509_certificates(pem)):
            if top == anchor:
                return True
            try:
                top.verify_directly_issued_by(anchor)
            except (ValueError, TypeError, InvalidSignature):
                continue  # another issuer, or one of another key type
            return True
        return False

    def to_c2pa(self):  # -> c2pa.Signer; c2pa is imported lazily
        """Build a fresh native c2pa signer (they are single-owner, so one per use)."""
        import c2pa

        alg = getattr(c2pa.C2paSigningAlg, self.alg.upper())
        if self.callback is not None:
            return c2pa.Signer.from_callback(self.callback, alg, self.cert_chain_pem.decode())
        info = c2pa.C2paSignerInfo(alg, self.cert_chain_pem, self.private_key_pem, None)
        return c2pa.Signer.from_info(info)


def cryptography_callback(private_key: PrivateKey) -> Callable[[bytes], bytes]:
    """A signing callback backed by a ``cryptography`` key object.

    It shows the shape a KMS/HSM adapter takes: bytes in, COSE signature out.

    Example:
        >>> key = ec.generate_private_key(ec.SECP256R1())
        >>> len(cryptography_callback(key)(b"claim bytes"))
        64
    """
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign
    alg = _alg_of(private_key, "key")
    _, hash_cls, size = _CURVES[alg]

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hash_cls())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    return sign


#: How a caller signs with a key of their own, from Python and from the CLI.
_OWN_KEY = "pass your own key and certificate (ManifestSigner.from_pem, or --key and --cert)"


@dataclass(frozen=True)
class KeyDir:
    """A key folder made by :func:`init_keys`: ``ca.pem``, and per role ``ROLE.key``/``ROLE.pem``.

    Example:
        >>> keys = KeyDir(default_key_dir())  # doctest: +SKIP
        >>> keys.trust_anchor_pem()[:27]  # doctest: +SKIP
        b'-----BEGIN CERTIFICATE-----'
    """

    #: The folder; a str is accepted too, and kept as a Path.
    path: Path
    #: Where the path came from, for messages: the option that gave it (``--keys``),
    #: ``$PHOTOIMMUNE_KEY_DIR``, or ``key folder`` (the default, or a Python argument).
    source: str = field(default="key folder", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str | os.PathLike):
            raise SigningKeyError(
                f"{self.source}: got a {type(self.path).__name__}; pass the key folder's path "
                "as a str or pathlib.Path"
            )
        check_no_nul(self.path, SigningKeyError)
        # Frozen: the dataclass's own setattr refuses, even here.
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def locate(
        cls, directory: str | os.PathLike[str] | None = None, *, option: str = "key folder"
    ) -> KeyDir:
        """The key folder ``directory``, which the user gave as ``option``; without one,
        ``$PHOTOIMMUNE_KEY_DIR`` (empty counts as unset), else ``~/.photoimmune/keys``.

        Messages about the folder name where it came from: a path the user never typed
        (set in the environment long ago) is otherwise a riddle.

        Example:
            >>> KeyDir.locate("k2", option="--keys").where
            '--keys k2'
        """
        if directory is not None:
            return cls(Path(directory), source=option)
        found = env_path(KEY_DIR_ENV)
        if found is not None:
            return cls(found, source=f"${KEY_DIR_ENV}")
        return cls(Path.home() / ".photoimmune" / "keys")

    @property
    def where(self) -> str:
        """The folder as messages name it: where it came from, and its path."""
        return f"{self.source} {self.path}"

    @property
    def ca_cert(self) -> Path:
        return self.path / "ca.pem"

    def key(self, role: Role) -> Path:
        return self.path / f"{role}.key"

    def cert(self, role: Role) -> Path:
        return self.path / f"{role}.pem"

    def exists(self) -> bool:
        return self.ca_cert.is_file() and all(self.key(r).is_file() for r in ROLES)

    def holds_keys(self) -> bool:
        """Whether any file :func:`init_keys` writes is here (it never replaces one)."""
        return any(os.path.lexists(p) for p in self.files())

    def signer(self, role: Role = "publisher") -> ManifestSigner:
        """The signer of ``role``'s key and certificate in this folder.

        Messages name both ways to go on, the Python call and the CLI option, since
        this is reached from both.
        """
        if role not in ROLES:
            raise SigningKeyError(f"role {role!r}: use one of {', '.join(ROLES)}")
        missing = [str(p) for p in (self.key(role), self.cert(role)) if not os.path.lexists(p)]
        if missing and self.holds_keys():
            # No new keys beside the others: a second CA would not be the one verifiers trust.
            raise SigningKeyError(
                f"{' and '.join(missing)}: missing from {self.where}, which holds other keys; "
                f"restore {'it' if len(missing) == 1 else 'them'} from your backup, {_OWN_KEY}, "
                "or choose another key folder"
            )
        if missing:
            raise SigningKeyError(
                f"{' and '.join(missing)}: missing from {self.where}; create the keys with "
                f"init_keys({str(self.path)!r}) or `photoimmune keys init --dir {self.path}`, "
                f"or {_OWN_KEY}"
            )
        return ManifestSigner.from_pem(self.key(role), self.cert(role))

    def trust_anchor_pem(self) -> bytes:
        return read_pem_file(self.ca_cert, "CA certificate")

    def files(self) -> list[Path]:
        """Every file :func:`init_keys` writes here.

        Example:
            >>> [p.name for p in KeyDir(Path("keys")).files()][:2]
            ['ca.key', 'ca.pem']
        """
        return [
            self.path / "ca.key",
            self.ca_cert,
            *(f(r) for r in ROLES for f in (self.key, self.cert)),
        ]


def open_keys(
    directory: str | os.PathLike[str] | None = None, *, option: str = "key folder"
) -> tuple[KeyDir, bool]:
    """The key folder at ``directory`` (default: :func:`default_key_dir`), given development
    keys by :func:`init_keys` if it holds none; and whether they were just created.

    A folder that holds some of the keys is returned as it is: its signers say which file
    is missing, rather than a new CA being made beside the old one.

    Args:
        directory: the key folder. Default: :func:`default_key_dir`.
        option: how the caller names ``directory`` in messages (``"--keys"``).
            Default: ``"key folder"``.

    Example:
        >>> keys, created = open_keys("out/demo/keys")  # doctest: +SKIP
        >>> keys.signer("vendor").alg  # doctest: +SKIP
        'es256'
    """
    keys = KeyDir.locate(directory, option=option)
    if keys.holds_keys():
        return keys, False
    return init_keys(keys.path, option=keys.source), True


def resolve_signer(
    key: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    keys_dir: str | os.PathLike[str] | None = None,
    *,
    role: Role = "publisher",
    on_created: Callable[[KeyDir], None] | None = None,
    option: str = "key folder",
) -> ManifestSigner:
    """The one fallback to the development key: a signer for ``key`` + ``cert`` when given,
    else ``role``'s key in ``keys_dir`` (created by :func:`open_keys` if the folder holds none).

    Args:
        key: PEM private key file; must come with ``cert``. Default: none (the key folder).
        cert: PEM certificate chain of ``key``, leaf first. Default: none.
        keys_dir: key folder to fall back on. Default: :func:`default_key_dir`.
        role: which of the folder's keys signs, ``"publisher"`` or ``"vendor"``.
            Default: ``"publisher"``.
        on_created: called with the folder when its development keys were just created
            (to tell the user how verifiers trust them). Default: none.
        option: how the caller names ``keys_dir`` in messages (the CLI: ``"--keys"``).
            Default: ``"key folder"``.

    Example:
        >>> resolve_signer("publisher.key", "publisher.pem").alg  # doctest: +SKIP
        'es256'
    """
    if (key is None) != (cert is None):
        raise SigningKeyError(
            "pass a private key and its certificate together (--key and --cert), or neither "
            "to use the key folder"
        )
    if key is not None and cert is not None:
        return ManifestSigner.from_pem(key, cert)
    keys, created = open_keys(keys_dir, option=option)
    if created and on_created is not None:
        on_created(keys)
    return keys.signer(role)


def check_chain(signer: ManifestSigner, anchors: list[bytes]) -> list[bytes]:
    """``anchors``, once ``signer``'s chain is known to lead to one of them.

    What a job signs it later verifies against its anchors: a signer they do not trust
    would make every copy it signed look untrusted, and be made again on every run.

    Raises:
        SigningKeyError: the chain leads to none of ``anchors``.

    Example:
        >>> keys = init_keys("their-keys")
        >>> check_chain(keys.signer("publisher"), [])
        Traceback (most recent call last):
        photoimmune.sdk.trust.SigningKeyError: the signing certificate (...) does not chain ...
    """
    if not signer.chains_to(anchors):
        raise SigningKeyError(
            f"the signing certificate ({_describe_leaf(signer.cert_chain_pem)}) does not "
            "chain to the trust anchors given (trust=, --trust): pass the CA certificate "
            "that issued it, or what it signs will not verify as trusted"
        )
    return anchors


def default_trust_anchors(keys_dir: str | os.PathLike[str] | None = None) -> list[bytes]:
    """The key folder's own CA as the only trust anchor, or none when it has no CA.

    Args:
        keys_dir: the key folder. Default: :func:`default_key_dir`.

    Example:
        >>> default_trust_anchors("/nonexistent")
        []
    """
    keys = KeyDir.locate(keys_dir)
    return [keys.trust_anchor_pem()] if keys.ca_cert.is_file() else []


def init_keys(
    directory: str | os.PathLike[str] | None = None,
    *,
    alg: SigningAlg = "es256",
    organization: str = "photoimmune development",
    leaf_validity: dt.timedelta = dt.timedelta(days=730),
    option: str = "key folder",
) -> KeyDir:
    """Create a development CA and publisher/vendor leaf certificates.

    Refuses to touch a folder that already holds keys: losing a key means losing
    the ability to sign as that identity. The CA's private key stays in the folder
    (``ca.key``) so more leaves can be issued; in production it lives offline.

    Every argument is checked before anything is written, and :class:`SigningKeyError`
    says which is wrong: ``alg`` not one of es256, es384, ed25519; ``organization`` not
    text that fits the certificates' names (1 to 64 characters, ``"<organization>
    publisher"`` included, no control characters); ``leaf_validity`` not a
    :class:`datetime.timedelta` above zero and within the CA's 3650 days. So is a folder
    that is a file or not writable (:func:`~photoimmune.sdk.io.check_output_dir`), named
    by ``option`` (the CLI's ``"--dir"``) or, without ``directory``, by
    ``$PHOTOIMMUNE_KEY_DIR`` when that set it.

    A failure leaves no key behind: a new folder is built beside its place and renamed
    into it once whole; an existing folder is left as it was, the files this call wrote
    removed again.

    Example:
        >>> keys = init_keys("/tmp/photoimmune-keys")  # doctest: +SKIP
        >>> sorted(p.name for p in keys.path.iterdir())  # doctest: +SKIP
        ['ca.key', 'ca.pem', 'publisher.key', 'publisher.pem', 'vendor.key', 'vendor.pem']
    """
    _check_key_options(alg, organization, leaf_validity)
    keys = KeyDir.locate(directory, option=option)
    check_output_dir(keys.path, option=keys.source)
    if keys.holds_keys():
        raise OutputExistsError(
            f"{keys.where}: already holds keys; use them, or choose another key folder"
        )
    # A killed init (SIGKILL, power loss) cannot clean up: its folder holds private keys.
    left = interrupted_builds(keys.path)
    if left:
        raise OutputExistsError(
            f"an interrupted init_keys left {left[0]} (private keys included); remove it "
            "and run again"
        )
    files = _development_keys(alg, organization, leaf_validity)  # in memory: nothing to undo
    if keys.path.is_dir():
        _warn_if_shared(keys.path)
        _write_into(keys.path, files)
    else:
        _write_new_folder(keys.path, files)
    return keys


def _check_key_options(alg: object, organization: object, leaf_validity: object) -> None:
    if alg not in get_args(SigningAlg):
        raise SigningKeyError(
            f"alg {alg!r}: not a signing algorithm photoimmune supports; use one of "
            f"{', '.join(get_args(SigningAlg))}"
        )
    if not isinstance(organization, str):
        raise SigningKeyError(
            f"organization: got a {type(organization).__name__}; pass the name the "
            'certificates carry as text, e.g. "Example News"'
        )
    if not 1 <= len(organization) <= _MAX_ORGANIZATION:
        raise SigningKeyError(
            f"the organization (--organization, organization=) has {len(organization)} "
            f"characters; give 1 to {_MAX_ORGANIZATION}: certificate names hold at most 64, "
            '"<organization> publisher" included'
        )
    # Control characters (NUL, newlines) and lone surrogates make names that validators and
    # people read differently, or that cannot be encoded at all.
    bad = next((c for c in organization if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise SigningKeyError(
            f"organization {organization!r}: holds the control character {bad!r}; give a "
            "name of printable characters"
        )
    if not isinstance(leaf_validity, dt.timedelta):
        raise SigningKeyError(
            f"leaf_validity: got a {type(leaf_validity).__name__}; pass a datetime.timedelta, "
            "e.g. datetime.timedelta(days=730)"
        )
    if not dt.timedelta(0) < leaf_validity <= _CA_VALIDITY:
        raise SigningKeyError(
            f"leaf_validity {leaf_validity!r}: give more than zero and at most "
            f"{_CA_VALIDITY.days} days, the CA's own lifetime (default: 730 days)"
        )


def _development_keys(
    alg: SigningAlg, organization: str, leaf_validity: dt.timedelta
) -> dict[str, tuple[bytes, int]]:
    """The files of a new key folder, by name: their bytes and mode (0600 for keys)."""
    ca_key = generate_key(alg)
    ca_cert = issue_ca(ca_key, organization)
    files = {"ca.key": (private_key_pem(ca_key), 0o600), "ca.pem": (_pem(ca_cert), 0o644)}
    for role in ROLES:
        leaf_key = generate_key(alg)
        leaf = issue_leaf(
            ca_key, ca_cert, leaf_key.public_key(), f"{organization} {role}", leaf_validity
        )
        files[f"{role}.key"] = (private_key_pem(leaf_key), 0o600)
        files[f"{role}.pem"] = (_pem(leaf), 0o644)  # chain = leaf only; readers hold the CA
    return files


def _warn_if_shared(path: Path) -> None:
    """Warn when others can reach an existing folder that is given keys; leave its mode.

    A folder the user made (``keys init --dir ~/work/keys``) is theirs: its mode may be
    shared on purpose (a group that signs), and changing it silently would change
    who can list their other files. The private keys are 0600 either way.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        who = "group and others" if mode & 0o007 else "its group"
        warnings.warn(
            f"{path}: {who} can access this folder (mode {mode:04o}); the private keys "
            f"are created 0600, but consider `chmod 700 {path}`",
            KeyFolderWarning,
            stacklevel=3,  # init_keys' caller
        )


def _write_into(folder: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write ``files`` into ``folder``, removing again those written if one fails.

    Only the files this call created go: the folder and whatever else it holds are the
    user's. Each write is atomic, never replaces a file (a key is never lost), and a
    key file is 0600 from its first byte.
    """
    written: list[Path] = []
    try:
        for name, (data, mode) in files.items():
            written.append(atomic_write_bytes(folder / name, data, mode=mode))
    except BaseException:  # Ctrl-C included: a folder with half its keys can never sign
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _write_new_folder(folder: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Build the folder as a hidden sibling, 0700, and rename it into place once whole."""
    work = build_folder(folder, "key folder", mode=0o700)
    try:
        os.chmod(work, 0o700)  # mkdir's mode is reduced by the umask; this folder is ours
        _write_into(work, files)
        work.rename(folder)  # fails if someone else filled the folder meanwhile
    except BaseException as err:  # Ctrl-C included: half a key folder can never sign
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(err, ImageWriteError | OSError):
            # Named by the folder asked for: the hidden one is gone.
            raise ImageWriteError(
                f"{folder}: cannot create the key folder ({_reason(err)}); nothing was "
                "written, choose another folder or make room, and run again"
            ) from None
        raise


def _reason(err: BaseException) -> str:
    """The OS's words for why a write failed, without the path it failed on."""
    cause = err.__cause__ or err
    return (cause.strerror if isinstance(cause, OSError) else None) or str(cause)


def generate_key(alg: SigningAlg) -> PrivateKey:
    """A new private key for ``alg``.

    Example:
        >>> generate_key("ed25519").__class__.__name__
        'Ed25519PrivateKey'
    """
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg not in _CURVES:
        raise SigningKeyError(f"unknown algorithm {alg!r}; use es256, es384 or ed25519")
    return ec.generate_private_key(_CURVES[alg][0]())


def issue_ca(key: PrivateKey, organization: str) -> x509.Certificate:
    """A self-signed CA certificate that may only sign end-entity certificates."""
    now = dt.datetime.now(dt.UTC)
    name = _name(f"{organization} CA", organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, _hash_for(key))


def issue_leaf(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    public_key,
    common_name: str,
    validity: dt.timedelta,
) -> x509.Certificate:
    """An end-entity certificate with the extensions C2PA requires of a manifest signer.

    Example:
        >>> ca_key = generate_key("es256"); ca = issue_ca(ca_key, "Example")
        >>> leaf = issue_leaf(ca_key, ca, generate_key("es256").public_key(), "Example news",
        ...                   dt.timedelta(days=30))
        >>> leaf.issuer == ca.subject
        True
    """
    now = dt.datetime.now(dt.UTC)
    organization = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, str(organization)))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, _DOCUMENT_SIGNING]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(ca_key, _hash_for(ca_key))


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the folder's 0600 mode is the protection)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else _CURVES[_alg_of(key, "")][1]()


def _alg_of(key: object, where: str | os.PathLike[str]) -> SigningAlg:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for alg, (curve, _, _) in _CURVES.items():
            if isinstance(key.curve, curve):
                return alg  # type: ignore[return-value]
    raise SigningKeyError(
        f"{where}: {type(key).__name__} keys are not supported; use an EC P-256/P-384 "
        "or Ed25519 key"
    )


def _load_chain(pem: bytes, where: object) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise SigningKeyError(f"{where}: no PEM certificates found; pass a PEM file") from None
    now = dt.datetime.now(dt.UTC)
    if chain[0].not_valid_after_utc <= now:
        raise SigningKeyError(
            f"{where}: the signing certificate expired on {chain[0].not_valid_after_utc:%Y-%m-%d}; "
            "issue a new one"
        )
    return chain


def _describe_leaf(chain_pem: bytes) -> str:
    """``CN=..., sha256:<fingerprint prefix>`` of the chain's first certificate."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError:
        return "unreadable"
    return f"{leaf.subject.rfc4514_string()}, sha256:{leaf.fingerprint(hashes.SHA256()).hex()[:16]}"
