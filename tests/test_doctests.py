"""The library's docstring examples run (sdk, registry and service).

Each module's examples run in a fresh folder holding the guides' sample photos
(``python -m photoimmune.sdk.samples``: ``photo.jpg``, ``portrait.png``, ``photos/``),
so an example may load ``photo.jpg`` or write files as a reader would. Examples that
need a server, a checkpoint or minutes of compute say ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import photoimmune.registry
import photoimmune.resolver
import photoimmune.sdk
import photoimmune.service
from photoimmune.sdk.samples import write_samples

# Examples whose fix belongs to another change: each entry says what fails.
KNOWN_BROKEN: set[str] = set()


def _library_modules() -> list[str]:
    names = []
    for package in (
        photoimmune.sdk,
        photoimmune.registry,
        photoimmune.resolver,
        photoimmune.service,
    ):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".migrations" not in info.name:  # Alembic scripts, run by Alembic only
                names.append(info.name)
    return sorted(set(names) - KNOWN_BROKEN)


@pytest.mark.parametrize("name", _library_modules())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_samples(tmp_path)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures = []
    for test in doctest.DocTestFinder().find(module, name):
        outcome = runner.run(test, out=failures.append)
        if outcome.failed:
            failures.append(f"{test.name}: {outcome.failed} of {outcome.attempted} failed\n")
    assert not failures, "".join(failures)
