"""The registry's HTTP API (FastAPI).

Reads are what TUF clients fetch; writes carry metadata signed by the keys
that may make that change, so the signatures are the authentication:

* ``GET  /metadata/timestamp.json``, ``GET /metadata/<v>.<role>.json``
* ``GET  /targets/<vendor>/<model>/<version>/<sha256>.<name>``
* ``POST /admin/root``     a new root, signed by the old and the new root keys
* ``POST /admin/targets``  new top-level targets, signed by the targets key
* ``POST /vendors/<vendor>/releases``  multipart: ``metadata`` (the vendor role,
  signed by the vendor's threshold) and one part per new target file, named by
  its target path.

Example:
    photoimmune registry serve my-registry --port 8470
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from .errors import ReleaseRejectedError, UnknownReleaseError
from .metadata import MAX_METADATA_BYTES
from .service import RegistryService

#: Largest upload accepted for one release (metadata plus tensors).
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
#: Writes handled at once. Each may hold a whole upload in memory while it is
#: verified, so this times MAX_UPLOAD_BYTES bounds the server's memory for writes.
MAX_CONCURRENT_WRITES = 4
#: Seconds a write's body may take to arrive, so slow senders can't hold every slot.
BODY_DEADLINE_S = 600.0
_JSON = "application/json"


def create_app(
    service: RegistryService,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_concurrent_writes: int = MAX_CONCURRENT_WRITES,
    body_deadline_s: float = BODY_DEADLINE_S,
) -> FastAPI:
    """The ASGI app serving ``service``.

    Request bodies are limited by the bytes that actually arrive, whatever the
    headers say; at most ``max_concurrent_writes`` writes run at once (others get
    503); signature checks run in worker threads, so reads never wait for them.

    Example:
        >>> app = create_app(RegistryService.open(Path("my-registry")))  # doctest: +SKIP
    """
    app = FastAPI(title="photoimmune registry", version="1")
    slots = _WriteSlots(max_concurrent_writes)

    @app.exception_handler(UnknownReleaseError)
    async def _not_found(_request: Request, exc: UnknownReleaseError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ReleaseRejectedError)
    async def _rejected(_request: Request, exc: ReleaseRejectedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/metadata/{filename}")
    def metadata(filename: str) -> Response:
        return Response(service.metadata_file(filename), media_type=_JSON)

    @app.get("/targets/{path:path}")
    def target(path: str) -> Response:
        return Response(service.target_file(path), media_type="application/octet-stream")

    @app.post("/admin/root")
    async def update_root(request: Request) -> dict:
        with slots.take():
            data = await _body(request, MAX_METADATA_BYTES, body_deadline_s)
            return {"version": await run_in_threadpool(service.update_root, data)}

    @app.post("/admin/targets")
    async def update_targets(request: Request) -> dict:
        with slots.take():
            data = await _body(request, MAX_METADATA_BYTES, body_deadline_s)
            return {"version": await run_in_threadpool(service.update_targets, data)}

    @app.post("/vendors/{vendor}/releases")
    async def publish(vendor: str, request: Request) -> dict:
        # Everything that can refuse without the body does so before reading it.
        _check_length(request, max_upload_bytes)
        await run_in_threadpool(service.check_vendor, vendor)
        with slots.take():
            meta, files = await _release_parts(request, max_upload_bytes, body_deadline_s)
            version = await run_in_threadpool(service.publish, vendor, meta, files)
        return {"vendor": vendor, "version": version}

    return app


class _WriteSlots:
    """A cap on concurrent writes that refuses (503) rather than queues when full.

    Queued uploads would still be held in memory or in sockets; refusing tells the
    client to come back. Only the event loop's thread touches the counter.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        if self.used >= self.limit:
            raise HTTPException(
                503,
                f"the registry is handling {self.limit} uploads already; retry in a minute",
                headers={"Retry-After": "60"},
            )
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1


async def _release_parts(
    request: Request, limit: int, deadline_s: float
) -> tuple[bytes, dict[str, bytes]]:
    """The multipart upload's signed metadata and its files, read within the limits."""
    limited = _limited(request, limit)
    with _deadline(deadline_s):
        async with limited.form(max_files=64, max_part_size=limit) as form:
            meta = form.get("metadata")
            if not isinstance(meta, UploadFile):
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


def _check_length(request: Request, limit: int) -> None:
    """An early 413 for a body declared too long (the byte count still applies)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"request is {length} bytes; the limit is {limit}")


async def _body(request: Request, limit: int, deadline_s: float) -> bytes:
    _check_length(request, limit)
    with _deadline(deadline_s):
        return await _limited(request, limit).body()
