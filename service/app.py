"""The service's HTTP API (FastAPI), its OpenAPI docs and its web page.

* ``GET  /``                      the web page (``service/web/``; nothing from elsewhere)
* ``GET  /v1/models``             what a client may ask for: models, budgets, formats, limits
* ``POST /v1/immunize``           multipart ``image`` (+ ``models``, ``eps``, ``format``):
                                  200 with the signed immunized file
* ``POST /v1/jobs``               the same, queued: 202 and the job's URL
* ``GET  /v1/jobs/{id}``          the job's state and queue position
* ``GET  /v1/jobs/{id}/result``   the signed file of a finished job
* ``GET  /docs``, ``/openapi.json``  the API's documentation

Every error is JSON, ``{"error": "... what to do"}``, with a 4xx status for
whatever the client can fix (401 no key, 403 revoked, 413 too large, 422 an
unknown model or ε above the maximum, 429 rate or quota).

Example:
    >>> app = create_app(Service.open("sqlite:///s.db", "reg", "keys"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photoimmune.sdk.errors import ImageTooLargeError, InputError, PhotoimmuneError

from . import jobs
from .apikeys import KeyRecord
from .errors import ServiceError
from .runtime import OfferDescription, Service, describe_offer

WEB = Path(__file__).parent / "web"
#: Multipart overhead allowed beyond the image's own limit (the other fields, boundaries).
FORM_OVERHEAD_BYTES = 64 << 10
logger = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="An API key: `photoimmune service key add`")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
Image = Annotated[UploadFile, File(description="The photo: PNG, JPEG, WebP, ...")]
Models = Annotated[
    str | None, Form(description="Comma-separated vendor/model; default: every model offered")
]
Eps = Annotated[str | None, Form(description="L∞ budget, e.g. 8/255; default: recommended")]
Format = Annotated[Literal["png", "jpeg", "webp"], Form(description="The result's format")]


def create_app(service: Service) -> FastAPI:
    """The ASGI app of ``service``: the API, the docs and the web page.

    Example:
        >>> from fastapi.testclient import TestClient
        >>> service = Service.open("sqlite:///s.db", "out/demo/registry",
        ...                        "out/demo/keys")  # doctest: +SKIP
        >>> TestClient(create_app(service)).get("/v1/models").json()["formats"]  # doctest: +SKIP
        ['png', 'jpeg', 'webp']
    """
    app = FastAPI(
        title="photoimmune immunization service",
        version="1",
        description="Immunizes photos against the vendor's current models and signs them (C2PA).",
    )
    _error_handlers(app)
    app.add_middleware(BodyLimit, limit=service.settings.max_upload_bytes + FORM_OVERHEAD_BYTES)

    def auth(credentials: HTTPAuthorizationCredentials | None, images: int = 0) -> KeyRecord:
        header = None if credentials is None else f"Bearer {credentials.credentials}"
        return service.admit(header, images=images)

    def admitted(credentials: Bearer) -> KeyRecord:
        return auth(credentials)

    async def one_upload(request: Request, _key: KeyRecord = Depends(admitted)) -> None:
        """401/403 before the upload is looked at; then each form field once.

        FastAPI would keep the last of two ``image`` parts and immunize that one,
        whichever photo the client meant.
        """
        counts = Counter(name for name, _ in (await request.form()).multi_items())
        repeated = sorted(name for name, n in counts.items() if n > 1)
        if repeated:
            raise InputError(
                f"the form gives {', '.join(repeated)} more than once; send one photo, "
                "and each field once, per request"
            )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        files = {p.name: p for p in WEB.iterdir() if p.suffix in (".js", ".css")}
        if name not in files:
            raise HTTPException(404, f"no file {name!r}; the page's files are app.js, app.css")
        return FileResponse(files[name])

    @app.get("/v1/models")
    def models() -> OfferDescription:
        """The models a client may immunize against, budgets, formats and limits."""
        return describe_offer(service)

    @app.post("/v1/immunize", responses={200: {"content": {"image/png": {}}}})
    def immunize(
        image: Image,
        credentials: Bearer,
        _admitted: None = Depends(one_upload),  # a local function: no Annotated alias
        models: Models = None,
        eps: Eps = None,
        format: Format = "png",
    ) -> Response:
        """Immunize one photo now: the signed immunized file (for images up to the limit)."""
        data = _read(image)
        decoded, spec = service.check_upload(data, models, eps, format)
        auth(credentials, images=1)  # rate and quota: only for work the service will do
        signed = service.immunize_now(decoded, data, spec)
        return Response(signed, media_type=jobs.MEDIA_TYPES[spec.format], headers=_about(spec))

    @app.post("/v1/jobs", status_code=202)
    def submit(
        image: Image,
        credentials: Bearer,
        _admitted: None = Depends(one_upload),  # a local function: no Annotated alias
        models: Models = None,
        eps: Eps = None,
        format: Format = "png",
    ) -> JSONResponse:
        """Queue one photo (any size up to the upload limit); poll the job's URL."""
        data = _read(image)
        decoded, spec = service.check_upload(data, models, eps, format)
        key = auth(credentials, images=1)
        job_id = service.submit_job(key, decoded, data, spec)
        url = f"/v1/jobs/{job_id}"
        return JSONResponse(
            {"id": job_id, "url": url, "result_url": f"{url}/result"},
            status_code=202,
            headers={"Location": url},
        )

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str, credentials: Bearer) -> jobs.JobStatus:
        """A job's state: queued (and how many are ahead), running, done or failed."""
        return jobs.status(service.store, auth(credentials), job_id)

    @app.get("/v1/jobs/{job_id}/result", responses={200: {"content": {"image/png": {}}}})
    def job_result(job_id: str, credentials: Bearer) -> Response:
        """The signed immunized file of a finished job."""
        data, media_type = jobs.result(service.store, auth(credentials), job_id)
        return Response(data, media_type=media_type)

    return app


def _read(image: UploadFile) -> bytes:
    """The upload's bytes (BodyLimit bounded what was spooled)."""
    image.file.seek(0)
    return image.file.read()


def _about(spec: jobs.JobSpec) -> dict[str, str]:
    """Response headers that say what the file is immunized against."""
    return {
        "Content-Disposition": f'attachment; filename="immunized.{spec.format}"',
        "X-Photoimmune-Targets": ",".join(ref for ref, _ in spec.targets),
        "X-Photoimmune-Eps": spec.eps,
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}``; what the client can fix as a 4xx."""

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, str(exc), dict(exc.header_items))

    @app.exception_handler(InputError)
    async def input_error(_request: Request, exc: InputError) -> JSONResponse:
        status = 413 if isinstance(exc, ImageTooLargeError) else 400
        return _error(status, str(exc))

    @app.exception_handler(PhotoimmuneError)
    async def failure(_request: Request, exc: PhotoimmuneError) -> JSONResponse:
        logger.warning("service: %s", exc)
        return _error(503, f"{exc}; retry later", {"Retry-After": "30"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return _error(422, f"{problems}; see /docs for the fields each endpoint takes")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message += "; the API's operations and their methods are listed at /docs"
        return _error(exc.status_code, message, getattr(exc, "headers", None))


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, whatever its headers say.

    Counting what arrives, rather than trusting Content-Length, also bounds chunked
    bodies; the app sees a disconnect and its answer is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received, over = 0, False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def unless_over(message: Message) -> None:
            if not over:
                await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except Exception:
            if not over:
                raise
        if over:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await _error(
            413, f"the request is over {self.limit} bytes; downscale or recompress the image"
        )({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
