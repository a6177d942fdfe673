"""The registry's rules: what it accepts, and the snapshot/timestamp it signs afterwards.

Every accepted change (a new root, new top-level targets, a vendor release)
is verified first, then stored together with a new snapshot and timestamp in
one transaction, so readers only ever see a consistent repository.

Example:
    >>> service = RegistryService.open(Path("my-registry"))  # doctest: +SKIP
    >>> service.publish("acme", vendor_metadata, files)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from securesystemslib.signer import Signer
from sqlalchemy.orm import Session
from tuf.api.metadata import Metadata, Root, Targets
from tuf.api.serialization import SerializationError

from photoimmune.sdk.serving import excerpt

from . import metadata as tm
from .errors import (
    QuotaExceededError,
    ReleaseRejectedError,
    UnknownReleaseError,
)
from .keys import load_signer
from .quotas import VendorQuotas, format_size
from .storage import Store

#: Largest version number a metadata file can have: the database column is a 32-bit
#: integer (on PostgreSQL), so a larger number names nothing and is not looked up.
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class RegistryPaths:
    """Files of a registry made by ``photoimmune registry init DIR``."""

    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def database_url(self) -> str:
        """The URL ``registry init --db`` recorded, else the folder's SQLite file."""
        recorded = self.root / "database.url"
        if recorded.is_file():
            return recorded.read_text().strip()
        return f"sqlite:///{self.root / 'registry.db'}"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def quotas(self) -> Path:
        """Per-vendor storage quotas in bytes (see :mod:`.quotas`); the defaults if missing."""
        return self.root / "quotas.json"

    @property
    def trusted_root(self) -> Path:
        """Root v1: ship it with clients as their trust anchor."""
        return self.root / "root.json"


class RegistryService:
    """Verify and store changes; sign snapshot and timestamp with the online keys."""

    def __init__(
        self,
        store: Store,
        snapshot_signer: Signer,
        timestamp_signer: Signer,
        *,
        quotas: VendorQuotas | Path | None = None,
    ) -> None:
        self.store = store
        self.snapshot_signer = snapshot_signer
        self.timestamp_signer = timestamp_signer
        #: Vendors' storage quotas, or the ``quotas.json`` to read them from at each upload.
        self.quotas = quotas if quotas is not None else VendorQuotas()

    @classmethod
    def open(cls, folder: Path, database_url: str | None = None) -> RegistryService:
        """The service of a registry folder (its online keys in ``keys/``)."""
        paths = RegistryPaths(folder)
        if not (paths.keys / "snapshot.pem").is_file():
            raise UnknownReleaseError(
                f"{folder}: no registry here; create one with `photoimmune registry init {folder}`"
            )
        # Made by `registry init` with the keys: never a new, empty one under an old folder.
        store = Store(
            database_url or paths.database_url, paths.blobs, created_by="photoimmune registry init"
        )
        return cls(
            store,
            load_signer(paths.keys / "snapshot.pem"),
            load_signer(paths.keys / "timestamp.pem"),
            quotas=paths.quotas,
        )

    # -- setup -------------------------------------------------------------------------

    def bootstrap(self, root: bytes, targets: bytes) -> None:
        """Store signed root v1 and targets v1, then sign the first snapshot and timestamp."""
        root_md = parse_upload(root, "root")
        targets_md = parse_upload(targets, "targets")
        tm.check_signed_by(root_md.signed, "root", root_md)
        tm.check_signed_by(root_md.signed, "targets", targets_md)
        with self.store.write() as session:
            if self.store.latest(session, "root") is not None:
                raise ReleaseRejectedError("this registry is already initialised")
            self.store.put_metadata(session, "root", 1, root)
            self._accept(session, "targets", 1, targets)

    # -- reads -------------------------------------------------------------------------

    def metadata_file(self, filename: str) -> bytes:
        """``timestamp.json`` or ``<version>.<role>.json``, as served to clients."""
        with self.store.read() as session:
            if filename == "timestamp.json":
                return self._fresh_timestamp(session)
            version, _, rest = filename.partition(".")
            role = rest.removesuffix(".json")
            number = _version_number(version)
            data = None
            if number is not None and rest.endswith(".json"):
                data = self.store.metadata(session, role, number)
            if data is None:
                raise UnknownReleaseError(f"no metadata file {excerpt(filename)!r}")
            return data

    def target_file(self, path: str) -> bytes:
        """``<dir>/<sha256>.<name>`` (consistent-snapshot target URL) -> the file's bytes."""
        folder, _, name = path.rpartition("/")
        digest, _, filename = name.partition(".")
        with self.store.read() as session:
            data = self.store.target(session, f"{folder}/{filename}", digest)
        if data is None:
            raise UnknownReleaseError(f"no target file {excerpt(path)!r}")
        return data

    def check_vendor(self, vendor: str) -> None:
        """Refuse, before an upload is read, a name the top-level targets does not delegate
        to, and a vendor whose quota is used up (every release adds at least metadata)."""
        with self.store.read() as session:
            top = Metadata[Targets].from_bytes(self.store.top_level(session, "targets").data)
            tm.vendor_delegation(top.signed, vendor)
            self._check_quota(session, vendor, {}, 1, at_least=True)

    def current(self, role: str) -> bytes:
        """The newest version of ``role``'s metadata."""
        with self.store.read() as session:
            row = self.store.latest(session, role)
            if row is None:
                raise UnknownReleaseError(f"{role!r} has published nothing yet")
            return row.data

    # -- writes ------------------------------------------------------------------------

    def update_root(self, data: bytes) -> int:
        """Accept root N+1: signed by the threshold of root N *and* of its own root keys,
        valid for a while yet, with consistent snapshots, and with snapshot and timestamp
        roles this server's online keys can sign (else every client would refuse it)."""
        new = parse_upload(data, "root")
        signed: Root = new.signed
        with self.store.write() as session:
            old = Metadata[Root].from_bytes(self.store.top_level(session, "root").data)
            self._expect_next(new, old.signed.version, "root")
            tm.check_signed_by(old.signed, "root", new)
            tm.check_signed_by(signed, "root", new)
            _check_lifetime("root", signed)
            if not signed.consistent_snapshot:
                # Only <version>.<role>.json is served; clients would ask for snapshot.json.
                raise ReleaseRejectedError(
                    f"root v{signed.version} sets consistent_snapshot to false; this registry "
                    "serves consistent snapshots only: set it to true and sign again"
                )
            for role, signer in (
                ("snapshot", self.snapshot_signer),
                ("timestamp", self.timestamp_signer),
            ):
                _check_online_role(signed, role, signer)
            self._accept(session, "root", signed.version, data)
        return signed.version

    def update_targets(self, data: bytes) -> int:
        """Accept top-level targets N+1 (onboarding a vendor, rotating a vendor's keys)."""
        new = parse_upload(data, "targets")
        with self.store.write() as session:
            root = Metadata[Root].from_bytes(self.store.top_level(session, "root").data)
            current = self.store.top_level(session, "targets")
            self._expect_next(new, current.version, "targets")
            tm.check_signed_by(root.signed, "targets", new)
            if new.signed.targets:
                raise ReleaseRejectedError("top-level targets lists no files; vendors publish them")
            _check_lifetime("targets", new.signed)
            _check_delegations(new.signed)
            self._accept(session, "targets", new.signed.version, data)
        return new.signed.version

    def publish(self, vendor: str, data: bytes, files: dict[str, bytes]) -> int:
        """Accept ``vendor``'s role N+1 and the target files it lists that are new.

        Checks, in order: the vendor is delegated; the metadata is the next
        version, unexpired and signed by the vendor's threshold; every path lies
        in the vendor's namespace; every uploaded file matches its length and
        hash; every listed file is either uploaded now or already stored; the new
        files and metadata fit in the vendor's storage quota. Only then are blobs stored.
        """
        new = parse_upload(data, "targets")
        signed: Targets = new.signed
        with self.store.write() as session:
            top = Metadata[Targets].from_bytes(self.store.top_level(session, "targets").data)
            role = tm.vendor_delegation(top.signed, vendor)
            current = self.store.latest(session, vendor)
            self._expect_next(new, 0 if current is None else current.version, vendor)
            _check_lifetime(vendor, signed)
            tm.check_signed_by(top.signed, vendor, new)
            stray = set(files) - set(signed.targets)
            if stray:
                raise ReleaseRejectedError(
                    f"uploaded files not listed in the metadata: {sorted(stray)}"
                )
            contents = {}
            for path, info in signed.targets.items():
                tm.check_target_path(role, vendor, path, info)
                if path in files:
                    try:
                        info.verify_length_and_hashes(files[path])
                    except Exception:
                        raise ReleaseRejectedError(
                            f"{path}: uploaded bytes do not match the signed length/hash"
                        ) from None
                    contents[path] = files[path]
                else:
                    stored = self.store.target(session, path, info.hashes["sha256"])
                    if stored is None:
                        raise ReleaseRejectedError(
                            f"{path}: listed but neither uploaded nor stored"
                        )
                    contents[path] = stored
            for info in signed.targets.values():
                tm.check_descriptor(vendor, info, contents)
                tm.check_scorecard(info, contents)
            uploaded = {
                signed.targets[path].hashes["sha256"]: len(blob) for path, blob in files.items()
            }
            self._check_quota(session, vendor, uploaded, len(data))
            # Only a fully checked release within its vendor's quota reaches the blob store.
            for path, blob in files.items():
                self.store.put_target(session, path, blob)
            self._accept(session, vendor, signed.version, data)
        return signed.version

    def vendor_quota(self, vendor: str) -> int:
        """``vendor``'s storage quota in bytes (``quotas.json`` is read afresh each time)."""
        quotas = VendorQuotas.load(self.quotas) if isinstance(self.quotas, Path) else self.quotas
        return quotas.limit(vendor)

    def _check_quota(
        self,
        session: Session,
        vendor: str,
        uploaded: dict[str, int],
        metadata_bytes: int,
        *,
        at_least: bool = False,
    ) -> None:
        """Refuse a release whose new files (by sha256) and metadata take ``vendor`` past
        its quota. Under the write lock, so two uploads of one vendor can't both fit."""
        used, stored = self.store.vendor_usage(session, vendor)
        adds = metadata_bytes + sum(n for digest, n in uploaded.items() if digest not in stored)
        quota = self.vendor_quota(vendor)
        if used + adds <= quota:
            return
        adding = "at least its metadata" if at_least else f"{adds} bytes ({format_size(adds)})"
        raise QuotaExceededError(
            f"{vendor} would go over its storage quota of {quota} bytes ({format_size(quota)}): "
            f"it stores {used} bytes ({format_size(used)}) and this release adds {adding}; "
            "the registry's operator raises it in the registry folder's quotas.json, e.g. "
            f'{{"vendors": {{"{vendor}": {max(2 * quota, used + adds)}}}}} (bytes; read at '
            "each upload, no restart needed)",
            vendor=vendor,
            quota=quota,
            used=used,
            adds=adds,
        )

    # -- online signing ----------------------------------------------------------------

    def _expect_next(self, new: Metadata, current: int, role: str) -> None:
        if new.signed.version != current + 1:
            raise ReleaseRejectedError(
                f"{role} metadata v{new.signed.version} is not the next version (v{current + 1}); "
                "fetch the current metadata, change it and sign again"
            )

    def _accept(self, session: Session, role: str, version: int, data: bytes) -> None:
        """Store a verified role version, then the snapshot and timestamp that list it."""
        self.store.put_metadata(session, role, version, data)
        session.flush()
        self._resign(session)

    def _resign(self, session: Session) -> None:
        """New snapshot of every role's newest version, and a timestamp over it."""
        latest = self.store.latest_of_each(session)
        roles = {r: v for r, (v, _) in latest.items() if r not in ("root", "snapshot", "timestamp")}
        snapshot_version = latest.get("snapshot", (0, b""))[0] + 1
        snapshot = tm.sign(tm.new_snapshot(snapshot_version, roles), [self.snapshot_signer])
        self.store.put_metadata(session, "snapshot", snapshot_version, snapshot)
        self._sign_timestamp(session, latest.get("timestamp", (0, b""))[0] + 1, snapshot_version)

    def _sign_timestamp(self, session: Session, version: int, snapshot_version: int) -> bytes:
        data = tm.sign(tm.new_timestamp(version, snapshot_version), [self.timestamp_signer])
        self.store.put_metadata(session, "timestamp", version, data)
        return data

    def _fresh_timestamp(self, session: Session) -> bytes:
        """The newest timestamp, re-signed first if half its lifetime has passed.

        Each re-signing also renews the snapshot once half of *its* lifetime has
        passed, so a registry nobody publishes to keeps serving valid metadata.
        """
        row = self.store.latest(session, "timestamp")
        if row is None:
            raise UnknownReleaseError("registry is not initialised")
        current = Metadata.from_bytes(row.data).signed
        if current.expires - datetime.now(UTC) > tm.LIFETIMES["timestamp"] / 2:
            return row.data
        with self.store.write() as writer:
            row = self.store.top_level(writer, "timestamp")
            current = Metadata.from_bytes(row.data).signed
            if current.expires - datetime.now(UTC) > tm.LIFETIMES["timestamp"] / 2:
                return row.data  # another request re-signed it meanwhile
            snapshot = self.store.top_level(writer, "snapshot")
            expires = Metadata.from_bytes(snapshot.data).signed.expires
            if expires - datetime.now(UTC) <= tm.LIFETIMES["snapshot"] / 2:
                self._resign(writer)
                return self.store.top_level(writer, "timestamp").data
            return self._sign_timestamp(writer, current.version + 1, snapshot.version)

    # -- export ------------------------------------------------------------------------

    def export(self, folder: Path) -> int:
        """Write every metadata version and target file as static files for any web server.

        Layout matches the server's URLs: ``metadata/<v>.<role>.json``,
        ``metadata/timestamp.json``, ``targets/<dir>/<sha256>.<name>``. Returns the
        number of files written.
        """
        from photoimmune.sdk.io import atomic_write_bytes

        from .storage import MetadataFile

        count = 0
        with self.store.read() as session:
            timestamp = self._fresh_timestamp(session)
            for row in session.query(MetadataFile).all():
                if row.role != "timestamp":
                    out = folder / "metadata" / f"{row.version}.{row.role}.json"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(out, row.data, overwrite=True)
                    count += 1
            for target in self.store.targets(session):
                directory, _, name = target.path.rpartition("/")
                out = folder / "targets" / directory / f"{target.sha256}.{name}"
                out.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(out, self.store.blobs.get(target.sha256), overwrite=True)
                count += 1
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "metadata" / "timestamp.json", timestamp, overwrite=True)
        return count + 1


def parse_upload(data: bytes, role_type: str) -> Metadata:
    """Uploaded metadata of ``role_type`` that has a canonical form, else a refusal (409).

    Signatures cover the canonical JSON of ``signed``, which has integers and strings
    but no floats. JSON with ``0.5``, ``NaN`` or ``1e999`` in it parses, yet has no
    canonical form, so no signature can cover it and python-tuf's signature check
    raises ``SerializationError`` on it: it is refused here, before any check runs.
    """
    try:
        md = tm.parse(data, role_type)
    except ReleaseRejectedError:
        if role_type == "targets":
            # python-tuf refuses a delegation named like a top-level role ("root") without
            # saying so; the vendor-name rule says which name and what is allowed.
            for name in _delegated_names(data):
                tm.check_vendor_name(excerpt(name))
        raise
    try:
        md.signed_bytes  # noqa: B018 (computed for its refusal; the checks compute it again)
    except (SerializationError, ValueError):
        try:
            found = _first_float(md.signed.to_dict())
        except Exception:  # the refusal matters, not where
            found = ""
        raise ReleaseRejectedError(
            f"{role_type} metadata must be canonical-JSON-serialisable: integers and strings "
            f"(valid Unicode) only, no floats, NaN or Infinity{found}; use an integer or a "
            "string instead"
        ) from None
    return md


def _first_float(document: object) -> str:
    """Where ``document`` holds its first float, as " (found 0.5 at signed.a.b)", or ""."""
    # Iterative, with each path a (parent, label) chain built only for the answer:
    # uploaded JSON may nest as deep as the parser allows, under keys of any length.
    pending: list[tuple[tuple | None, object]] = [(None, document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, float):
            labels = []
            while path is not None:
                path, label = path
                labels.append(label if len(label) <= 40 else f"{label[:37]}...")
            where = "".join(reversed(labels))
            return f" (found {value!r} at signed{where[:200]})"
        if isinstance(value, dict):
            items = [(f".{key}", item) for key, item in value.items()]
        elif isinstance(value, list):
            items = [(f"[{i}]", item) for i, item in enumerate(value)]
        else:
            continue
        pending.extend(((path, label), item) for label, item in reversed(items))
    return ""


def _delegated_names(data: bytes) -> list[str]:
    """The delegated role names in uploaded targets JSON, or [] if it has none to read."""
    try:
        roles = json.loads(data)["signed"]["delegations"]["roles"]
        return [role["name"] for role in roles if isinstance(role["name"], str)]
    except (ValueError, LookupError, TypeError, RecursionError):
        return []


def _check_lifetime(role: str, signed: Root | Targets) -> None:
    """Refuse metadata that expires before the snapshot signed over it does.

    Clients read every role on each refresh: one that runs out would stop them all
    until someone signs it again (offline, for root and targets).
    """
    if signed.expires - datetime.now(UTC) < tm.LIFETIMES["snapshot"]:
        raise ReleaseRejectedError(
            f"{role} metadata expires {signed.expires:%Y-%m-%d %H:%M}; sign it to stay "
            f"valid for at least {tm.LIFETIMES['snapshot'].days} days"
        )


def _check_online_role(root: Root, role: str, signer: Signer) -> None:
    """Refuse a root whose ``role`` the server's one online key for it cannot sign alone."""
    key = signer.public_key
    listed = root.keys.get(key.keyid) if key.keyid in root.roles[role].keyids else None
    same = listed is not None and (listed.keytype, listed.scheme, listed.keyval) == (
        key.keytype,
        key.scheme,
        key.keyval,
    )
    if not same or root.roles[role].threshold != 1:
        raise ReleaseRejectedError(
            f"root v{root.version}: the {role} role must list the registry's online {role} "
            f"key {key.keyid} (its keys/{role}.pem) with threshold 1, because the server "
            f"signs {role} with that key alone; keep it in the role (add a new key beside "
            "it to rotate), set the threshold to 1 and sign again"
        )


def _check_delegations(top: Targets) -> None:
    """Refuse a delegation its vendor could never publish under: a name the vendor-name rule
    refuses, paths other than the vendor's namespace, a threshold its keys cannot meet."""
    delegations = top.delegations
    if delegations is None or delegations.roles is None:
        return
    for name, role in delegations.roles.items():
        tm.check_vendor_name(excerpt(name))
        if role.paths != tm.vendor_paths(name):
            paths = json.dumps(role.paths if role.paths is not None else role.path_hash_prefixes)
            raise ReleaseRejectedError(
                f"delegation {name}: paths must be {json.dumps(tm.vendor_paths(name))} (the "
                f"vendor's namespace), not {excerpt(paths)}; delegate with "
                f"`photoimmune registry vendor add {name}`"
            )
        keys = sum(keyid in delegations.keys for keyid in role.keyids)
        tm.check_threshold(role.threshold, keys, f"vendor {name}")


def _version_number(text: str) -> int | None:
    """The version in a ``<version>.<role>.json`` name, or None when it can name no file.

    ASCII digits only (``str.isdigit`` also accepts "²", which ``int`` refuses) and at
    most :data:`MAX_VERSION`, which the database can compare against.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_VERSION)):
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None
