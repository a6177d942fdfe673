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

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from .errors import ReleaseRejectedError, UnknownReleaseError
from .metadata import MAX_METADATA_BYTES
from .service import RegistryService

#: Largest upload accepted for one release (metadata plus tensors).
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
_JSON = "application/json"


def create_app(service: RegistryService) -> FastAPI:
    """The ASGI app serving ``service``.

    Example:
        >>> app = create_app(RegistryService.open(Path("my-registry")))  # doctest: +SKIP
    """
    app = FastAPI(title="photoimmune registry", version="1")

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
        return {"version": service.update_root(await _body(request, MAX_METADATA_BYTES))}

    @app.post("/admin/targets")
    async def update_targets(request: Request) -> dict:
        return {"version": service.update_targets(await _body(request, MAX_METADATA_BYTES))}

    @app.post("/vendors/{vendor}/releases")
    async def publish(vendor: str, request: Request) -> dict:
        # The declared length bounds the body (the server refuses a longer one), so a
        # chunked upload of unknown size is refused before anything is read.
        if request.headers.get("content-length") is None:
            raise HTTPException(411, "send Content-Length with a release upload")
        _check_length(request, MAX_UPLOAD_BYTES)
        form = await request.form(max_files=64, max_part_size=MAX_UPLOAD_BYTES)
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
        version = service.publish(vendor, await meta.read(), files)
        return {"vendor": vendor, "version": version}

    return app


def _check_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"request is {length} bytes; the limit is {limit}")


async def _body(request: Request, limit: int) -> bytes:
    _check_length(request, limit)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request exceeds {limit} bytes")
    return body
