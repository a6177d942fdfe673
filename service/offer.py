"""What the service immunizes against, and how: the registry's models, budgets, immunizers.

The service reads the registry only through its verifying client
(:func:`photoimmune.registry.client.connect`), as every pipeline does: a
model's latest release, its attack target, bound to the weights the service
holds. Which immunizer runs for a set of targets is decided in one place,
:func:`immunizer_settings`.
"""

from __future__ import annotations

import logging
import threading
from fractions import Fraction
from typing import Any

from photoimmune.sdk.attacks.budget import format_budget, parse_budget
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.jobs.worker import JobSettings
from photoimmune.sdk.serving import excerpt

from .errors import BudgetTooLargeError, UnknownTargetModelError, UploadError
from .settings import ServiceSettings

logger = logging.getLogger(__name__)


def immunizer_settings(targets: list[Any], eps: str, settings: ServiceSettings) -> JobSettings:
    """The fastest immunizer ``targets`` offer, as the settings the jobs' workers run.

    When every target carries a one-pass immunizer, PGD starts from their pass and
    runs only their recommended finishing steps (unless the service fixes
    ``steps``); otherwise the targets' recommended PGD. Chosen here, and only here,
    for both the immediate answers and the queued jobs.

    Example:
        >>> immunizer_settings([], "8/255", ServiceSettings(steps=5)).steps
        5
        >>> immunizer_settings([], "8/255", ServiceSettings()).warm_start
        False
    """
    carried = bool(targets) and all(t.immunizer is not None for t in targets)
    return JobSettings(eps=eps, steps=settings.steps, warm_start=carried, threads=None)


class Offer:
    """The models a service offers: each one's latest release, from the registry.

    Example:
        >>> offer = Offer(connect("out/demo/registry"), ServiceSettings())  # doctest: +SKIP
        >>> offer.models()  # doctest: +SKIP
        ['photoimmune/tiny-ldm']
    """

    def __init__(self, client: Any, settings: ServiceSettings) -> None:
        self.client = client
        self.settings = settings
        self.max_eps = parse_budget(settings.max_eps, name="max_eps")
        self._lock = threading.Lock()  # one client, several request threads
        self._releases: dict[str, Any] = {}  # ref -> target: a release never changes

    def check_weights(self) -> None:
        """At start-up: the weights the service holds must be their model's latest release.

        Raises:
            InputError: naming the model and the folder, before any request is served.
        """
        published = set(self.client.models())
        for model, folder in self.settings.weights.items():
            if model not in published:  # a model not published yet is offered once it is
                continue
            ref = str(self.client.latest(model))
            try:
                bound = self.client.get(ref).bind_model(folder)
            except InputError as err:
                raise InputError(f"weights {model}={folder} (--weights, weights=): {err}") from None
            with self._lock:
                self._releases[ref] = bound  # checked once: requests reuse it

    def _get(self, ref: str) -> Any:
        if ref not in self._releases:
            target = self.client.get(ref)
            weights = self.settings.weights.get(f"{target.ref.vendor}/{target.ref.model}")
            try:  # binding checks the weights' fingerprints against the release's
                target = target if weights is None else target.bind_model(weights)
            except InputError as err:
                # A release published since start-up: not offered until the service is
                # given its weights; the callers are not to blame, nor shown the path.
                logger.warning("service: %s", err)
            self._releases[ref] = target
        return self._releases[ref]

    def models(self) -> list[str]:
        """Every model with a release the service holds the weights of, sorted."""
        with self._lock:
            latest = {name: str(self.client.latest(name)) for name in self.client.models()}
            return sorted(name for name, ref in latest.items() if self._get(ref).has_weights)

    def targets(self, models: str | None) -> list[Any]:
        """The latest releases' targets of ``models`` (``vendor/model``, comma-separated;
        None or blank: every model offered)."""
        offered = self.models()
        if not offered:
            raise UnknownTargetModelError(
                "this service offers no models yet: its vendor must publish a release whose "
                "weights the service holds"
            )
        wanted = [m.strip() for m in (models or "").split(",") if m.strip()] or offered
        unknown = [m for m in wanted if m not in offered]
        if unknown:
            raise UnknownTargetModelError(
                f"unknown model {excerpt(', '.join(unknown))}; choose among {', '.join(offered)} "
                "(GET /v1/models), or leave models out for all of them"
            )
        with self._lock:
            return [self._get(str(self.client.latest(m))) for m in dict.fromkeys(wanted)]

    def target(self, ref: str, digest: str) -> Any:
        """The release ``ref``, checked to be the exact target a job was queued with."""
        with self._lock:
            target = self._get(ref)
        if target.digest != digest:
            raise InputError(f"{ref}: the registry's target changed since the job was queued")
        return target

    def budget(self, targets: list[Any], eps: str | None) -> str:
        """``eps`` checked against the vendor's maximum; None: the first target's recommended."""
        from photoimmune.sdk.immunization import choose_budget

        chosen = choose_budget(targets[0], eps=eps).eps if eps is None else eps
        try:
            value = parse_budget(chosen)
        except InputError as err:
            raise UploadError(str(err)) from None
        if value > self.max_eps:
            raise BudgetTooLargeError(
                f"eps={eps} is above this service's maximum of {format_budget(self.max_eps)}; "
                "ask for a smaller budget (8/255 is typical)"
            )
        return format_budget(Fraction(value))
