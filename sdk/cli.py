"""The ``photoimmune`` command line.

Commands import their heavy dependencies (torch, diffusers) inside the command
body so that ``photoimmune --help`` and ``--version`` answer instantly.

Errors: a :class:`~photoimmune.sdk.errors.PhotoimmuneError` is printed as one red
line (no traceback) and the process exits with the error's ``exit_code``
(2 for bad input). ``--verbose`` shows the traceback as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import PhotoimmuneError

app = typer.Typer(
    name="photoimmune",
    help="Protect photos against AI editing (PhotoGuard-style immunization).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)


class _Options:
    verbose = False


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"photoimmune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show full tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Protect photos against AI editing (PhotoGuard-style immunization)."""
    _Options.verbose = verbose


@app.command()
def info(
    images: Annotated[list[Path], typer.Argument(help="Image files to inspect.")],
) -> None:
    """Show how photoimmune reads each image: format, original mode and size."""
    from .io import load_image

    table = Table("image", "format", "mode", "width", "height")
    for path in images:
        img = load_image(path)
        table.add_row(
            str(path), img.format or "-", img.original_mode, str(img.width), str(img.height)
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status instead of raising.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        photoimmune 0.1.0
        0
    """
    _Options.verbose = False
    try:
        status = app(args=argv, prog_name="photoimmune", standalone_mode=False)
    except PhotoimmuneError as err:
        if _Options.verbose:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return err.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except Exception as err:  # click's usage errors carry their own exit code
        show = getattr(err, "show", None)
        if callable(show) and hasattr(err, "exit_code"):
            show()
            return int(err.exit_code)
        raise
    # click returns the exit code of a typer.Exit (e.g. from --help) and None otherwise.
    return status if isinstance(status, int) else 0
