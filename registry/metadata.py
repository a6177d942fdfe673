"""TUF metadata for the registry, built with python-tuf's explicit Metadata API.

Layout of the repository (consistent snapshots on):

* ``root``: keys and thresholds of the four top-level roles;
* ``targets``: no targets of its own; delegates ``<vendor>/*/*/*`` to each vendor's role;
* ``<vendor>``: one target pair per release, ``<vendor>/<model>/<version>/target.json``
  (carrying the descriptor in its ``custom`` field) and the tensor file beside it,
  optionally with the release's ``scorecard.json`` (:mod:`photoimmune.sdk.scorecard`);
* ``snapshot``: the version, length and hash of ``targets`` and every vendor role;
* ``timestamp``: the version, length and hash of ``snapshot``.

Every function here is pure: it builds or checks metadata objects. Storage,
transactions and signing with online keys live in :mod:`.service`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

# The descriptor side only: the registry never loads tensors, so it never imports torch.
from photoimmune.sdk.descriptor import (
    DESCRIPTOR_NAME,
    AttackTarget,
    TargetIntegrityError,
    parse_descriptor,
)
from photoimmune.sdk.refs import NAME_RULE, ModelRef
from photoimmune.sdk.scorecard import SCORECARD_NAME, ScorecardError, parse_scorecard
from photoimmune.sdk.serving import excerpt

from .errors import (
    InvalidNameError,
    InvalidThresholdError,
    ReleaseRejectedError,
    UnknownVendorError,
)

TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
#: How long each role's signature stays valid. Timestamp is short so a frozen
#: mirror is noticed within a day; the server re-signs it well before then.
LIFETIMES = {
    "root": timedelta(days=365),
    "targets": timedelta(days=365),
    "vendor": timedelta(days=365),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
#: Largest metadata file the server accepts and a client downloads (endless-data guard).
MAX_METADATA_BYTES = 1_000_000
#: One part of a target path: characters that mean the same in a URL as in the signed
#: path, so whatever a vendor signs, clients can request (``%2e%2e`` would arrive as ``..``).
_PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class NewVersion(BaseModel):
    """The server's answer to an accepted write: the new version of the role it changed.

    Example:
        >>> NewVersion.model_validate({"version": 3}).version
        3
    """

    version: int


class PublishedRelease(NewVersion):
    """The server's answer to an accepted release: the vendor role's new version."""

    vendor: str


def expiry(lifetime: timedelta) -> datetime:
    """Now + ``lifetime``, to the second, in UTC (TUF's expiry format)."""
    return (datetime.now(UTC) + lifetime).replace(microsecond=0)


def vendor_paths(vendor: str) -> list[str]:
    """The target paths a vendor may sign: ``vendor/model/version/file``."""
    return [f"{vendor}/*/*/*"]


def release_dir(ref: ModelRef) -> str:
    return f"{ref.vendor}/{ref.model}/{ref.version}"


def new_root(
    root_keys: list[Key],
    root_threshold: int,
    targets_keys: list[Key],
    snapshot_key: Key,
    timestamp_key: Key,
    targets_threshold: int = 1,
) -> Metadata[Root]:
    """Version 1 of root (unsigned: sign it with ``root_threshold`` root keys)."""
    root = Root(expires=expiry(LIFETIMES["root"]), consistent_snapshot=True)
    for key in root_keys:
        root.add_key(key, "root")
    for key in targets_keys:
        root.add_key(key, "targets")
    root.add_key(snapshot_key, "snapshot")
    root.add_key(timestamp_key, "timestamp")
    root.roles["root"].threshold = root_threshold
    root.roles["targets"].threshold = targets_threshold
    return Metadata(root)


def new_targets() -> Metadata[Targets]:
    """Version 1 of the top-level targets: no vendors yet."""
    return Metadata(
        Targets(expires=expiry(LIFETIMES["targets"]), delegations=Delegations(keys={}, roles={}))
    )


def check_vendor_name(vendor: str) -> None:
    """Refuse a vendor name that is not a model namespace, or that TUF keeps for itself."""
    if vendor in TOP_LEVEL:
        raise InvalidNameError(
            f"{vendor!r} is reserved for TUF's own roles ({', '.join(TOP_LEVEL)}); choose "
            "another vendor name"
        )
    try:
        ModelRef(vendor=vendor, model="x", version="1")  # the namespace part of a model ref
    except ValueError:
        raise InvalidNameError(
            f"{vendor!r} is not a vendor name: use {NAME_RULE} (e.g. acme or acme-labs)"
        ) from None


def check_threshold(threshold: int, keys: int, role: str, given_as: str | None = None) -> None:
    """Refuse a threshold that no signatures of ``keys`` keys could ever meet (or zero):
    before any key is written or metadata fetched, and in metadata a vendor uploads.
    ``given_as`` says where the caller's user gave it, e.g. its option and parameter.

    Example:
        >>> check_threshold(2, 3, "root")
        >>> check_threshold(2, 1, "vendor")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        photoimmune.registry.errors.InvalidThresholdError: vendor threshold 2: choose 1 to 1, ...
    """
    if not 1 <= threshold <= keys:
        raise InvalidThresholdError(
            f"{role} threshold {threshold}{f' ({given_as})' if given_as else ''}: choose 1 to "
            f"{keys}, the number of {role} keys (no release could be signed otherwise)"
        )


def delegate_vendor(targets: Targets, vendor: str, keys: list[Key], threshold: int) -> None:
    """Add (or replace the keys of) ``vendor``'s role; the caller bumps the version and signs.

    Replacing keys is also how a compromised vendor key is revoked.
    """
    check_vendor_name(vendor)
    check_threshold(threshold, len(keys), "vendor")
    delegations = targets.delegations
    assert delegations is not None and delegations.roles is not None  # built by new_targets()
    if vendor in delegations.roles:
        for keyid in list(delegations.roles[vendor].keyids):
            targets.revoke_key(keyid, vendor)
    delegations.roles[vendor] = DelegatedRole(
        name=vendor,
        keyids=[],
        threshold=threshold,
        terminating=True,
        paths=vendor_paths(vendor),
    )
    for key in keys:
        targets.add_key(key, vendor)


def vendor_release(
    current: Metadata[Targets] | None,
    target_json: bytes,
    tensors: bytes,
    lifetime: timedelta,
    immunizer: bytes | None = None,
    *,
    scorecard: bytes | None = None,
) -> Metadata[Targets]:
    """The vendor role's next version with one release added (or replaced); unsigned.

    A release is its descriptor and every file it names: the tensors, and the one-pass
    immunizer's weights (``immunizer``) when it carries one; each is listed by sha256,
    so the vendor's signature covers them all.

    ``scorecard`` (the release's ``scorecard.json``, checked to measure this target) is
    listed beside the descriptor; a replaced release without one loses its old card.

    Example:
        >>> md = vendor_release(None, descriptor, tensors, LIFETIMES["vendor"])  # doctest: +SKIP
        >>> md.sign(vendor_signer)  # doctest: +SKIP
    """
    target = parse_descriptor(target_json, tensors, immunizer)
    if target.immunizer is not None and immunizer is None:
        raise TargetIntegrityError(
            f"{target.ref}: its descriptor names immunizer weights; pass them to publish"
        )
    base = release_dir(target.ref)
    md = Metadata(Targets(expires=expiry(lifetime))) if current is None else current
    signed = md.signed
    if current is not None:
        signed.version += 1
        signed.expires = expiry(lifetime)
    descriptor = TargetFile.from_data(f"{base}/{DESCRIPTOR_NAME}", target_json, ["sha256"])
    descriptor.unrecognized_fields["custom"] = {"descriptor": json.loads(target_json)}
    tensor_file = TargetFile.from_data(f"{base}/{target.tensors.path}", tensors, ["sha256"])
    signed.targets[descriptor.path] = descriptor
    signed.targets[tensor_file.path] = tensor_file
    if target.immunizer is not None and immunizer is not None:
        weights = TargetFile.from_data(
            f"{base}/{target.immunizer.weights.path}", immunizer, ["sha256"]
        )
        signed.targets[weights.path] = weights
    card_path = f"{base}/{SCORECARD_NAME}"
    signed.targets.pop(card_path, None)
    if scorecard is not None:
        try:
            parse_scorecard(scorecard, digest=target.digest)
        except ScorecardError as exc:
            raise ReleaseRejectedError(f"{card_path}: {exc}") from None
        signed.targets[card_path] = TargetFile.from_data(card_path, scorecard, ["sha256"])
    return md


def descriptor_of(info: TargetFile) -> AttackTarget | None:
    """The descriptor carried in a ``target.json`` TargetFile's custom field."""
    custom = info.unrecognized_fields.get("custom")
    if not info.path.endswith(f"/{DESCRIPTOR_NAME}") or not isinstance(custom, dict):
        return None
    return AttackTarget.model_validate(custom.get("descriptor"))


#: What refusing a name no delegation lists says; a client reads a server's 404 by it.
NOT_A_VENDOR = "is not a vendor of this registry"


def vendor_delegation(top: Targets, vendor: str) -> DelegatedRole:
    """``vendor``'s delegated role in the top-level targets, or a refusal naming the fix.

    A name from a request is checked by the vendor-name rule first and repeated only in
    part: names are at most 64 characters, so its first 80 break the rule when it does.

    Example:
        >>> vendor_delegation(new_targets().signed, "acme")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        photoimmune.registry.errors.UnknownVendorError: 'acme' is not a vendor of this ...
    """
    check_vendor_name(excerpt(vendor))
    roles = top.delegations.roles if top.delegations is not None else None
    if not roles or vendor not in roles:
        raise UnknownVendorError(
            f"{vendor!r} {NOT_A_VENDOR}; ask its admin to run "
            f"`photoimmune registry vendor add {vendor} --key PUBLIC_KEY`"
        )
    return roles[vendor]


def check_target_path(role: DelegatedRole, vendor: str, path: str, info: TargetFile) -> None:
    """A target path the vendor may sign: in its namespace, no ``.``/``..``, parts that need
    no URL encoding, sha256-hashed."""
    parts = path.split("/")
    if not role.is_delegated_path(path) or any(p in ("", ".", "..") for p in parts):
        raise ReleaseRejectedError(
            f"{path!r} is outside {vendor}'s namespace ({', '.join(role.paths or [])})"
        )
    if not all(_PATH_PART.fullmatch(part) for part in parts):
        # Served paths are URL-decoded, so a signed "%2e%2e" or "a%20b" could never be fetched.
        raise ReleaseRejectedError(
            f"{path!r}: each part of a target path must be letters, digits, '.', '_', '+' or "
            "'-', starting with a letter or digit (no percent-encoding, spaces or URL syntax)"
        )
    if list(info.hashes) != ["sha256"]:
        raise ReleaseRejectedError(f"{path}: list exactly one hash, sha256")


def check_descriptor(vendor: str, info: TargetFile, contents: dict[str, bytes]) -> None:
    """A ``target.json`` entry must carry the descriptor its file holds, named for its path.

    Otherwise one vendor could list, under its own paths, a descriptor naming
    another vendor's model, and clients listing releases would believe it.
    """
    if not info.path.endswith(f"/{DESCRIPTOR_NAME}"):
        return
    try:
        carried = descriptor_of(info)
        if carried is None:
            raise ReleaseRejectedError(f"{info.path}: its custom descriptor differs from the file")
        folder = info.path.rpartition("/")[0]
        tensors = f"{folder}/{carried.tensors.path}"
        weights = (
            None
            if carried.immunizer is None
            else contents[f"{folder}/{carried.immunizer.weights.path}"]
        )
        uploaded = parse_descriptor(contents[info.path], contents[tensors], weights)
    except (ValueError, KeyError, TargetIntegrityError) as exc:
        raise ReleaseRejectedError(f"{info.path}: not a valid attack target ({exc})") from None
    if carried.canonical_json() != uploaded.canonical_json():
        raise ReleaseRejectedError(f"{info.path}: its custom descriptor differs from the file")
    if (
        uploaded.ref.vendor != vendor
        or info.path != f"{release_dir(uploaded.ref)}/{DESCRIPTOR_NAME}"
    ):
        raise ReleaseRejectedError(
            f"{info.path}: describes {uploaded.ref}, which does not live at this path"
        )


def check_scorecard(info: TargetFile, contents: dict[str, bytes]) -> None:
    """A ``scorecard.json`` entry must be a scorecard of the target listed beside it."""
    if not info.path.endswith(f"/{SCORECARD_NAME}"):
        return
    descriptor = f"{info.path.rpartition('/')[0]}/{DESCRIPTOR_NAME}"
    if descriptor not in contents:
        raise ReleaseRejectedError(f"{info.path}: no {DESCRIPTOR_NAME} beside it to score")
    try:
        target = AttackTarget.model_validate_json(contents[descriptor])
        parse_scorecard(contents[info.path], digest=target.digest)
    except (ValueError, ScorecardError) as exc:
        raise ReleaseRejectedError(f"{info.path}: {exc}") from None


def check_signed_by(delegator: Root | Targets, role: str, md: Metadata) -> None:
    """Raise :class:`ReleaseRejectedError` unless ``md`` meets ``role``'s threshold."""
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise ReleaseRejectedError(
            f"{role} metadata v{md.signed.version} is not signed by enough of {role}'s keys "
            f"({exc}); sign it with the keys the registry has on record (after a key "
            "rotation: the ones the admin delegated last)"
        ) from None


def new_snapshot(version: int, roles: dict[str, int]) -> Metadata[Snapshot]:
    """Snapshot listing ``{role: version}``; unsigned.

    Versions only, no hashes: with consistent snapshots every file is fetched
    by version, so a mirror that answers with another version is caught as
    mix-and-match, and the clients' size limits stop endless data.
    """
    snapshot = Snapshot(version=version, expires=expiry(LIFETIMES["snapshot"]))
    snapshot.meta = {f"{role}.json": MetaFile(v) for role, v in roles.items()}
    return Metadata(snapshot)


def new_timestamp(version: int, snapshot_version: int) -> Metadata[Timestamp]:
    timestamp = Timestamp(
        version=version,
        expires=expiry(LIFETIMES["timestamp"]),
        snapshot_meta=MetaFile(snapshot_version),
    )
    return Metadata(timestamp)


def sign(md: Metadata, signers: Sequence[Signer]) -> bytes:
    """Sign with every signer (replacing old signatures) and serialise."""
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    return md.to_bytes()


def parse(data: bytes, role_type: str) -> Metadata:
    """Deserialise uploaded metadata, refusing anything that is not ``role_type``."""
    if len(data) > MAX_METADATA_BYTES:
        raise ReleaseRejectedError(
            f"metadata is {len(data)} bytes; the limit is {MAX_METADATA_BYTES}"
        )
    try:
        md = Metadata.from_bytes(data)
    except Exception as exc:  # python-tuf raises DeserializationError and friends
        raise ReleaseRejectedError(f"not TUF metadata: {exc}") from None
    if md.signed.type != role_type:
        raise ReleaseRejectedError(f"expected {role_type} metadata, got {md.signed.type}")
    return md
