"""The manifest store: signed immunized files, found again by their soft-binding codes.

SQLAlchemy over SQLite by default, PostgreSQL by URL, schema by Alembic
(``resolver/migrations``, its own version table, so it may share a database with
a registry or a catalog). Each signed file is kept whole (the answer to a lookup
is the signed asset itself: its manifest store and the pixels to compare with),
with one row per code of its ``c2pa.soft-binding`` assertion.

Lookups go by Hamming distance over every stored code at once: the codes are
held in a numpy array (8 bytes each; 100,000 files with 19 codes are 15 MB),
XORed with the query and popcounted, which takes a few milliseconds and needs no
index to maintain. The array is reloaded when another process has added rows.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from photoimmune.sdk.codec import decode_image
from photoimmune.sdk.database import Schema, open_database, utc_now, write_session
from photoimmune.sdk.errors import ImageLoadError
from photoimmune.sdk.manifest import MIME_TYPES, read_manifest
from photoimmune.sdk.softbinding import MATCH_BITS, Region

from .errors import NotSignedError, StoreUnavailableError, UnknownAssetError
from .match import Match

#: The manifest store's tables and their migrations.
SCHEMA = Schema(
    Path(__file__).parent / "migrations", "photoimmune_resolver_version", lock_key=74689
)
#: Most matches one lookup returns (best first).
MAX_MATCHES = 5


class Base(DeclarativeBase):
    pass


class SignedAsset(Base):
    __tablename__ = "signed_assets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    media_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SoftBindingCode(Base):
    __tablename__ = "soft_binding_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("signed_assets.id", ondelete="CASCADE"))
    code: Mapped[int] = mapped_column(BigInteger)  # the 64-bit code as a signed int64
    region: Mapped[str] = mapped_column(String(200))  # Region as JSON


class Added(BaseModel):
    """What :meth:`ManifestStore.add` did with one file."""

    asset: int
    sha256: str
    codes: int
    new: bool


class ManifestStore:
    """Signed files by soft-binding code, in the database ``db`` (a URL or an SQLite file
    path), created or upgraded here.

    With ``created_by`` (the command that creates stores, named in the message), a missing
    SQLite file is refused, not created. Opening fails with
    :class:`~photoimmune.sdk.errors.DatabaseLocationError` (bad input) or
    :class:`StoreUnavailableError` (a server that cannot be used); see
    :func:`~photoimmune.sdk.database.open_database`.

    Example:
        >>> store = ManifestStore("sqlite://")
        >>> store.lookup(0)
        []
    """

    def __init__(self, db: str | os.PathLike[str], *, created_by: str | None = None) -> None:
        database = open_database(
            db,
            SCHEMA,
            what="manifest store",
            created_by=created_by,
            unavailable=StoreUnavailableError,
        )
        self.url, self.engine = database.url, database.engine
        self._lock = threading.Lock()
        self._loaded_up_to = -1
        self._codes = np.zeros(0, np.uint64)
        self._assets = np.zeros(0, np.int64)
        self._regions: list[str] = []

    def add(self, data: bytes, *, source: str = "<bytes>") -> Added:
        """Record a signed immunized file by the codes of its ``c2pa.soft-binding`` assertion.

        The same bytes twice are recorded once. Trust is not judged here: a verifier
        judges the manifest it gets back. ``source`` (the file's name) names the bytes in
        messages.

        Raises:
            NotSignedError: ``data`` carries no immunization manifest with a soft binding.
        """
        try:
            image = decode_image(data, name=source)
        except ImageLoadError as err:
            raise NotSignedError(str(err)) from None
        report = read_manifest(data, pixels=image.pixels)
        if report.assertion is None or not report.soft_binding or report.verdict == "invalid":
            raise NotSignedError(
                f"{source}: {report.verdict}, no signed immunization manifest with a soft "
                "binding; record the files `photoimmune immunize` signed (this version or newer)"
            )
        digest = hashlib.sha256(data).hexdigest()
        with write_session(self.engine) as session:
            found = session.scalar(select(SignedAsset.id).where(SignedAsset.sha256 == digest))
            if found is not None:
                return Added(asset=found, sha256=digest, codes=0, new=False)
            asset = SignedAsset(
                sha256=digest,
                media_type=MIME_TYPES.get(image.format or "", "application/octet-stream"),
                data=data,
                created_at=utc_now(),
            )
            session.add(asset)
            session.flush()
            for bound in report.soft_binding:
                session.add(
                    SoftBindingCode(
                        asset_id=asset.id,
                        code=_signed64(bound.code),
                        region=bound.region.model_dump_json(),
                    )
                )
            return Added(asset=asset.id, sha256=digest, codes=len(report.soft_binding), new=True)

    def asset(self, asset_id: int) -> tuple[bytes, str]:
        """A stored file's bytes and media type.

        Raises:
            UnknownAssetError: no such asset.
        """
        with Session(self.engine) as session:
            row = session.get(SignedAsset, asset_id)
            if row is None:
                raise UnknownAssetError(f"no asset {asset_id} in this manifest store")
            return row.data, row.media_type

    def lookup(self, code: int, max_bits: int = MATCH_BITS) -> list[Match]:
        """Assets with a code at most ``max_bits`` from ``code``, nearest first, one per asset."""
        self._refresh()
        with self._lock:
            codes, assets, regions = self._codes, self._assets, self._regions
        if not len(codes):
            return []
        distances = np.bitwise_count(codes ^ np.uint64(code))
        near = np.flatnonzero(distances <= max_bits)
        near = near[np.argsort(distances[near], kind="stable")]
        matches: dict[int, Match] = {}
        for i in near:
            asset = int(assets[i])
            if asset not in matches:
                region = Region.model_validate_json(regions[i])
                matches[asset] = Match(asset=asset, distance=int(distances[i]), region=region)
            if len(matches) == MAX_MATCHES:
                break
        return list(matches.values())

    def count(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count(SignedAsset.id))) or 0

    def _refresh(self) -> None:
        """Load the codes added since the last lookup (by this or any other process)."""
        with Session(self.engine) as session:
            newest = session.scalar(select(func.max(SoftBindingCode.id))) or 0
            if newest == self._loaded_up_to:
                return
            rows = session.execute(
                select(
                    SoftBindingCode.id,
                    SoftBindingCode.code,
                    SoftBindingCode.asset_id,
                    SoftBindingCode.region,
                )
                .where(SoftBindingCode.id > self._loaded_up_to)
                .order_by(SoftBindingCode.id)
            ).all()
        if not rows:
            return
        codes = np.array([r.code for r in rows], np.int64).view(np.uint64)
        with self._lock:
            self._codes = np.concatenate([self._codes, codes])
            self._assets = np.concatenate([self._assets, [r.asset_id for r in rows]])
            self._regions = self._regions + [r.region for r in rows]
            self._loaded_up_to = rows[-1].id

    def dispose(self) -> None:
        self.engine.dispose()


def _signed64(code: int) -> int:
    """A 64-bit code as the signed int64 SQL stores (same bits)."""
    return code - (1 << 64) if code >= 1 << 63 else code
