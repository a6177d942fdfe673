"""``plan()``: which catalogued originals lack protection against the latest subscribed releases.

A publisher subscribes to models (``vendor/model``), not versions: the plan
asks the registry for each model's newest release and lists every readable
original whose current immunized copy does not carry a protection against
all of them (the exact target: ref *and* digest). Those images are
re-immunized from the original against all the subscribed releases at once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict

from ..errors import InputError
from ..refs import ModelRef, check_model_name
from .catalog import Catalog

if TYPE_CHECKING:
    from ..targets import AttackTarget


class TargetKey(BaseModel):
    """One release's attack target, as a plan and the work queue name it."""

    model_config = ConfigDict(frozen=True)

    ref: str
    digest: str


class PlannedImage(BaseModel):
    """An original to (re-)immunize, and what its current copy resists."""

    model_config = ConfigDict(frozen=True)

    original_id: int
    location: str
    protected_against: tuple[str, ...]  # the current copy's targets; () if none
    missing: tuple[str, ...]  # subscribed releases it lacks


class Plan(BaseModel):
    """What a job will do: the target set, and the images that need it."""

    model_config = ConfigDict(frozen=True)

    models: tuple[str, ...]
    targets: tuple[TargetKey, ...]
    images: tuple[PlannedImage, ...]
    up_to_date: int  # readable originals already covered
    unreadable: dict[str, str]  # location -> why, from the catalog

    @property
    def targets_key(self) -> str:
        return targets_key(self.targets)


def targets_key(targets: Sequence[TargetKey]) -> str:
    """One id for a set of targets, independent of order: sha256 of the sorted digests.

    Example:
        >>> len(targets_key([TargetKey(ref="a/b@1", digest="00" * 32)]))
        64
    """
    joined = "\n".join(sorted(t.digest for t in targets))
    return hashlib.sha256(joined.encode()).hexdigest()


def subscribed_models(models: str | Sequence[str]) -> tuple[str, ...]:
    """Validate ``vendor/model`` names (duplicates dropped, order kept): a job subscribes to
    models, never versions, and always protects against each one's latest release.
    One name may be given alone.

    Raises:
        InputError: no names, or one that is not a model
            (:func:`~photoimmune.sdk.refs.check_model_name` says why).

    Example:
        >>> subscribed_models(["photoimmune/tiny-ldm", "photoimmune/tiny-ldm"])
        ('photoimmune/tiny-ldm',)
        >>> subscribed_models("photoimmune/tiny-ldm")
        ('photoimmune/tiny-ldm',)
    """
    if isinstance(models, (str, os.PathLike)):
        models = [os.fspath(models)]  # one name alone, not its characters
    elif isinstance(models, (bytes, bytearray)) or not isinstance(models, Iterable):
        raise InputError(
            f"models={models!r}: give vendor/model names, e.g. ['photoimmune/tiny-ldm']"
        )
    models = list(models)
    for m in models:
        if not isinstance(m, str):
            raise InputError(
                f"models: {m!r} is not a model name; give vendor/model names, "
                "e.g. photoimmune/tiny-ldm"
            )
    names = tuple(dict.fromkeys(check_model_name(m.strip()) for m in models if m.strip()))
    if not names:
        raise InputError(
            "no models to protect against; name at least one vendor/model, "
            "e.g. photoimmune/tiny-ldm"
        )
    return names


class ReleaseSource(Protocol):
    """What jobs read of a registry; a :class:`~photoimmune.registry.RegistryClient` is
    one. The SDK sits below the registry, so it names the calls rather than the class."""

    def releases(self) -> Mapping[ModelRef, AttackTarget]:
        """Every release's descriptor, from verified metadata."""
        ...

    def latest(self, model: str) -> ModelRef:
        """The newest version of ``vendor/model``."""
        ...

    def get(self, ref: ModelRef | str) -> AttackTarget:
        """One release's verified target, with its tensors."""
        ...


def plan(catalog: Catalog, registry: ReleaseSource, models: str | Sequence[str]) -> Plan:
    """The images of ``catalog`` lacking the latest release of any of ``models``
    (``vendor/model`` names; one may be given alone).

    ``registry`` is a :class:`~photoimmune.registry.RegistryClient`; only its
    verified metadata is read (no tensors are downloaded).

    Example:
        >>> client = connect("registry/")  # doctest: +SKIP
        >>> p = plan(Catalog("photos.db"), client, ["photoimmune/tiny-ldm"])  # doctest: +SKIP
        >>> len(p.images), [t.ref for t in p.targets]  # doctest: +SKIP
        (20, ['photoimmune/tiny-ldm@2'])
    """
    names = subscribed_models(models)
    releases = registry.releases()
    refs = [registry.latest(name) for name in names]
    targets = tuple(TargetKey(ref=str(ref), digest=releases[ref].digest) for ref in refs)
    current = catalog.current_copies()
    images, up_to_date = [], 0
    for original in catalog.originals(readable=True):
        copy = current.get(original.id)
        missing = tuple(t.ref for t in targets if copy is None or not copy.covers(t.ref, t.digest))
        if not missing:
            up_to_date += 1
            continue
        images.append(
            PlannedImage(
                original_id=original.id,
                location=original.location,
                protected_against=copy.protected_against if copy else (),
                missing=missing,
            )
        )
    unreadable = {o.location: o.error or "unreadable" for o in catalog.originals(readable=False)}
    return Plan(
        models=names,
        targets=targets,
        images=tuple(images),
        up_to_date=up_to_date,
        unreadable=unreadable,
    )
