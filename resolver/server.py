"""The resolver's HTTP API: lookups by soft-binding code, and the signed assets they find.

``GET /v1/lookup?alg=io.iscc.v0&code=<16 hex digits>`` answers the stored assets
whose code is within :data:`~photoimmune.sdk.softbinding.MATCH_BITS` bits,
nearest first; ``GET /v1/assets/{id}`` answers one asset's signed bytes (its
manifest store and the pixels a verifier compares). A lookup carries a 64-bit
code, never an image. HEAD is answered wherever GET is. Bad input gets a 4xx JSON
``{"detail": "<what is wrong and what to send>"}``, one string, never the whole input.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from photoimmune.sdk.database import redact_error
from photoimmune.sdk.serving import answer_head, excerpt, repeated_names
from photoimmune.sdk.softbinding import ALGORITHM, MATCH_BITS

from .errors import UnknownAssetError
from .match import LookupAnswer
from .store import ManifestStore

logger = logging.getLogger(__name__)
_HEX_CODE = r"^[0-9a-fA-F]{16}$"
# The store's ids are 64-bit SQL integers, which a larger number overflows.
_MAX_ASSET_ID = 2**63 - 1

#: What to send instead, by parameter name: the one message a bad value gets.
_ADVICE = {
    "code": (
        "code must be 16 hex digits: the image's 64-bit soft-binding code "
        f"({ALGORITHM}), which `photoimmune verify --resolver URL` computes and sends"
    ),
    "asset_id": (
        "asset ids are whole numbers written plainly (ASCII digits, no sign, leading zeros, "
        f"spaces or separators, at most {_MAX_ASSET_ID}), as lookups answer them and "
        "`photoimmune manifests add` lists them"
    ),
}
_ENDPOINTS = "GET /v1/lookup?alg=...&code=..., GET /v1/assets/{id} and GET /v1/health"


def _canonical_id(value: object) -> object:
    # int() alone would also take "+1", " 1", "01", "1_0" and "1.0": one asset, many URLs.
    if isinstance(value, str) and not re.fullmatch(r"0|[1-9][0-9]*", value):
        raise ValueError("not a canonical asset id")
    return value


_AssetId = Annotated[
    int,
    BeforeValidator(_canonical_id),
    Path(ge=0, le=_MAX_ASSET_ID, description="the asset's id"),
]


def _problem(error: dict[str, Any]) -> str:
    """One validation error as advice: what to send, and the start of what was sent."""
    where: Sequence[Any] = error.get("loc", ())
    name = str(where[-1]) if where else "request"
    advice = _ADVICE.get(name, f"{name}: {error.get('msg', 'invalid')}")
    if error.get("type") == "missing":
        return f"{name} is missing; {advice}"
    return f"{advice}; got {excerpt(error.get('input'))!r}"


async def _single_valued(request: Request) -> None:
    # Which of two values would win is the framework's whim, not something to rely on.
    # async: it reads only the URL, and a plain function would cost a thread's hand-off.
    repeated = repeated_names(request.query_params.multi_items())
    if repeated:
        raise HTTPException(
            400,
            detail=f"query parameter {excerpt(repeated[0])!r} is given more than once; "
            "send each parameter once",
        )


def create_app(store: ManifestStore) -> FastAPI:
    """The ASGI app serving ``store``.

    Example:
        >>> app = create_app(ManifestStore("sqlite:///manifests.db"))  # doctest: +SKIP
    """
    app = FastAPI(
        title="photoimmune manifest resolver",
        version="1",
        dependencies=[Depends(_single_valued)],
    )

    @app.exception_handler(UnknownAssetError)
    async def _not_found(_request: Request, exc: UnknownAssetError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(SQLAlchemyError)
    async def _store_down(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # The database went away under a running server: the client can only wait.
        first_line = "".join(str(getattr(exc, "orig", None) or exc).splitlines()[:1])
        reason = redact_error(first_line, store.url)
        logger.warning("manifest store unavailable: %s", reason)
        return JSONResponse(
            {"detail": "the manifest store's database is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(_problem(error) for error in exc.errors())
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing's own 404 and 405 carry bare phrases ("Not Found"): say what is served.
        detail, headers = str(exc.detail), exc.headers
        if exc.status_code == 404:
            path = excerpt(request.url.path)
            detail = f"no such endpoint {path!r}; this resolver answers {_ENDPOINTS}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed; this resolver answers {_ENDPOINTS}"
            # Every path here takes both, but routing names only its GET route's method.
            headers = {"Allow": "GET, HEAD"}
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    # Not async: a lookup first asks the database for codes added since the last one, and
    # a database that hangs must not hang the event loop (and every other request) with it.
    @app.get("/v1/lookup")
    def lookup(
        code: str = Query(pattern=_HEX_CODE, description="the 64-bit code, 16 hex digits"),
        alg: str = Query(default=ALGORITHM, description="the soft-binding algorithm"),
    ) -> LookupAnswer:
        if alg != ALGORITHM:
            unknown = f"unknown soft-binding algorithm {excerpt(alg)!r}"
            raise HTTPException(400, detail=f"{unknown}; this store holds {ALGORITHM}")
        return LookupAnswer(alg=ALGORITHM, max_bits=MATCH_BITS, matches=store.lookup(int(code, 16)))

    @app.get("/v1/assets/{asset_id}")
    def asset(asset_id: _AssetId) -> Response:
        data, media_type = store.asset(asset_id)
        return Response(data, media_type=media_type)

    @app.get("/v1/health")
    def health() -> dict:
        return {"assets": store.count(), "alg": ALGORITHM}

    answer_head(app)
    return app
