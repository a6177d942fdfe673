"""API keys: issued once, stored as their sha256, revocable; per-key rates and quotas.

A key is 256 random bits (``pik_`` + URL-safe base64). Because it is random, a
plain sha256 is enough to store it: nothing about it can be guessed, and the
database alone never lets anyone use the service. The key is shown once, when
it is made (``photoimmune service key add``); lost keys are revoked and replaced.

Rates are enforced per process (a token bucket per key), quotas in the
database (an atomic ``UPDATE ... WHERE used < quota``), so every process and
machine shares them.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update

from photoimmune.sdk.database import utc_now
from photoimmune.sdk.errors import InputError

from .errors import RateLimitedError, RevokedApiKeyError, UnknownApiKeyError
from .store import ApiKey, ServiceStore

_PREFIX = "pik_"


class KeyRecord(BaseModel):
    """An API key as listed: everything but the key itself."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    name: str
    rate_per_minute: int | None
    quota_images: int | None
    used_images: int
    created_at: datetime
    revoked_at: datetime | None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_key(
    store: ServiceStore,
    name: str,
    *,
    rate_per_minute: int | None = None,
    quota_images: int | None = None,
) -> str:
    """Issue a key named ``name``; returns the key, which is not stored anywhere.

    Example:
        >>> key = add_key(ServiceStore("sqlite://"), "newsroom")
        >>> key.startswith("pik_") and len(key) > 40
        True
    """
    name = name.strip()
    if not name or len(name) > 255:
        raise InputError("a key's name is 1 to 255 characters: say who it is for")
    # The CLI refuses values under 1 itself: these name the Python parameters.
    for value, parameter in ((rate_per_minute, "rate_per_minute"), (quota_images, "quota_images")):
        if value is not None and value < 1:
            raise InputError(f"{parameter}= must be at least 1 (leave it out for the default)")
    key = _PREFIX + secrets.token_urlsafe(32)
    with store.write() as session:
        session.add(
            ApiKey(
                name=name,
                key_sha256=_digest(key),
                rate_per_minute=rate_per_minute,
                quota_images=quota_images,
                used_images=0,
                created_at=utc_now(),
            )
        )
    return key


def revoke_keys(store: ServiceStore, name: str) -> int:
    """Revoke every active key named ``name``; how many (0: none had that name).

    Example:
        >>> store = ServiceStore("sqlite://")
        >>> _ = add_key(store, "newsroom")
        >>> revoke_keys(store, "newsroom"), revoke_keys(store, "newsroom")
        (1, 0)
    """
    with store.write() as session:
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utc_now())
        )
        return int(getattr(result, "rowcount", 0) or 0)


def list_keys(store: ServiceStore) -> list[KeyRecord]:
    """Every key ever issued, oldest first.

    Example:
        >>> store = ServiceStore("sqlite://")
        >>> _ = add_key(store, "newsroom", quota_images=100)
        >>> [(k.name, k.quota_images, k.revoked_at) for k in list_keys(store)]
        [('newsroom', 100, None)]
    """
    with store.read() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.id))
        return [KeyRecord.model_validate(row) for row in rows]


def authenticate(store: ServiceStore, authorization: str | None) -> KeyRecord:
    """The key an ``Authorization: Bearer KEY`` header names, if issued and not revoked."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise UnknownApiKeyError(
            "no API key: send it as `Authorization: Bearer KEY`; the vendor issues keys "
            "with `photoimmune service key add`"
        )
    with store.read() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.key_sha256 == _digest(key.strip())))
        found = row.first()
        if found is None:
            raise UnknownApiKeyError(
                "this API key is not one the service issued; check it was copied whole"
            )
        record = KeyRecord.model_validate(found)
    if record.revoked_at is not None:
        raise RevokedApiKeyError(
            f"API key {record.name!r} was revoked; ask the vendor for a new one"
        )
    return record


def charge(store: ServiceStore, key: KeyRecord, images: int = 1) -> None:
    """Count ``images`` against ``key``'s quota, or refuse (429) if that would pass it."""
    with store.write() as session:
        result = session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key.id,
                (ApiKey.quota_images.is_(None))
                | (ApiKey.used_images + images <= ApiKey.quota_images),
            )
            .values(used_images=ApiKey.used_images + images)
        )
        if not getattr(result, "rowcount", 0):
            raise RateLimitedError(
                f"API key {key.name!r} has used its quota of {key.quota_images} images; "
                "ask the vendor to raise it (`photoimmune service key add` issues new keys)",
                retry_after_s=3600,
            )


class RateLimiter:
    """A token bucket per key: ``rate`` requests a minute, bursts of up to ``rate``.

    Example:
        >>> limiter = RateLimiter()
        >>> limiter.take(1, rate=1)
        >>> limiter.take(1, rate=1)
        Traceback (most recent call last):
        ...
        photoimmune.service.errors.RateLimitedError: more than 1 requests a minute ...
    """

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, key_id: int, *, rate: int) -> None:
        per_second = rate / 60
        with self._lock:
            now = time.monotonic()
            tokens, then = self._buckets.get(key_id, (float(rate), now))
            tokens = min(float(rate), tokens + (now - then) * per_second)
            if tokens < 1:
                wait = math.ceil((1 - tokens) / per_second)
                raise RateLimitedError(
                    f"more than {rate} requests a minute with this key; retry in {wait} s "
                    "(Retry-After), or ask the vendor for a higher rate",
                    retry_after_s=wait,
                )
            self._buckets[key_id] = (tokens - 1, now)
