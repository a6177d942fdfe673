"""Publisher jobs: keep a whole catalog immunized as vendors ship new model versions.

* :class:`Catalog`: originals and their immunized copies (SQLite file or PostgreSQL);
* :func:`plan`: which originals lack the latest release of a subscribed model;
* :func:`run`: re-immunize them from their originals, resumably, on this
  machine or on Ray (:class:`JobSettings` says how).

Example:
    >>> from photoimmune.registry import connect
    >>> from photoimmune.sdk.jobs import Catalog, run
    >>> catalog = Catalog("photos.db")  # doctest: +SKIP
    >>> catalog.add(["photos/"])  # doctest: +SKIP
    >>> client = connect("registry/")  # doctest: +SKIP
    >>> run(catalog, client, ["photoimmune/tiny-ldm"], out_dir="immunized")  # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from .catalog import AddReport, Catalog, CatalogError, CopyRecord, OriginalRecord
    from .engines import EngineError, LocalEngine, RayEngine
    from .planning import Plan, PlannedImage, ReleaseSource, TargetKey, plan
    from .queue import WorkQueue
    from .runner import JobSummary, output_name, run
    from .worker import Immunizer, JobSettings

# Imported on first use: the CLI's catalog commands must not wait for torch.
_LAZY = {
    **dict.fromkeys(
        ["AddReport", "Catalog", "CatalogError", "CopyRecord", "OriginalRecord"], "catalog"
    ),
    **dict.fromkeys(["EngineError", "LocalEngine", "RayEngine"], "engines"),
    **dict.fromkeys(["Plan", "PlannedImage", "ReleaseSource", "TargetKey", "plan"], "planning"),
    "WorkQueue": "queue",
    **dict.fromkeys(["JobSummary", "output_name", "run"], "runner"),
    **dict.fromkeys(["Immunizer", "JobSettings"], "worker"),
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "AddReport",
    "Catalog",
    "CatalogError",
    "CopyRecord",
    "EngineError",
    "Immunizer",
    "JobSettings",
    "JobSummary",
    "LocalEngine",
    "OriginalRecord",
    "Plan",
    "PlannedImage",
    "RayEngine",
    "ReleaseSource",
    "TargetKey",
    "WorkQueue",
    "output_name",
    "plan",
    "run",
]
