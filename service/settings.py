"""What a vendor configures about its service: limits, budgets, where work runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from photoimmune.sdk.limits import Steps


class ServiceSettings(BaseModel):
    """The service's limits and defaults (``photoimmune service serve`` options).

    Example:
        >>> ServiceSettings(max_eps="16/255").max_sync_pixels
        1048576
    """

    model_config = ConfigDict(frozen=True)

    max_upload_bytes: int = Field(default=20 << 20, gt=0, description="largest upload accepted")
    max_pixels: int = Field(
        default=1 << 26, gt=0, description="largest image decoded (decompression bombs)"
    )
    max_sync_pixels: int = Field(
        default=1 << 20, gt=0, description="largest image POST /v1/immunize answers at once"
    )
    max_eps: str = Field(default="16/255", description="largest ε a client may ask for")
    weights: dict[str, str] = Field(
        default_factory=dict,
        description="vendor/model -> its weights (a diffusers folder or a bundled name), for "
        "releases the registry's client cannot bind by itself",
    )
    steps: Steps | None = Field(default=None, description="PGD steps; None: the target's")
    rate_per_minute: int = Field(default=60, gt=0, description="default requests/min of a key")
    engine: Literal["local", "ray"] = "local"
    workers: int = Field(default=1, ge=0, description="worker processes (Ray actors with ray)")
    ray_address: str | None = None
    lease_seconds: float = Field(default=120, gt=0)
    max_attempts: int = Field(default=3, gt=0)
