"""photoimmune.cli: the ``photoimmune`` command, one module per command group.

The top layer: it may import every other package (sdk, registry,
diffusers_plugin) and nothing imports it. Heavy imports happen inside the
commands, so ``photoimmune --help`` stays instant.

Example:
    >>> from photoimmune.cli import main
    >>> main(["--version"])  # doctest: +SKIP
    photoimmune 0.1.0
    0
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
