"""A running service's parts, and what a request does with them.

:class:`Service` holds the database, the registry's offer, the vendor's
signer, the limits and the engine that answers ``POST /v1/immunize`` at once.
The HTTP layer (:mod:`.app`) only translates: every rule lives here.

Example:
    >>> service = Service.open("sqlite:///service.db", "out/demo/registry",
    ...                        "out/demo/keys")  # doctest: +SKIP
    >>> key = service.admit("Bearer pik_...")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from photoimmune.sdk.codec import DecodedImage, decode_image
from photoimmune.sdk.keys import ManifestSigner, resolve_signer

from . import jobs
from .apikeys import KeyRecord, RateLimiter, authenticate, charge
from .errors import ServiceError, UploadError, UploadTooLargeError
from .jobs import JobSpec
from .offer import Offer
from .settings import ServiceSettings
from .store import ServiceStore
from .worker import Engines, sign_result


class ImmunizationFailedError(ServiceError):
    """The immunization itself failed (out of memory, a device error): retry later."""

    status = 503
    header_items = (("Retry-After", "30"),)


@dataclass
class Service:
    """Everything one service process holds."""

    store: ServiceStore
    offer: Offer
    signer: ManifestSigner
    settings: ServiceSettings
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def __post_init__(self) -> None:
        self.engines = Engines(self.offer, self.settings)  # the immediate answers' (local)
        self._compute = threading.Lock()  # one immediate immunization at a time per process

    @classmethod
    def open(
        cls,
        db: str,
        registry: str | os.PathLike[str],
        keys: str | os.PathLike[str],
        settings: ServiceSettings | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        check_weights: bool = False,
        created_by: str | None = None,
    ) -> Service:
        """The service over database ``db``, the registry at ``registry`` (a folder, or a URL
        with its ``root.json``), signing with the vendor key of the key folder ``keys``.

        With ``check_weights`` the local weights are checked against the releases
        (:meth:`Offer.check_weights`) before the database is opened, so a refused start
        leaves no new database behind. With ``created_by`` (the command that creates it) an
        SQLite database must exist already (:func:`~photoimmune.sdk.database.open_database`).
        """
        from photoimmune.registry.client import connect

        settings = settings or ServiceSettings()
        client = connect(registry, None if root is None else Path(root))
        signer = resolve_signer(keys_dir=keys, role="vendor")
        offer = Offer(client, settings)
        if check_weights:
            offer.check_weights()
        return cls(ServiceStore(db, created_by=created_by), offer, signer, settings)

    def admit(self, authorization: str | None, *, images: int = 0) -> KeyRecord:
        """The caller's key, checked, rate-limited and (for ``images``) charged its quota."""
        key = authenticate(self.store, authorization)
        if images:
            self.limiter.take(key.id, rate=key.rate_per_minute or self.settings.rate_per_minute)
            charge(self.store, key, images)
        return key

    def check_upload(
        self, data: bytes, models: str | None, eps: str | None, fmt: str
    ) -> tuple[DecodedImage, JobSpec]:
        """The decoded upload and what to make of it, or a 4xx saying what is wrong."""
        if len(data) > self.settings.max_upload_bytes:
            raise UploadTooLargeError(
                f"the image is {len(data)} bytes, over this service's limit of "
                f"{self.settings.max_upload_bytes}; downscale or recompress it"
            )
        image = decode_image(
            data,
            max_pixels=self.settings.max_pixels,
            max_bytes=self.settings.max_upload_bytes,
            name="the uploaded image",
        )
        targets = self.offer.targets(models)
        spec = JobSpec(
            targets=tuple((str(t.ref), t.digest) for t in targets),
            eps=self.offer.budget(targets, eps),
            steps=self.settings.steps,
            format=fmt,  # type: ignore[arg-type]
        )
        return image, spec

    def immunize_now(self, image: DecodedImage, data: bytes, spec: JobSpec) -> bytes:
        """The signed immunized file, computed in this process (small images only)."""
        from photoimmune.sdk.jobs.worker import WorkOrder

        pixels = image.width * image.height
        if pixels > self.settings.max_sync_pixels:
            raise UploadTooLargeError(
                f"{image.width}x{image.height} is over the {self.settings.max_sync_pixels} "
                "pixels answered at once; send it to POST /v1/jobs and poll the job"
            )
        with self._compute:
            engine = self.engines.get(spec, engine="local")
            engine.submit(WorkOrder(item_id=0, data=data))
            output = engine.next_done()
        if output.error is not None:
            if output.permanent:
                raise UploadError(output.error)
            raise ImmunizationFailedError(f"immunization failed ({output.error}); retry later")
        return sign_result(output, spec, self.signer, data)

    def submit_job(self, key: KeyRecord, image: DecodedImage, data: bytes, spec: JobSpec) -> str:
        return jobs.submit(self.store, key, data, spec, (image.width, image.height))

    def close(self) -> None:
        self.engines.close()
        self.store.dispose()


class OfferDescription(BaseModel):
    """``GET /v1/models``'s body: what a client may ask for, and the limits it meets."""

    model_config = ConfigDict(frozen=True)

    models: list[str] = Field(description="vendor/model names the service immunizes against")
    default_eps: str | None = Field(
        description="the L∞ budget used when none is asked for (null: no model offered)"
    )
    max_eps: str = Field(description="the largest L∞ budget a client may ask for")
    formats: list[str] = Field(description="the formats the signed result may be written in")
    max_upload_bytes: int = Field(description="the largest upload accepted, in bytes")
    max_sync_pixels: int = Field(description="the most pixels POST /v1/immunize answers at once")


def describe_offer(service: Service) -> OfferDescription:
    """``GET /v1/models``: what a client may ask for."""
    models = service.offer.models()
    default_eps = None
    if models:
        default_eps = service.offer.budget(service.offer.targets(None), None)
    return OfferDescription(
        models=models,
        default_eps=default_eps,
        max_eps=service.settings.max_eps,
        formats=list(jobs.MEDIA_TYPES),
        max_upload_bytes=service.settings.max_upload_bytes,
        max_sync_pixels=service.settings.max_sync_pixels,
    )
