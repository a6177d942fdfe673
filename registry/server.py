"""The registry's HTTP API (FastAPI).

Reads are what TUF clients fetch; writes carry metadata signed by the keys
that may make that change, so the signatures are the authentication:

* ``GET  /metadata/timestamp.json``, ``GET /metadata/<v>.<role>.json``
* ``GET  /targets/<vendor>/<model>/<version>/<sha256>.<name>``
  (both reads also answer ``HEAD``, for caches and mirrors)
* ``POST /admin/root``     a new root, signed by the old and the new root keys
* ``POST /admin/targets``  new top-level targets, signed by the targets key
* ``POST /vendors/<vendor>/releases``  multipart: ``metadata`` (the vendor role,
  signed by the vendor's threshold) and one part per new target file, named by
  its target path.

Example:
    photoimmune registry serve my-registry --port 8470
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import NoReturn

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from photoimmune.sdk.serving import answer_head, excerpt, repeated_names

from .errors import (
    QuotaExceededError,
    ReleaseRejectedError,
    UnknownReleaseError,
    UnknownVendorError,
)
from .metadata import MAX_METADATA_BYTES, NewVersion, PublishedRelease
from .service import RegistryService

#: Largest upload accepted for one release (metadata plus tensors).
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
#: Vendor uploads handled at once. Each may hold a whole upload in memory while it is
#: verified, so this times MAX_UPLOAD_BYTES bounds the server's memory for uploads.
#: One vendor name gets at most half of them (rounded up), so a flood at one vendor's
#: upload URL leaves room for the others.
MAX_CONCURRENT_WRITES = 4
#: Posts to ``/admin/*`` handled at once: their own capacity, because anyone can send
#: them (only the offline keys make one succeed), and they must never take a slot a
#: vendor's upload needs. Each holds at most MAX_METADATA_BYTES.
MAX_CONCURRENT_ADMIN_WRITES = 2
#: Seconds a write's body may take to arrive, so slow senders can't hold every slot.
BODY_DEADLINE_S = 600.0
#: The same for ``/admin/*`` bodies, which are metadata only (at most MAX_METADATA_BYTES).
METADATA_DEADLINE_S = 60.0
#: Seconds a write refused with 503 is told to wait (``Retry-After``).
RETRY_AFTER_S = 5
_JSON = "application/json"
logger = logging.getLogger(__name__)


def create_app(
    service: RegistryService,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_concurrent_writes: int = MAX_CONCURRENT_WRITES,
    max_concurrent_admin_writes: int = MAX_CONCURRENT_ADMIN_WRITES,
    body_deadline_s: float = BODY_DEADLINE_S,
    metadata_deadline_s: float = METADATA_DEADLINE_S,
) -> FastAPI:
    """The ASGI app serving ``service``.

    Request bodies are limited by the bytes that actually arrive, whatever the
    headers say. Whatever can be refused from the headers is refused before a write
    slot is taken. At most ``max_concurrent_writes`` vendor uploads (half of them
    for one vendor) and, separately, ``max_concurrent_admin_writes`` posts to
    ``/admin/*`` run at once; others get 503 with ``Retry-After``. Signature checks
    run in worker threads, so reads never wait for them.

    Example:
        >>> app = create_app(RegistryService.open(Path("my-registry")))  # doctest: +SKIP
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blobs a killed publish wrote before its commit (a failed one removes its own).
        try:
            removed = await run_in_threadpool(service.store.remove_orphan_blobs)
        except Exception as err:  # serving matters more than tidying
            logger.warning("could not look for orphan blobs: %s", err)
        else:
            if removed:
                logger.warning("removed %d blob(s) that no release names", removed)
        yield

    app = FastAPI(title="photoimmune registry", version="1", lifespan=lifespan)
    uploads = _WriteSlots("vendor uploads", max_concurrent_writes, per_key=True)
    admin = _WriteSlots("admin writes", max_concurrent_admin_writes)

    @app.exception_handler(UnknownReleaseError)
    @app.exception_handler(UnknownVendorError)
    async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ReleaseRejectedError)
    async def _rejected(_request: Request, exc: ReleaseRejectedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(QuotaExceededError)
    async def _over_quota(_request: Request, exc: QuotaExceededError) -> JSONResponse:
        body = {
            "detail": str(exc),
            "vendor": exc.vendor,
            "quota_bytes": exc.quota,
            "used_bytes": exc.used,
            "release_bytes": exc.adds,
        }
        return JSONResponse(body, status_code=413)

    @app.get("/metadata/{filename}")
    def metadata(filename: str) -> Response:
        return Response(service.metadata_file(filename), media_type=_JSON)

    @app.get("/targets/{path:path}")
    def target(path: str) -> Response:
        return Response(service.target_file(path), media_type="application/octet-stream")

    @app.post("/admin/root")
    async def update_root(request: Request) -> NewVersion:
        _check_metadata_post(request)
        with admin.take():
            data = await _body(request, MAX_METADATA_BYTES, metadata_deadline_s)
            return NewVersion(version=await run_in_threadpool(service.update_root, data))

    @app.post("/admin/targets")
    async def update_targets(request: Request) -> NewVersion:
        _check_metadata_post(request)
        with admin.take():
            data = await _body(request, MAX_METADATA_BYTES, metadata_deadline_s)
            return NewVersion(version=await run_in_threadpool(service.update_targets, data))

    @app.post("/vendors/{vendor}/releases")
    async def publish(vendor: str, request: Request) -> PublishedRelease:
        # Everything that can refuse without the body does so before reading it (an
        # unknown vendor, one whose storage quota is used up); a release that would go
        # past the quota is refused (413) before any of its files is stored.
        _check_length(request, max_upload_bytes)
        _check_multipart(request)
        await run_in_threadpool(service.check_vendor, vendor)
        with uploads.take(vendor):
            meta, files = await _release_parts(request, max_upload_bytes, body_deadline_s)
            version = await run_in_threadpool(service.publish, vendor, meta, files)
        return PublishedRelease(vendor=vendor, version=version)

    answer_head(app)
    return app


class _WriteSlots:
    """A cap on concurrent writes of one kind that refuses (503) rather than queues.

    Queued uploads would still be held in memory or in sockets; refusing tells the
    client to come back. With ``per_key``, one key (a vendor name) holds at most half
    of the slots, rounded up. Only the event loop's thread touches the counters.
    """

    def __init__(self, kind: str, limit: int, *, per_key: bool = False) -> None:
        self.kind = kind
        self.limit = limit
        self.key_limit = (limit + 1) // 2 if per_key else limit
        self.used = 0
        self.by_key: dict[str, int] = {}

    @contextmanager
    def take(self, key: str = "") -> Iterator[None]:
        if self.used >= self.limit:
            self._refuse(f"the registry is handling {self.limit} {self.kind} already")
        if self.by_key.get(key, 0) >= self.key_limit:
            self._refuse(f"the registry is handling {self.key_limit} {self.kind} for {key} already")
        self.used += 1
        self.by_key[key] = self.by_key.get(key, 0) + 1
        try:
            yield
        finally:
            self.used -= 1
            self.by_key[key] -= 1
            if not self.by_key[key]:
                del self.by_key[key]

    @staticmethod
    def _refuse(why: str) -> NoReturn:
        raise HTTPException(
            503,
            f"{why}; retry in {RETRY_AFTER_S} s or later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


async def _release_parts(
    request: Request, limit: int, deadline_s: float
) -> tuple[bytes, dict[str, bytes]]:
    """The multipart upload's signed metadata and its files, read within the limits."""
    limited = _limited(request, limit)
    with _deadline(deadline_s):
        async with limited.form(max_files=64, max_part_size=limit) as form:
            repeated = repeated_names(form.multi_items())
            if repeated:
                raise HTTPException(
                    400,
                    f"multipart part {excerpt(repeated[0])!r} is sent more than once; send one "
                    "'metadata' part and one part per new target file, each once",
                )
            meta = form.get("metadata")
            if isinstance(meta, str):
                raise HTTPException(
                    422,
                    "multipart part 'metadata' is a plain form field; send the signed vendor "
                    "role as a file part (curl: -F 'metadata=@metadata.json')",
                )
            if meta is None:
                raise HTTPException(
                    422, "multipart part 'metadata' (the signed vendor role) is missing"
                )
            files = {
                name: await part.read()
                for name, part in form.multi_items()
                if name != "metadata" and isinstance(part, UploadFile)
            }
            return await meta.read(), files


def _limited(request: Request, limit: int) -> Request:
    """``request`` with a body cut off (413) once more than ``limit`` bytes have arrived.

    Counting what arrives, rather than trusting Content-Length, also bounds chunked
    bodies and bodies whose declared length is a lie.
    """
    receive = request.receive
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise HTTPException(413, f"request body exceeds {limit} bytes; upload less at a time")
        return message

    return Request(request.scope, counted)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise HTTPException(
            408, f"request body took longer than {seconds:.0f} s to arrive; send it faster"
        ) from None


def _check_metadata_post(request: Request) -> None:
    """Refuse, from the headers alone, a post to ``/admin/*`` that can't be metadata."""
    _check_length(request, MAX_METADATA_BYTES)
    if _media_type(request).startswith("multipart/"):
        raise HTTPException(
            415,
            "send the signed metadata itself as the request body (JSON), not a form; "
            "releases go to /vendors/<vendor>/releases",
        )


def _check_multipart(request: Request) -> None:
    """Refuse, from the headers alone, an upload that isn't a multipart form."""
    if _media_type(request) != "multipart/form-data":
        raise HTTPException(
            415,
            "a release is a multipart/form-data upload: part 'metadata' (the signed vendor "
            "role) and one part per new target file",
        )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _check_length(request: Request, limit: int) -> None:
    """An early 413 for a body declared too long (the byte count still applies)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"request is {length} bytes; the limit is {limit}")


async def _body(request: Request, limit: int, deadline_s: float) -> bytes:
    with _deadline(deadline_s):
        return await _limited(request, limit).body()
