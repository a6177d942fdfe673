"""One answer of a lookup: what the store sends and the client reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from photoimmune.sdk.softbinding import Region


class Match(BaseModel):
    """A stored asset whose code is near the query's, and the region that code covers."""

    model_config = ConfigDict(frozen=True)

    asset: int
    distance: int
    region: Region
