"""What a lookup answers: what the store sends and the client reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from photoimmune.sdk.softbinding import Region


class Match(BaseModel):
    """A stored asset whose code is near the query's, and the region that code covers."""

    model_config = ConfigDict(frozen=True)

    asset: int
    distance: int
    region: Region


class LookupAnswer(BaseModel):
    """``GET /v1/lookup``'s body: the soft-binding algorithm, how near a code must be, and
    the stored assets found, nearest first."""

    model_config = ConfigDict(frozen=True)

    alg: str = Field(description="the soft-binding algorithm the codes are of")
    max_bits: int = Field(description="the most bits a match's code differs from the query's")
    matches: list[Match]
