"""The resolver's HTTP API: lookups by soft-binding code, and the signed assets they find.

``GET /v1/lookup?alg=io.iscc.v0&code=<16 hex digits>`` answers the stored assets
whose code is within :data:`~photoimmune.sdk.softbinding.MATCH_BITS` bits,
nearest first; ``GET /v1/assets/{id}`` answers one asset's signed bytes (its
manifest store and the pixels a verifier compares). A lookup carries a 64-bit
code, never an image. Bad input gets a 4xx JSON ``{"detail": ...}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from photoimmune.sdk.softbinding import ALGORITHM, MATCH_BITS

from .errors import UnknownAssetError
from .match import LookupAnswer
from .store import ManifestStore

_HEX_CODE = r"^[0-9a-fA-F]{16}$"


def create_app(store: ManifestStore) -> FastAPI:
    """The ASGI app serving ``store``.

    Example:
        >>> app = create_app(ManifestStore("sqlite:///manifests.db"))  # doctest: +SKIP
    """
    app = FastAPI(title="photoimmune manifest resolver", version="1")

    @app.exception_handler(UnknownAssetError)
    async def _not_found(_request: Request, exc: UnknownAssetError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    # async: a lookup is a sub-millisecond scan of an in-memory array, cheaper than the
    # hand-off to a worker thread (which on a busy machine waits for a time slice).
    @app.get("/v1/lookup")
    async def lookup(
        code: str = Query(pattern=_HEX_CODE, description="the 64-bit code, 16 hex digits"),
        alg: str = Query(default=ALGORITHM, description="the soft-binding algorithm"),
    ) -> LookupAnswer:
        if alg != ALGORITHM:
            raise HTTPException(
                400, detail=f"unknown soft-binding algorithm {alg!r}; this store holds {ALGORITHM}"
            )
        return LookupAnswer(alg=ALGORITHM, max_bits=MATCH_BITS, matches=store.lookup(int(code, 16)))

    @app.get("/v1/assets/{asset_id}")
    def asset(
        # bounded: the store's ids are 64-bit SQL integers, which a larger number overflows
        asset_id: Annotated[int, Path(ge=-(2**63), le=2**63 - 1, description="the asset's id")],
    ) -> Response:
        data, media_type = store.asset(asset_id)
        return Response(data, media_type=media_type)

    @app.get("/v1/health")
    def health() -> dict:
        return {"assets": store.count(), "alg": ALGORITHM}

    return app
