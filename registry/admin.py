"""What the people around a registry do: create it, onboard vendors, publish, rotate keys.

Each action builds the next version of one role's metadata, signs it with the
keys of whoever is acting (their private keys never leave their machine), and
hands it to the registry, which verifies before accepting. The registry is a
local folder (:class:`LocalRegistry`, e.g. the demo's) or a server URL
(:class:`RemoteRegistry`); both take the same signed uploads.

Example:
    >>> paths = init_registry(Path("reg"))  # doctest: +SKIP
    >>> registry = open_registry("reg")  # doctest: +SKIP
    >>> add_vendor(registry, "acme", [acme_public_key], 1, [targets_signer])  # doctest: +SKIP
    >>> publish(registry, "acme", Path("release"), [acme_signer])  # doctest: +SKIP
    1
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import ValidationError
from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, Root

from photoimmune.sdk.database import redact_url
from photoimmune.sdk.errors import InputError, OutputExistsError
from photoimmune.sdk.io import (
    atomic_write_bytes,
    build_folder,
    check_output_dir,
    interrupted_builds,
)
from photoimmune.sdk.scorecard import SCORECARD_NAME
from photoimmune.sdk.targets import DESCRIPTOR_NAME, load_target

from . import metadata as tm
from .client import RegistryClient, checked_url, translated_errors
from .errors import (
    RegistryUnavailableError,
    ReleaseRejectedError,
    StaleRegistryError,
    TrustedRootError,
    UnknownVendorError,
)
from .keys import trusted_root_bytes, write_key
from .service import RegistryPaths, RegistryService
from .storage import Store


class Registry(Protocol):
    """Where signed changes go."""

    def current(self, role: str) -> Metadata | None: ...
    def update_root(self, data: bytes) -> int: ...
    def update_targets(self, data: bytes) -> int: ...
    def publish(self, vendor: str, data: bytes, files: dict[str, bytes]) -> int: ...


class LocalRegistry:
    """A registry folder on this machine, used directly (no server)."""

    def __init__(self, service: RegistryService) -> None:
        self.service = service

    def current(self, role: str) -> Metadata | None:
        with self.service.store.read() as session:
            row = self.service.store.latest(session, role)
        return None if row is None else Metadata.from_bytes(row.data)

    def update_root(self, data: bytes) -> int:
        return self.service.update_root(data)

    def update_targets(self, data: bytes) -> int:
        return self.service.update_targets(data)

    def publish(self, vendor: str, data: bytes, files: dict[str, bytes]) -> int:
        return self.service.publish(vendor, data, files)


class RemoteRegistry:
    """A registry server. Current metadata is read through a verifying :class:`RegistryClient`,
    so nobody signs on top of metadata a compromised server made up.

    A publish the server refuses with 503 (every upload slot busy) is sent again up
    to ``retries`` times, after the server's ``Retry-After`` or an exponential
    backoff from ``backoff_s``, whichever is longer (each wait at most
    ``max_wait_s``, with a little jitter); after that it is a
    :class:`RegistryUnavailableError`. ``sleep`` is how it waits (tests pass their own).
    """

    def __init__(
        self,
        url: str,
        trusted_root: bytes | os.PathLike[str],
        http: httpx.Client | None = None,
        *,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.trusted_root = trusted_root
        self.http = http or httpx.Client(timeout=120.0)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.sleep = sleep

    def current(self, role: str) -> Metadata | None:
        with tempfile.TemporaryDirectory(prefix="photoimmune-registry-") as cache:
            client = RegistryClient(
                self.url, trusted_root=self.trusted_root, cache_dir=Path(cache), http=self.http
            )
            if role == "root":
                client.refresh()
                return Metadata[Root].from_file(str(client.metadata_dir / "root.json"))
            if role == "targets":
                return Metadata(client.top_level())
            signed = client.vendor_role(role)
            return None if signed is None else Metadata(signed)

    def _post(self, path: str, *, retries: int = 0, **kwargs) -> int:
        for attempt in range(retries + 1):
            with translated_errors():
                response = self.http.post(f"{self.url}{path}", **kwargs)
            if response.status_code != 503 or attempt == retries:
                break
            self.sleep(self._wait(attempt, response.headers.get("retry-after")))
        # Other 404s (a static mirror's, for a POST) mean no registry server is there.
        if response.status_code == 404 and tm.NOT_A_VENDOR in _detail(response):
            raise UnknownVendorError(f"registry refused: {_detail(response)}")
        if response.status_code in (409, 413, 415, 422):
            raise ReleaseRejectedError(f"registry refused: {_detail(response)}")
        if response.status_code == 503:
            attempts = f"{retries + 1} attempts" if retries else "1 attempt"
            raise RegistryUnavailableError(
                f"{self.url}{path}: the registry is busy (HTTP 503: {_detail(response)}), "
                f"still after {attempts}; try again later"
            )
        if response.status_code != 200:
            raise RegistryUnavailableError(f"{self.url}{path}: HTTP {response.status_code}")
        try:
            return tm.NewVersion.model_validate_json(response.content).version
        except ValidationError:
            raise RegistryUnavailableError(
                f"{self.url}{path}: answered 200 but not as a photoimmune registry does; check "
                "that the URL is where `photoimmune registry serve` runs"
            ) from None

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before attempt ``attempt + 1``: Retry-After or the backoff, the longer."""
        backoff = self.backoff_s * 2**attempt
        wait = max(backoff, _retry_after_s(retry_after))
        return min(self.max_wait_s, wait) * random.uniform(1.0, 1.25)

    def update_root(self, data: bytes) -> int:
        return self._post("/admin/root", content=data)

    def update_targets(self, data: bytes) -> int:
        return self._post("/admin/targets", content=data)

    def publish(self, vendor: str, data: bytes, files: dict[str, bytes]) -> int:
        parts = [("metadata", ("metadata.json", data))]
        parts += [(path, (path.rpartition("/")[2], blob)) for path, blob in files.items()]
        return self._post(f"/vendors/{vendor}/releases", retries=self.retries, files=parts)


def _retry_after_s(value: str | None) -> float:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds; 0 if absent or odd."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value[:9])  # ample, and never an absurd int
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of the server's JSON error, or the start of whatever it sent."""
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:200]


def open_registry(
    location: str | os.PathLike[str],
    *,
    trusted_root: bytes | os.PathLike[str] | None = None,
) -> Registry:
    """A registry folder (from ``registry init``) or a server URL (needs ``trusted_root``).

    Example:
        >>> open_registry("out/demo/registry")  # doctest: +SKIP
        <photoimmune.registry.admin.LocalRegistry object at ...>
        >>> open_registry("https://registry.example", trusted_root="root.json")  # doctest: +SKIP
        <photoimmune.registry.admin.RemoteRegistry object at ...>
    """
    text = os.fspath(location)
    if text.startswith(("http://", "https://")):
        if trusted_root is None:
            raise TrustedRootError(
                f"{text}: pass the registry's root.json (--root) to talk to a server"
            )
        return RemoteRegistry(checked_url(text), trusted_root_bytes(trusted_root))
    return LocalRegistry(RegistryService.open(Path(text)))


#: The most root keys a registry starts with. A root needs a handful (3 by default): each
#: one is another offline key to keep and signature to check, and a typo such as 100000
#: would spend minutes writing keys.
MAX_ROOT_KEYS = 16


def init_registry(
    folder: Path, *, root_keys: int = 3, root_threshold: int = 2, database_url: str | None = None
) -> RegistryPaths:
    """Create a registry: keys for every top-level role, root v1, targets v1, first snapshot.

    Keys go to ``folder/keys`` (mode 0600). ``root-*.pem`` and ``targets.pem``
    are offline keys: move them to offline storage once the registry runs.
    ``folder/root.json`` is the trust anchor to give to clients.

    ``folder`` is new, or an empty folder. An init that fails or is interrupted leaves
    nothing there, so it can be run again: a new folder is built beside it and renamed
    into place once whole; an existing one is filled in place and emptied again.

    Example:
        >>> paths = init_registry(Path("my-registry"), root_threshold=2)  # doctest: +SKIP
        >>> sorted(p.name for p in paths.keys.glob("root-*.pem"))  # doctest: +SKIP
        ['root-1.pem', 'root-2.pem', 'root-3.pem']
    """
    paths = RegistryPaths(folder)
    check_output_dir(folder, option="registry folder")
    _check_new_registry(paths)
    if not 1 <= root_keys <= MAX_ROOT_KEYS:
        raise InputError(
            f"root keys (--root-keys, root_keys=) {root_keys}: choose 1 to {MAX_ROOT_KEYS}; a "
            "root needs a handful "
            "(3 by default), each one an offline key to keep"
        )
    tm.check_threshold(root_threshold, root_keys, "root", "--root-threshold, root_threshold=")
    # An existing folder (one made for the registry: perhaps a mount point, or where no
    # sibling may be created) cannot be renamed onto; it is filled in place, root.json last.
    # A new one keeps the mode the umask gives a folder, not mkdtemp's 0700.
    work = folder if folder.is_dir() else build_folder(folder, "registry folder")
    try:
        _write_registry(RegistryPaths(work), root_keys, root_threshold, database_url)
        if work != folder:
            work.rename(folder)
    except BaseException:  # Ctrl-C included: a half-made registry can be neither used nor redone
        _discard(work, keep_folder=work == folder)
        raise
    return paths


def _check_new_registry(paths: RegistryPaths) -> None:
    """Refuse a folder that holds a registry, or anything else: init never mixes its files
    with others, nor replaces a registry whose clients trust its root.json."""
    folder = paths.root
    if paths.trusted_root.exists():
        raise OutputExistsError(
            f"{folder}: a registry already exists here; its clients trust its root.json, "
            "so choose a new folder rather than replace it"
        )
    # A killed init (SIGKILL, power loss) cannot clean up: its folder holds private keys.
    left = interrupted_builds(folder)
    if left or paths.keys.exists():
        raise OutputExistsError(
            f"an interrupted `registry init` left {left[0] if left else folder} (private root "
            "keys included); remove it and run again"
        )
    if not folder.is_dir() or not any(_entries(folder)):
        return
    raise OutputExistsError(
        f"{folder}: not empty; a registry is made in a new folder or an empty one: choose one"
    )


def _write_registry(
    paths: RegistryPaths, root_keys: int, root_threshold: int, database_url: str | None
) -> None:
    """Write a registry's keys, database and root.json into ``paths.root`` (empty)."""
    # The database before any key: a server that is down, or one that holds another
    # registry, refuses before any key is made.
    store = Store(database_url or paths.database_url, paths.blobs)
    try:
        with store.read() as session:
            if store.latest(session, "root") is not None:
                raise OutputExistsError(
                    f"{redact_url(store.url)}: holds another registry already; give a new "
                    "database (or none, for an SQLite file in the folder)"
                )
        roots = [write_key(paths.keys / f"root-{i + 1}.pem") for i in range(root_keys)]
        targets = write_key(paths.keys / "targets.pem")
        snapshot = write_key(paths.keys / "snapshot.pem")
        timestamp = write_key(paths.keys / "timestamp.pem")
        root_md = tm.new_root(
            [s.public_key for s in roots],
            root_threshold,
            [targets.public_key],
            snapshot.public_key,
            timestamp.public_key,
        )
        root = tm.sign(root_md, roots)
        if database_url is not None:  # every later command on this folder uses it
            # 0600 from the first byte: the URL may carry the database password.
            atomic_write_bytes(paths.root / "database.url", database_url.encode(), mode=0o600)
        service = RegistryService(store, snapshot, timestamp, quotas=paths.quotas)
        # Last but for root.json: a server database (--db) keeps this root even if the
        # folder is then discarded, and refuses a second init as "another registry".
        service.bootstrap(root, tm.sign(tm.new_targets(), [targets]))
        atomic_write_bytes(paths.trusted_root, root)
    finally:
        store.dispose()  # SQLite's file whole and closed before its folder is renamed


def _entries(folder: Path) -> list[Path]:
    """What a folder holds, but for the ``lost+found`` of a fresh volume's mount point."""
    return [entry for entry in folder.iterdir() if entry.name != "lost+found"]


def _discard(work: Path, *, keep_folder: bool) -> None:
    """Remove what a failed init wrote in ``work``, and ``work`` itself unless the user
    made it; never raises, so the failure that brought us here is what the caller sees."""
    if not keep_folder:
        shutil.rmtree(work, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        for entry in _entries(work):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def add_vendor(
    registry: Registry, vendor: str, keys: list[Key], threshold: int, signers: Sequence[Signer]
) -> int:
    """Delegate ``vendor/*`` to ``keys`` (or replace the vendor's keys); signed by ``signers``
    (the targets role's keys). Returns the new targets version.

    Example:
        >>> acme = load_signer(Path("acme.pem")).public_key  # doctest: +SKIP
        >>> admin = load_signer(Path("my-registry/keys/targets.pem"))  # doctest: +SKIP
        >>> add_vendor(open_registry("my-registry"), "acme", [acme], 1, [admin])  # doctest: +SKIP
        2
    """
    tm.check_vendor_name(vendor)  # before anything is fetched or signed
    tm.check_threshold(threshold, len(keys), "vendor", "--threshold, threshold=")
    current = registry.current("targets")
    assert current is not None  # every registry starts with targets v1
    md = Metadata(current.signed)
    md.signed.version += 1
    md.signed.expires = tm.expiry(tm.LIFETIMES["targets"])
    tm.delegate_vendor(md.signed, vendor, keys, threshold)
    return registry.update_targets(tm.sign(md, signers))


def publish(registry: Registry, vendor: str, target_dir: Path, signers: Sequence[Signer]) -> int:
    """Add the target in ``target_dir`` (from ``targets build``) to ``vendor``'s role, sign, upload.

    A ``scorecard.json`` in ``target_dir`` (from ``targets score``) is published and
    signed with the release. Returns the vendor role's new version.

    Example:
        >>> acme = load_signer(Path("acme.pem"))  # doctest: +SKIP
        >>> publish(open_registry("my-registry"), "acme", Path("release"), [acme])  # doctest: +SKIP
        1
    """
    target = load_target(target_dir)
    if target.ref.vendor != vendor:
        raise ReleaseRejectedError(
            f"{target.ref} belongs to vendor {target.ref.vendor!r}, not {vendor!r}; rebuild the "
            "target with --ref under your own vendor name"
        )
    descriptor = (target_dir / DESCRIPTOR_NAME).read_bytes()
    tensors = (target_dir / target.tensors.path).read_bytes()
    card_file = target_dir / SCORECARD_NAME
    scorecard = card_file.read_bytes() if card_file.is_file() else None
    immunizer = target._immunizer_weights  # read and checked by load_target
    current = registry.current(vendor)
    md = tm.vendor_release(
        current,
        descriptor,
        tensors,
        tm.LIFETIMES["vendor"],
        immunizer=immunizer,
        scorecard=scorecard,
    )
    files = {
        f"{tm.release_dir(target.ref)}/{DESCRIPTOR_NAME}": descriptor,
        f"{tm.release_dir(target.ref)}/{target.tensors.path}": tensors,
    }
    if scorecard is not None:
        files[f"{tm.release_dir(target.ref)}/{SCORECARD_NAME}"] = scorecard
    if target.immunizer is not None and immunizer is not None:
        files[f"{tm.release_dir(target.ref)}/{target.immunizer.weights.path}"] = immunizer
    return registry.publish(vendor, tm.sign(md, signers), files)


def rotate_root(
    registry: Registry,
    old_signers: list[Signer],
    new_root_keys: list[Signer],
    threshold: int,
) -> int:
    """Replace the root keys: root N+1 lists ``new_root_keys`` and is signed by both sets.

    Example:
        >>> keys = Path("my-registry/keys")  # the offline root keys, brought back
        >>> old = [load_signer(keys / f"root-{i}.pem") for i in (1, 2)]  # doctest: +SKIP
        >>> new = [write_key(Path(f"offline/root-{i}.pem")) for i in (1, 2, 3)]  # doctest: +SKIP
        >>> rotate_root(open_registry("my-registry"), old, new, threshold=2)  # doctest: +SKIP
        2
    """
    current = registry.current("root")
    assert current is not None
    root: Root = current.signed
    new = Metadata(root)
    new.signed.version += 1
    new.signed.expires = tm.expiry(tm.LIFETIMES["root"])
    for keyid in list(root.roles["root"].keyids):
        new.signed.revoke_key(keyid, "root")
    for signer in new_root_keys:
        new.signed.add_key(signer.public_key, "root")
    new.signed.roles["root"].threshold = threshold
    return registry.update_root(tm.sign(new, [*old_signers, *new_root_keys]))


def _as_bundled(target) -> dict:
    """A bundled target's descriptor without what its encoder computes (the tensors'
    hash, and the immunizer's binding to the digest), which differs in its last bits
    between CPUs and thread counts."""
    data = target.model_dump(mode="json", exclude={"tensors"})
    if data.get("immunizer"):
        data["immunizer"].pop("target")
    return data


def local_registry(folder: Path, models: list[str]) -> RegistryClient:
    """The embedded default: a registry folder where the vendor of the bundled ``models``
    has published their targets. Created on first use, reused afterwards; returns a
    verifying client. A release it published as an earlier photoimmune bundled it
    (other weights, budgets or immunizer) raises :class:`StaleRegistryError`: a
    version, once published, is never replaced.

    Example:
        >>> client = local_registry(Path("out/registry"), ["tiny-ldm@1"])  # doctest: +SKIP
        >>> client.get("photoimmune/tiny-ldm@1").ref.version  # doctest: +SKIP
        '1'
    """
    from photoimmune.sdk.models.bundled import VENDOR
    from photoimmune.sdk.scorecard import bundled_scorecard
    from photoimmune.sdk.targets import build_target, save_target

    from .keys import load_signer

    paths = RegistryPaths(folder)
    vendor_key = folder / "vendor-keys" / f"{VENDOR}.pem"
    if not paths.trusted_root.is_file():
        init_registry(folder)
        signer = write_key(vendor_key)
        targets_signer = load_signer(paths.keys / "targets.pem")
        add_vendor(open_registry(folder), VENDOR, [signer.public_key], 1, [targets_signer])
    client = RegistryClient(folder, trusted_root=paths.trusted_root, cache_dir=folder / "cache")
    published = set(map(str, client.releases()))
    # bundled names, e.g. tiny-ldm@1 -> photoimmune/tiny-ldm@1
    missing = [m for m in models if f"{VENDOR}/{m}" not in published]
    stale = [
        m
        for m in models
        if m not in missing
        and _as_bundled(client.get(f"{VENDOR}/{m}")) != _as_bundled(build_target(m))
    ]
    if stale:
        raise StaleRegistryError(
            f"{folder} publishes {', '.join(stale)} as an earlier photoimmune bundled "
            "it; move that folder aside (or delete it) and run again to publish this "
            "version's release"
        )
    if not missing:
        return client
    registry = open_registry(folder)
    for model in missing:
        target = build_target(model)
        release = folder / "releases" / str(target.ref).replace("/", "_")
        save_target(target, release)
        card = bundled_scorecard(target)  # measured once and committed: scoring takes minutes
        if card is not None:
            atomic_write_bytes(release / SCORECARD_NAME, card, overwrite=True)
        publish(registry, VENDOR, release, [load_signer(vendor_key)])
    # A new client: one client answers from the snapshot of its one refresh.
    return RegistryClient(folder, trusted_root=paths.trusted_root, cache_dir=folder / "cache")
