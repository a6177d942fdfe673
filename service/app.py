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
whatever the client can fix (401 no key, 403 revoked, 408 a body too slow to
arrive, 413 too large, 422 an unknown model or ε above the maximum, 429 rate or
quota). An upload's key is checked from its headers, before any of its body is read.

Example:
    >>> app = create_app(Service.open("sqlite:///s.db", "reg", "keys"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photoimmune.sdk.errors import ImageTooLargeError, InputError, PhotoimmuneError
from photoimmune.sdk.serving import answer_head, excerpt, repeated_names

from . import jobs
from .apikeys import KeyRecord
from .errors import ServiceError
from .runtime import OfferDescription, Service, describe_offer

WEB = Path(__file__).parent / "web"
#: Multipart overhead allowed beyond the image's own limit (the other fields, boundaries).
FORM_OVERHEAD_BYTES = 64 << 10
#: Seconds a request body may take to arrive, so slow senders can't hold connections and
#: spooled uploads for ever: 20 MB (the default limit) arrives in under 3 min at 1 Mbit/s.
BODY_DEADLINE_S = 300.0
#: What to do about a form that can't be read; Starlette's and pydantic's words only say what broke.
PHOTO_PART = "send the photo as a multipart/form-data file part named image (with a filename)"
logger = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="An API key: `photoimmune service key add`")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
Image = Annotated[UploadFile, File(description="The photo: PNG, JPEG, WebP, ...")]
Models = Annotated[
    str | None, Form(description="Comma-separated vendor/model; default: every model offered")
]
Eps = Annotated[str | None, Form(description="L∞ budget, e.g. 8/255; default: recommended")]
Format = Annotated[Literal["png", "jpeg", "webp"], Form(description="The result's format")]


async def _one_of_each(request: Request) -> None:
    """Each form field once (KeyFirst checked the key before the form was read).

    FastAPI would keep the last of two ``image`` parts and immunize that one,
    whichever photo the client meant.
    """
    repeated = repeated_names((await request.form()).multi_items())
    if repeated:
        raise InputError(
            f"the form gives {', '.join(repeated)} more than once; send one photo, "
            "and each field once, per request"
        )


#: The upload endpoints' check that the form gives each field once.
OneOfEach = Annotated[None, Depends(_one_of_each)]


def create_app(service: Service, *, body_deadline_s: float = BODY_DEADLINE_S) -> FastAPI:
    """The ASGI app of ``service``: the API, the docs and the web page.

    A request body must arrive within ``body_deadline_s`` seconds (408).

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
    app.add_middleware(
        BodyLimit,
        limit=service.settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        deadline_s=body_deadline_s,
    )
    _routes(app, service)
    answer_head(app)
    # Added last, so outermost: the key is checked before any middleware or form sees the body.
    uploads = frozenset(
        r.path for r in app.routes if isinstance(r, APIRoute) and "POST" in (r.methods or set())
    )
    app.add_middleware(KeyFirst, service=service, paths=uploads)
    return app


def _routes(app: FastAPI, service: Service) -> None:
    """The page, its files and the API's operations."""

    def auth(credentials: HTTPAuthorizationCredentials | None, images: int = 0) -> KeyRecord:
        header = None if credentials is None else f"Bearer {credentials.credentials}"
        return service.admit(header, images=images)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        files = {p.name: p for p in WEB.iterdir() if p.suffix in (".js", ".css")}
        if name not in files:
            raise HTTPException(
                404, f"no file {excerpt(name)!r}; the page's files are app.js, app.css"
            )
        return FileResponse(files[name])

    @app.get("/v1/models")
    def models() -> OfferDescription:
        """The models a client may immunize against, budgets, formats and limits."""
        return describe_offer(service)

    @app.post("/v1/immunize", responses={200: {"content": {"image/png": {}}}})
    def immunize(
        image: Image,
        credentials: Bearer,
        _once: OneOfEach,
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
        _once: OneOfEach,
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


def _answer(exc: PhotoimmuneError) -> JSONResponse:
    """The JSON answer to an error of the service or the SDK, wherever it was raised."""
    if isinstance(exc, ServiceError):
        return _error(exc.status, str(exc), dict(exc.header_items))
    if isinstance(exc, InputError):
        return _error(413 if isinstance(exc, ImageTooLargeError) else 400, str(exc))
    logger.warning("service: %s", exc)
    return _error(503, f"{exc}; retry later", {"Retry-After": "30"})


def _error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}``; what the client can fix as a 4xx."""

    @app.exception_handler(PhotoimmuneError)
    async def failure(_request: Request, exc: PhotoimmuneError) -> JSONResponse:
        return _answer(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            # pydantic's words for an image sent as a text field name a Python class
            f"image: {PHOTO_PART}"
            if tuple(e.get("loc", ())) == ("body", "image")
            else f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return _error(422, f"{problems}; see /docs for the fields each endpoint takes")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message += "; the API's operations and their methods are listed at /docs"
        elif exc.status_code == 400:  # only the form's parser raises a 400 HTTPException here
            message = (
                f"the form could not be read ({message.rstrip('.')}); {PHOTO_PART}, and "
                "models, eps and format as short text fields"
            )
        return _error(exc.status_code, message, getattr(exc, "headers", None))


class KeyFirst:
    """ASGI middleware: a POST to one of ``paths`` without a valid key gets 401/403 from
    its headers alone, before any of its body is read.

    FastAPI reads and parses a form before it runs any dependency, so a check there
    would wait for an unauthenticated upload, and answer about it. The endpoints
    still charge the key's rate and quota, once they know the work is to be done.
    """

    def __init__(self, app: ASGIApp, service: Service, paths: frozenset[str]) -> None:
        self.app, self.service, self.paths = app, service, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = scope["type"] == "http" and scope["method"] == "POST"
        if upload and _route_path(scope) in self.paths:
            header = Headers(scope=scope).get("authorization")
            try:  # off the event loop: the key is looked up in the database
                await run_in_threadpool(self.service.admit, header)
            except PhotoimmuneError as exc:
                await _answer(exc)(scope, _no_receive, send)
                return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the app's routes see: mounted under a prefix (``root_path``), the full path
    starts with it, and matching the full path would let every upload past the key check."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, and one still
    arriving ``deadline_s`` seconds after the request began gets 408, whatever its
    headers say.

    Counting what arrives, rather than trusting Content-Length, also bounds chunked
    bodies; the deadline stops slow senders holding connections and spooled uploads.
    The app sees a disconnect and its answer is replaced by the refusal. The 408 also
    closes the connection: otherwise the server would go on reading, and discarding,
    whatever the slow sender still drips.
    """

    def __init__(self, app: ASGIApp, limit: int, deadline_s: float) -> None:
        self.app, self.limit, self.deadline_s = app, limit, deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large()(scope, _no_receive, send)
            return
        deadline = anyio.current_time() + self.deadline_s
        received, arriving = 0, True
        refusal: JSONResponse | None = None

        async def counted() -> Message:
            nonlocal received, arriving, refusal
            if refusal is not None:
                return {"type": "http.disconnect"}
            if not arriving:  # the body is in: what is left to hear is a disconnect, any time
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                received += len(message.get("body", b""))
                arriving = message.get("more_body", False)
                if received > self.limit:
                    refusal = self._too_large()
                    return {"type": "http.disconnect"}
                return message
            refusal = _error(
                408,
                f"the request body took over {self.deadline_s:.0f} s to arrive; retry on a "
                "faster connection, or send a smaller file",
                {"Connection": "close"},
            )
            return {"type": "http.disconnect"}

        async def unless_refused(message: Message) -> None:
            if refusal is None:
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None:
            await refusal(scope, _no_receive, send)

    def _too_large(self) -> JSONResponse:
        return _error(
            413, f"the request is over {self.limit} bytes; downscale or recompress the image"
        )


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
