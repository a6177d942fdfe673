"""``RegistryClient``: verified answers from a registry, over python-tuf's ngclient.

Every answer comes from metadata that ``tuf.ngclient.Updater`` has verified
against the trusted root: signatures and thresholds, versions that never go
back (rollback), versions that agree with the snapshot that lists them
(mix-and-match), expiry (freeze), and lengths and hashes of every file (tampering,
endless data). Failures surface as the specific :mod:`.errors` classes.

A registry is a URL (``http://host:port``, the server) or a folder (a static
export, e.g. on a mounted volume). Downloads are cached; ``offline=True``
answers from the cache alone, and still refuses once the cached timestamp
has expired.

A client refreshes itself: every query first re-checks the registry when
``refresh_interval`` seconds have passed since its last refresh, or as soon as the
metadata it trusts has expired, so a long-lived client (the diffusers plugin, a job
worker) sees new and replaced releases without calling :meth:`RegistryClient.refresh`.
A refresh that fails keeps the last verified state while that state is unexpired,
and is retried on the next query; no failure is ever remembered as "no releases".
One refresh (or download) ends within ``refresh_deadline`` seconds, however slowly
a server drips its answer. Clients in several processes may share one cache: each
refresh or download holds the cache's lock file, because ngclient re-links
``root.json`` non-atomically and two updaters at once would trip over each other.

Example (needs a running server and its ``root.json``):
    >>> root = Path("root.json")
    >>> client = RegistryClient("http://127.0.0.1:8470", trusted_root=root)  # doctest: +SKIP
    >>> str(client.latest("photoimmune/tiny-ldm"))  # doctest: +SKIP
    'photoimmune/tiny-ldm@2'
    >>> target = client.get("photoimmune/tiny-ldm@2")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
from filelock import FileLock, Timeout
from pydantic import ValidationError
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Signed, Snapshot, Targets, Timestamp
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from photoimmune.sdk.deadline import Deadline
from photoimmune.sdk.io import check_output_dir, env_path
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.scorecard import SCORECARD_NAME, Scorecard, ScorecardError, parse_scorecard
from photoimmune.sdk.targets import (
    DESCRIPTOR_NAME,
    AttackTarget,
    WeightFingerprints,
    attach_bundled,
    parse_target,
)
from photoimmune.sdk.urls import url_problem

from . import errors
from .keys import trusted_root_bytes
from .metadata import MAX_METADATA_BYTES, descriptor_of, release_dir, vendor_delegation

_CHUNK = 64 * 1024
#: Seconds between a client's automatic refreshes (it also refreshes once its metadata expires).
REFRESH_INTERVAL_S = 300.0
#: Seconds one refresh, or one download, may take in all, over however many reads.
REFRESH_DEADLINE_S = 60.0
#: Environment variable that moves the registry cache (default ``~/.cache/photoimmune``).
CACHE_DIR_ENV = "PHOTOIMMUNE_CACHE_DIR"
logger = logging.getLogger(__name__)


class DeadlineFetcher(FetcherInterface):
    """A fetcher whose reads all stop at one deadline (a ``time.monotonic()`` instant).

    Per-read timeouts alone do not bound a download: a server that drips one byte
    per read never trips them, and the size limits allow hours of dripping. The
    client sets :attr:`deadline` for the span of one refresh or download.
    """

    deadline: float | None = None

    def _remaining(self, url: str) -> float | None:
        """Seconds left before the deadline (None: no deadline); raises once it has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise tuf_errors.DownloadError(
                f"{url}: no complete answer within the refresh deadline; the server is too "
                "slow or is dripping its answer"
            )
        return left


class HttpFetcher(DeadlineFetcher):
    """Fetch over HTTP with httpx (any ``httpx.Client``, e.g. FastAPI's TestClient)."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(
            timeout=30.0,
            follow_redirects=False,
            # A new connection per file, so the deadline's watchdog sees each socket open.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        left = self._remaining(url)
        try:
            with (
                Deadline(left) as deadline,
                self.client.stream(
                    "GET",
                    url,
                    timeout=deadline.within(self.client.timeout),
                    extensions={"trace": deadline.trace},
                ) as response,
            ):
                if response.status_code != 200:
                    raise tuf_errors.DownloadHTTPError(
                        f"{url}: HTTP {response.status_code}", response.status_code
                    )
                # Chunks as they arrive (not 64 KiB batches), so a drip meets the deadline.
                for chunk in response.iter_bytes():
                    self._remaining(url)
                    yield chunk
        except httpx.HTTPError as exc:
            self._remaining(url)  # cut off by the watchdog: name the deadline, not the reset
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc


class DirectoryFetcher(DeadlineFetcher):
    """Fetch ``file://`` URLs: a registry exported with ``photoimmune registry export``."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise tuf_errors.DownloadHTTPError(f"{path}: not found", 404) from None
        with handle:
            while chunk := handle.read(_CHUNK):
                self._remaining(url)  # a mounted volume can be slow too
                yield chunk


class ServiceFetcher(DeadlineFetcher):
    """Fetch straight from a registry folder's database, by the server's URL paths."""

    def __init__(self, folder: Path) -> None:
        from .service import RegistryService

        self.folder = folder
        self.service = RegistryService.open(folder)

    def _fetch(self, url: str) -> Iterator[bytes]:
        relative = Path(unquote(urlparse(url).path)).relative_to(self.folder).as_posix()
        kind, _, rest = relative.partition("/")
        try:
            if kind == "metadata":
                yield self.service.metadata_file(rest)
            else:
                yield self.service.target_file(rest)
        except errors.UnknownReleaseError as exc:
            raise tuf_errors.DownloadHTTPError(str(exc), 404) from None


class OfflineFetcher(FetcherInterface):
    """Answer only with the cached timestamp, so ngclient verifies the cache and nothing else."""

    def __init__(self, metadata_dir: Path) -> None:
        self.metadata_dir = metadata_dir

    def _fetch(self, url: str) -> Iterator[bytes]:
        if url.endswith("/timestamp.json") and (self.metadata_dir / "timestamp.json").is_file():
            yield (self.metadata_dir / "timestamp.json").read_bytes()
            return
        raise tuf_errors.DownloadHTTPError(f"{url}: offline, and not in the cache", 404)


def _version_key(version: str) -> tuple:
    """Order ``2 < 10``, ``1.2.0 < 1.10.0``, ``2026-01-05 < 2026-11-01``."""
    return tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+_-]", version)
    )


def default_cache_dir(source: str, trusted_root: bytes) -> Path:
    """One cache per (registry, trust anchor): a new root.json never reuses old trust.

    Under ``$PHOTOIMMUNE_CACHE_DIR`` when set (empty counts as unset: never the current
    folder), which must then be a folder this user can write in, or
    :class:`~photoimmune.sdk.errors.OutputPathError` names the variable; else under
    ``~/.cache/photoimmune``.

    Example:
        >>> default_cache_dir("https://registry.example", b"root").parent.name
        'registry'
    """
    base = env_path(CACHE_DIR_ENV)
    if base is not None:
        check_output_dir(base, option=f"${CACHE_DIR_ENV}")
    else:
        base = Path.home() / ".cache" / "photoimmune"
    key = hashlib.sha256(source.encode() + b"\0" + trusted_root).hexdigest()[:16]
    return base / "registry" / key


def _query(method: Callable) -> Callable:
    """A public query: refreshes first when due, once per outermost call.

    Nested queries (``latest`` calls ``versions`` calls ``releases``) answer from the
    same verified state, so one answer never mixes two versions of the registry.
    """

    @functools.wraps(method)
    def query(self: RegistryClient, *args, **kwargs):
        if self._in_query:
            return method(self, *args, **kwargs)
        self._in_query = True
        try:
            self._ensure_fresh()
            return method(self, *args, **kwargs)
        finally:
            self._in_query = False

    return query


class RegistryClient:
    """Verified reads from a registry.

    Args:
        source: ``http(s)://host:port`` of a server, a registry folder
            (``registry init``) or a static export (``registry export``).
        trusted_root: root metadata the client trusts first (the ``root.json``
            the registry's admin distributes); later roots are followed from it.
            It always wins over the cache: cached roots count only if they chain from it.
        cache_dir: where verified metadata and targets are kept (default
            ``~/.cache/photoimmune/registry/<hash of source>``, or under
            ``$PHOTOIMMUNE_CACHE_DIR``: :func:`default_cache_dir`).
        offline: answer from the cache only.
        http: an ``httpx.Client`` to use for HTTP (timeouts, proxies, tests).
        refresh_interval: seconds after which a query refreshes first (``math.inf``:
            only when the trusted metadata expires, or on :meth:`refresh`).
        refresh_deadline: seconds one refresh, or one download, may take in all.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        trusted_root: bytes | os.PathLike[str],
        cache_dir: os.PathLike[str] | None = None,
        offline: bool = False,
        http: httpx.Client | None = None,
        config: UpdaterConfig | None = None,
        refresh_interval: float = REFRESH_INTERVAL_S,
        refresh_deadline: float = REFRESH_DEADLINE_S,
    ) -> None:
        text = os.fspath(source)
        self.remote = text.startswith(("http://", "https://"))
        if self.remote:
            base = checked_url(text).rstrip("/")
            self._fetcher: DeadlineFetcher = HttpFetcher(http)
        else:
            folder = Path(text).expanduser().resolve()
            base = folder.as_uri()
            if (folder / "metadata").is_dir():
                self._fetcher = DirectoryFetcher()
            elif (folder / "keys" / "snapshot.pem").is_file():
                self._fetcher = ServiceFetcher(folder)
            else:
                raise errors.RegistryLocationError(
                    f"{folder}: neither a registry folder nor an exported registry; pass a "
                    "server's URL, a `registry init` folder or a `registry export` folder"
                )
        self.metadata_url = f"{base}/metadata/"
        self.targets_url = f"{base}/targets/"
        self._root = trusted_root_bytes(trusted_root)
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir(base, self._root)
        self.metadata_dir = self.cache / "metadata"
        self.targets_dir = self.cache / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self._cache_lock = FileLock(self.cache / ".lock")
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.offline = offline
        self.config = config or UpdaterConfig(
            root_max_length=MAX_METADATA_BYTES,
            targets_max_length=MAX_METADATA_BYTES,
            snapshot_max_length=MAX_METADATA_BYTES,
        )
        self.refresh_interval = refresh_interval
        self.refresh_deadline = refresh_deadline
        # The last verified state; a failed refresh leaves all of it as it was.
        self._updater: Updater | None = None
        self._top: Targets | None = None
        self._expires: datetime | None = None
        self._refreshed_at = -math.inf
        self._releases: dict[ModelRef, AttackTarget] | None = None
        #: vendor -> why its role did not verify at the last :meth:`releases` (those are
        #: left out of every answer; a listing that says nothing of them looks empty).
        self.skipped_vendors: dict[str, str] = {}
        self._in_query = False

    # -- public API --------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch and verify the newest top-level metadata now.

        Queries do this themselves when due (see ``refresh_interval``). Raises on
        failure and then keeps the state of the last refresh that succeeded.
        """
        fetcher = OfflineFetcher(self.metadata_dir) if self.offline else self._fetcher
        with self._network():
            updater = Updater(
                metadata_dir=str(self.metadata_dir),
                metadata_base_url=self.metadata_url,
                target_dir=str(self.targets_dir),
                target_base_url=self.targets_url,
                fetcher=fetcher,
                config=self.config,
                # Always from the given root: ngclient then follows the cached newer roots
                # only where each is signed by its predecessor, and replaces the rest, so a
                # planted cache (another registry's root.json) never becomes the anchor.
                bootstrap=self._root,
            )
            updater.refresh()
            # Under the lock still: the files read back are this refresh's, not a newer one's.
            self._adopt(updater)

    @_query
    def vendors(self) -> list[str]:
        """Vendors the registry delegates to."""
        top = self.top_level()
        roles = top.delegations.roles if top.delegations else None
        return sorted(roles or {})

    @_query
    def releases(self) -> dict[ModelRef, AttackTarget]:
        """Every release's descriptor, from verified metadata (tensors not downloaded).

        Computed once per refresh: the answer is that refresh's consistent snapshot.
        """
        if self._releases is None:
            self._releases = self._collect_releases()
        return self._releases

    def _collect_releases(self) -> dict[ModelRef, AttackTarget]:
        """Releases of every vendor whose role verifies; one broken vendor hides only itself
        (and is named in :attr:`skipped_vendors`)."""
        found: dict[ModelRef, AttackTarget] = {}
        self.skipped_vendors = {}
        for vendor in self.vendors():
            try:
                role = self.vendor_role(vendor)
                for info in (role.targets if role else {}).values():
                    descriptor = descriptor_of(info)
                    # A vendor speaks only for its own models, at the path the ref names.
                    if (
                        descriptor is not None
                        and descriptor.ref.vendor == vendor
                        and info.path == f"{release_dir(descriptor.ref)}/{DESCRIPTOR_NAME}"
                    ):
                        found[descriptor.ref] = descriptor
            except errors.RegistryUnavailableError:
                raise  # an outage says nothing about the vendor: never an empty answer
            except (errors.RegistryError, ValidationError) as exc:
                logger.warning("registry: skipping vendor %s: %s", vendor, exc)
                self.skipped_vendors[vendor] = str(exc)
        return found

    @_query
    def models(self) -> list[str]:
        """``vendor/model`` names with at least one release."""
        return sorted({f"{ref.vendor}/{ref.model}" for ref in self.releases()})

    @_query
    def versions(self, model: str) -> list[str]:
        """Versions of ``vendor/model``, oldest first."""
        vendor, _, name = model.partition("/")
        found = [r.version for r in self.releases() if (r.vendor, r.model) == (vendor, name)]
        if not found:
            raise errors.UnknownReleaseError(
                f"{model!r}: no releases in this registry; `photoimmune registry list` shows them"
            )
        return sorted(found, key=_version_key)

    @_query
    def latest(self, model: str) -> ModelRef:
        """The newest version of ``vendor/model``.

        Example:
            >>> str(client.latest("photoimmune/tiny-ldm"))  # doctest: +SKIP
            'photoimmune/tiny-ldm@2'
        """
        vendor, _, name = model.partition("/")
        return ModelRef(vendor=vendor, model=name, version=self.versions(model)[-1])

    @_query
    def get(self, ref: ModelRef | str) -> AttackTarget:
        """Download (or take from the cache) and verify one release's target and tensors
        (and its one-pass immunizer's weights, when it carries one)."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        descriptor_path = f"{release_dir(ref)}/{DESCRIPTOR_NAME}"
        info = self._targetinfo(descriptor_path)
        if info is None:
            raise errors.UnknownReleaseError(
                f"{ref}: not in this registry; `photoimmune registry list` shows what is"
            )
        descriptor = self._download(info)
        target = descriptor_of(info)
        assert target is not None  # target.json always carries its descriptor
        tensors_info = self._targetinfo(f"{release_dir(ref)}/{target.tensors.path}")
        if tensors_info is None:
            raise errors.TamperedTargetError(f"{ref}: its tensor file is not in signed metadata")
        weights = None
        if target.immunizer is not None:
            weights_info = self._targetinfo(f"{release_dir(ref)}/{target.immunizer.weights.path}")
            if weights_info is None:
                raise errors.TamperedTargetError(
                    f"{ref}: its immunizer's weights are not in signed metadata"
                )
            weights = self._download(weights_info)
        result = parse_target(descriptor, self._download(tensors_info), weights)
        if result.ref != ref or result.canonical_json() != target.canonical_json():
            raise errors.TamperedTargetError(
                f"{ref}: the downloaded descriptor differs from the signed one"
            )
        attach_bundled(result)
        return result

    @_query
    def scorecard(self, ref: ModelRef | str) -> Scorecard | None:
        """The release's signed scorecard (:mod:`photoimmune.sdk.scorecard`), verified to
        measure its target; None when the vendor published none.

        Example:
            >>> card = client.scorecard("photoimmune/tiny-ldm@2")  # doctest: +SKIP
            >>> card.score("jpeg75").ssim_kept  # doctest: +SKIP
            0.98
        """
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        descriptor = self._targetinfo(f"{release_dir(ref)}/{DESCRIPTOR_NAME}")
        info = self._targetinfo(f"{release_dir(ref)}/{SCORECARD_NAME}")
        target = None if descriptor is None else descriptor_of(descriptor)
        if info is None or target is None:
            return None
        try:
            return parse_scorecard(self._download(info), digest=target.digest)
        except ScorecardError as exc:
            raise errors.TamperedTargetError(
                f"{ref}: its signed scorecard is not this release's: {exc}"
            ) from None

    @_query
    def identify(self, fingerprints: WeightFingerprints) -> ModelRef | None:
        """Which release these weights are, by fingerprint (None if no release matches).

        Should a vendor publish the same weights twice, the newest version wins. Should
        several vendors or models claim them (anyone can copy published fingerprints),
        :class:`AmbiguousReleaseError` asks the caller to name the release.
        """
        matches = [ref for ref, t in self.releases().items() if t.fingerprints == fingerprints]
        models = sorted({f"{ref.vendor}/{ref.model}" for ref in matches})
        if len(models) > 1:
            raise errors.AmbiguousReleaseError(
                f"these weights match releases of {', '.join(models)}; name the one you run "
                "(model='vendor/model@version') instead of relying on fingerprints"
            )
        return max(matches, key=lambda r: _version_key(r.version), default=None)

    @_query
    def top_level(self) -> Targets:
        """The verified top-level targets role (who the vendors are, and their keys)."""
        self._current()
        assert self._top is not None  # set with every adopted refresh
        return self._top

    @_query
    def vendor_role(self, vendor: str) -> Targets | None:
        """The vendor's verified role (None while it has published nothing).

        A vendor the top-level targets does not delegate to is refused as a registry
        folder refuses its uploads (:class:`~.errors.ReleaseRejectedError`), naming the fix.
        """
        top = self.top_level()
        # First: for a vendor no delegation names, ngclient finds no role and writes no file,
        # and reading that file below would fail as a StorageError that hides why.
        vendor_delegation(top, vendor)
        # Looking up a path in the vendor's namespace makes ngclient fetch and verify the role.
        try:
            self._targetinfo(f"{vendor}/.index/0/{DESCRIPTOR_NAME}")
        except errors.RegistryError as exc:
            if "not part of snapshot" in str(exc):
                return None
            raise
        md = Metadata[Targets].from_file(str(self.metadata_dir / f"{vendor}.json"))
        top.verify_delegate(vendor, md.signed_bytes, md.signatures)
        return md.signed

    # -- refreshing --------------------------------------------------------------------

    def _adopt(self, updater: Updater) -> None:
        """Make a refreshed updater the client's verified state."""
        self._updater = updater
        self._top = _trusted(self.metadata_dir, Targets).signed
        self._expires = min(
            _trusted(self.metadata_dir, role).signed.expires
            for role in (Root, Timestamp, Snapshot, Targets)
        )
        self._refreshed_at = time.monotonic()
        self._releases = None

    def _due(self) -> bool:
        """Whether a query must refresh first: never done, interval over, or state expired."""
        return (
            self._updater is None
            or time.monotonic() - self._refreshed_at >= self.refresh_interval
            or self._expired()
        )

    def _expired(self) -> bool:
        return self._expires is not None and datetime.now(UTC) >= self._expires

    def _ensure_fresh(self) -> None:
        """Refresh when due. On failure keep the last verified state while it is unexpired;
        otherwise raise. Either way the next query tries again."""
        if not self._due():
            return
        try:
            self.refresh()
        except errors.RegistryError as exc:
            if self._updater is None or self._expired():
                raise
            logger.warning(
                "registry: refresh failed, answering from metadata verified %.0f s ago "
                "(valid until %s): %s",
                time.monotonic() - self._refreshed_at,
                self._expires,
                exc,
            )

    @contextmanager
    def _network(self) -> Iterator[None]:
        """One deadline over every read inside, the cache to ourselves, and our errors
        for python-tuf's."""
        previous = self._fetcher.deadline
        own = time.monotonic() + self.refresh_deadline
        self._fetcher.deadline = own if previous is None else min(previous, own)
        try:
            with self._locked_cache(), translated_errors():
                yield
        finally:
            self._fetcher.deadline = previous

    @contextmanager
    def _locked_cache(self) -> Iterator[None]:
        """Hold the cache's lock file; another process may be refreshing the same cache."""
        try:
            self._cache_lock.acquire(timeout=self.refresh_deadline)
        except Timeout:
            raise errors.RegistryUnavailableError(
                f"{self.cache}: another process has held this registry cache for "
                f"{self.refresh_deadline:.0f} s; try again, or give this client its own "
                f"cache_dir (${CACHE_DIR_ENV})"
            ) from None
        try:
            yield
        finally:
            self._cache_lock.release()

    # -- helpers -----------------------------------------------------------------------

    def _current(self) -> Updater:
        """The verified state (refreshing first only if there is none yet)."""
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        return self._updater

    def _targetinfo(self, path: str):
        updater = self._current()
        with self._network():
            return updater.get_targetinfo(path)

    def _download(self, info) -> bytes:
        updater = self._current()
        with self._network():
            path = updater.find_cached_target(info)
            if path is None:
                if self.offline:
                    raise errors.RegistryUnavailableError(
                        f"{info.path}: not in the cache and the client is offline; "
                        "fetch it once online"
                    )
                path = updater.download_target(info)
        return Path(path).read_bytes()


def _trusted(metadata_dir: Path, role: type[Signed]) -> Metadata[Any]:
    """A top-level role as the last successful refresh verified and cached it."""
    return Metadata.from_file(str(metadata_dir / f"{role.type}.json"))


#: ngclient's wording when a file's version differs from the one its lister names
#: ("Expected snapshot version 4, got 3", "Expected acme v2, got v1."); other
#: version errors mean older-than-trusted metadata.
_MIX_AND_MATCH = re.compile(r"^Expected (snapshot version \d+, got|\S+ v\d+, got v)")


def checked_url(url: str) -> str:
    """``url`` if it can name a server (:func:`~photoimmune.sdk.urls.url_problem`);
    otherwise :class:`~.errors.RegistryLocationError`, before anything is requested.

    Example:
        >>> checked_url("http://127.0.0.1:8470")
        'http://127.0.0.1:8470'
    """
    if (problem := url_problem(url)) is not None:
        raise errors.RegistryLocationError(
            f"{url!r}: not a registry URL ({problem}); give one such as http://127.0.0.1:8470"
        )
    return url


def connect(
    source: str | os.PathLike[str], trusted_root: bytes | os.PathLike[str] | None = None
) -> RegistryClient:
    """A verifying client for a server URL, a registry folder or an exported folder.

    A registry folder names its own trust anchor; a URL or an export needs ``trusted_root``.

    Example:
        >>> connect("out/demo/registry").latest("photoimmune/tiny-ldm")  # doctest: +SKIP
        ModelRef(vendor='photoimmune', model='tiny-ldm', version='1')
    """
    if trusted_root is None:
        from .service import RegistryPaths

        text = os.fspath(source)
        if text.startswith(("http://", "https://")):
            # A server cannot vouch for itself: its root.json is trusted only as the copy its
            # admin hands out, never as downloaded from it (a URL, not a path: no Path() here).
            raise errors.TrustedRootError(
                f"{text}: no trusted root given; pass the registry's root.json (--root, or "
                f"trusted_root=) as its admin distributes it; the server's own copy "
                f"({text.rstrip('/')}/root.json) cannot vouch for the server"
            )
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise errors.RegistryLocationError(
                f"{text}: no such registry folder; pass a `registry init` folder, a "
                "`registry export` folder (with --root) or a server's URL (with --root)"
            )
        local = RegistryPaths(folder).trusted_root
        if not local.is_file():
            raise errors.TrustedRootError(
                f"{os.fspath(source)}: no trusted root given and none at {local}; pass the "
                "registry's root.json (--root, or trusted_root=) as its admin distributes it"
            )
        trusted_root = local
    return RegistryClient(source, trusted_root=trusted_root)


#: ngclient's wording for too few signatures: "acme was signed by 0/1 keys".
_UNSIGNED = re.compile(r"^(?P<role>\S+) was signed by \d+/\d+ keys")


def _unsigned_cause(exc: Exception) -> str:
    """The likely cause of metadata signed by too few of its keys, by which role it is.

    An attack is possible in each case, but the honest mistakes are commoner: a root or
    timestamp the trusted root's keys never signed is most often another registry's
    ``root.json`` given as the anchor; a vendor role its delegated keys do not sign, a key
    rotation whose old key was retired before the vendor re-signed with the new one.
    """
    found = _UNSIGNED.match(str(exc))
    role = found["role"] if found else ""
    if role in ("root", "timestamp"):
        return (
            "most likely the trusted root (--root, trusted_root=) is another registry's "
            "root.json: pass the one this registry's admin distributes; if it is, the "
            "metadata was forged or signed with revoked keys"
        )
    if role and role not in ("snapshot", "targets"):
        return (
            f"most likely a key rotation in progress: the admin delegated new keys to vendor "
            f"{role!r} before {role}'s releases were re-signed with them. To recover, the admin "
            f"delegates the old and the new keys together (`photoimmune registry vendor add "
            f"{role} --key OLD.pub.pem --key NEW.pub.pem`) and the vendor publishes again "
            "with the new key (vendor guide, 'Rotating your keys'); otherwise it was forged"
        )
    return "it was forged or signed with revoked keys"


@contextmanager
def translated_errors() -> Iterator[None]:
    """Turn python-tuf's and httpx's exceptions into photoimmune's, naming the attack caught:
    the one place registry errors are translated (reads here, an admin's uploads too).

    Example:
        >>> with translated_errors():  # doctest: +SKIP
        ...     httpx.post("http://127.0.0.1:9/admin/root")  # nothing listens there
        Traceback (most recent call last):
        RegistryUnavailableError: registry unreachable: http://127.0.0.1:9/admin/root: ...
    """
    try:
        yield
    except httpx.HTTPError as exc:  # a request sent outside TUF's fetcher (an admin's upload)
        raise errors.RegistryUnavailableError(
            f"registry unreachable: {exc.request.url}: {exc}"
        ) from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise errors.MetadataExpiredError(
            f"registry metadata has expired ({exc}): a frozen mirror or a registry that stopped "
            "signing; try another mirror or tell the registry's operator"
        ) from exc
    except tuf_errors.BadVersionNumberError as exc:
        if _MIX_AND_MATCH.match(str(exc)):
            raise errors.MixAndMatchError(
                f"metadata versions do not agree ({exc}): a mix-and-match attack or a "
                "half-synced mirror; refresh again later or use another mirror"
            ) from exc
        raise errors.MetadataRollbackError(
            f"registry offered older metadata than already trusted ({exc}): a rollback "
            "attack or a stale mirror; do not use this mirror"
        ) from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise errors.SignatureThresholdError(
            f"registry metadata lacks enough valid signatures ({exc}); {_unsigned_cause(exc)}"
        ) from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise errors.TamperedTargetError(
            f"a downloaded file does not match its signed length/hash ({exc}); it was tampered "
            "with in transit or on the mirror"
        ) from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise errors.OversizedDataError(
            f"a download exceeded its signed or configured size ({exc}): endless data"
        ) from exc
    except tuf_errors.DownloadError as exc:
        raise errors.RegistryUnavailableError(f"registry unreachable: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise errors.RegistryError(f"registry metadata rejected: {exc}") from exc
