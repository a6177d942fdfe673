"""Lazy re-exports, so ``import photoimmune.sdk`` doesn't pay for torch until it's used."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (a submodule) on first use.

    Example:
        >>> __getattr__ = lazy_getattr(__name__, {"load_image": "io"})  # doctest: +SKIP
    """

    def module_getattr(name: str) -> Any:
        if name in table:
            return getattr(import_module(f".{table[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return module_getattr
