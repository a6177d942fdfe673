"""What every command group shares: the consoles, the progress bar, quiet libraries, keys.

Nothing here imports torch: ``photoimmune --help`` loads this module.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

#: Results go to stdout; progress, warnings and errors to stderr.
console = Console()
err_console = Console(stderr=True)


class _Options:
    """What the whole command line sets once, wherever it stands (``main`` reads it)."""

    verbose = False  # --verbose: tracebacks, and the libraries' own notices


options = _Options()

KEY_DIR_HELP = "$PHOTOIMMUNE_KEY_DIR or ~/.photoimmune/keys"
DB_HELP = "Catalog database: an SQLite file path or a SQLAlchemy URL (postgresql+psycopg://...)."

# Bounds of numeric options (seeds and steps: photoimmune.sdk.limits): a typo is refused
# by name, never overflows where the value lands nor runs for days.
#: What an INTEGER column holds on every database we support (PostgreSQL's: 32 bits).
MAX_SQL_INT = 2**31 - 1

PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]


def print_error(message: str) -> None:
    """One ``error:`` line on stderr (with --verbose, after the traceback being handled).

    The message names files and values the user gave, so it is printed as it is, never
    parsed as markup.
    """
    if options.verbose and sys.exc_info()[0] is not None:
        err_console.print_exception()
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def database_option(
    value: str, what: str, *, created_by: str | None = None, option: str = "--db"
) -> str:
    """``--db`` (or ``option``) as a URL, refused by name before any work if it can never
    hold ``what`` (see :func:`~photoimmune.sdk.database.check_database`: nothing is
    connected to or created); ``created_by`` (the command that creates ``what``) for
    commands that only read it, which must never turn a mistyped name into a new, empty
    database. A server that does not answer is found by the store that opens it.

    Example:
        >>> database_option("typo.db", "catalog", created_by="photoimmune catalog add")
        Traceback (most recent call last):
        photoimmune.sdk.errors.DatabaseLocationError: --db typo.db: no such catalog; ...
    """
    from photoimmune.sdk.database import check_database

    return check_database(value, what=what, option=option, created_by=created_by)


def progress_bar(*fields: str, remaining: bool = False) -> Progress:
    """A progress bar on stderr: description, bar, done/total, then one column per entry of
    ``fields`` (rich format strings over the task, e.g. ``"loss {task.fields[loss]}"``),
    then the time elapsed (or, with ``remaining``, the time left)."""
    columns: list[ProgressColumn] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    columns += [TextColumn(field) for field in fields]
    columns.append(TimeRemainingColumn() if remaining else TimeElapsedColumn())
    return Progress(*columns, console=err_console)


def attack_bar() -> Progress:
    """The progress bar of attacks: one task per attack (see :func:`attack_task`)."""
    return progress_bar("loss {task.fields[loss]}", "{task.fields[finishing]}")


def attack_task(bar: Progress, label: str) -> Callable[[int, int, float], None]:
    """A new task on ``bar``, and the ``progress(step, total, loss)`` callback of the attack
    it follows: the bar counts the steps asked for, and the 8-bit finish is named apart.

    ``run_pgd`` reports its quantised finish as steps past the ones asked for
    (``steps + j`` of ``steps + refine``), so a bare count read ``110/110`` for 100
    steps: here the first total reported is what was asked for, and what comes after
    it shows as ``finishing j/refine``.

    Example:
        >>> with attack_bar() as bar:  # doctest: +SKIP
        ...     immunize(photo, "tiny-ldm@1", progress=attack_task(bar, "photo.jpg"))
    """
    task = bar.add_task(escape(label), total=None, loss="-", finishing="")
    asked: list[int] = []  # the first total reported: the steps asked for

    def report(step: int, total: int, loss: float) -> None:
        if not asked:
            asked.append(total)
        steps = asked[0]
        if total <= steps:
            bar.update(task, completed=step, total=total, loss=f"{loss:.4g}")
            return
        finishing = f"finishing {step - steps}/{total - steps}"
        bar.update(task, completed=steps, total=steps, loss=f"{loss:.4g}", finishing=finishing)

    return report


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose columns wrap their text instead of cutting it: a file name or a model
    ref cut short with "…" hides the very answer a listing is asked for. (Wider terminals
    show each on one line; on narrow ones, long names fold onto the next line.)

    Example:
        >>> listing = table("release", "digest", title="releases")
        >>> listing.add_row("acme/sd@1.5", "9f86d081884c7d65")
        >>> [column.header for column in listing.columns], listing.title
        (['release', 'digest'], 'releases')
    """
    result = Table(title=title)
    for column in columns:
        result.add_column(column, overflow="fold")
    return result


def plain(value: object) -> Text:
    """A table cell shown as written: file names and other user text are never markup
    (``[/]x.png`` would crash rich, ``[red]`` would colour the cell)."""
    return Text(str(value))


def shown_path(location: str | os.PathLike[str]) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    path = Path(location)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(location)


def print_wide(renderable: RenderableType, width: int = 150) -> None:
    """Print to stdout at least ``width`` columns wide, so a table is never squeezed."""
    Console(width=max(console.width, width)).print(renderable)


def readable_metavars(command: Any) -> Any:
    """Name each value in ``--help`` the way the user types it, instead of its Python type.

    Typer shows ``<bool>`` beside every flag and ``<list[Path]>`` beside a repeatable
    option or argument: noise. A flag takes no value, so it shows none; an option's
    value is named after the option (``--eps EPS``, ``--keys KEYS``); an argument
    already says its name (``images...``), so its type is not repeated. A ``metavar=``
    given in a command's own code is kept. ``command`` is the click command typer
    builds (typer ships its own copy of click, so parameters are told apart by their
    kind, not their class).

    Example:
        >>> import typer
        >>> from photoimmune.cli.app import app
        >>> cmd = readable_metavars(typer.main.get_command(app))
        >>> [p.metavar for p in cmd.commands["verify"].params]
        [None, 'TRUST', 'RESOLVER', '']
    """
    # --help is made on first use and then kept: make it now, to name it like the rest.
    help_option = command.get_help_option(command.context_class(command))
    for param in [*command.params, help_option]:
        if param is None or param.metavar is not None:
            continue
        if param.param_type_name == "argument":
            param.display_type_rich = _no_type  # typer's type column ignores metavar here
        elif param.is_flag:
            param.metavar = ""
        else:
            param.metavar = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)
    return command


def _no_type(ctx: object) -> None:
    return None


def quiet_libraries() -> None:
    """Our own progress bars replace diffusers'/transformers' loading bars; the libraries'
    notices that are not the user's business (diffusers' "should be kept in float32" and
    deprecation notices, transformers' warnings, Ray's token-auth warning) are shown only
    with ``--verbose``. Errors always are.

    Example:
        >>> quiet_libraries()  # doctest: +SKIP
        >>> os.environ["RAY_LOGGER_LEVEL"]  # doctest: +SKIP
        'error'
    """
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if options.verbose:
        return
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module=r"(diffusers|transformers)(\.|$)")
    # Ray's own variable: the jobs' Ray engine starts Ray at this level (default: warning).
    os.environ.setdefault("RAY_LOGGER_LEVEL", "error")


def signer_from_options(key: Path | None, cert: Path | None, keys_dir: Path | None):
    """The signer for --key/--cert, else the --keys folder's publisher key (say so if new);
    messages about the folder name --keys, or $PHOTOIMMUNE_KEY_DIR when that chose it."""
    from photoimmune.sdk.keys import KeyDir, SigningKeyError, resolve_signer

    def created(keys: KeyDir) -> None:
        err_console.print(
            f"created development signing keys in {escape(str(keys.path))}; verifiers trust "
            f"them with --trust {escape(str(keys.ca_cert))}"
        )

    try:
        return resolve_signer(key, cert, keys_dir, on_created=created, option="--keys")
    except SigningKeyError as err:  # it names the file: name the option too
        named = next((o for p, o in ((cert, "--cert"), (key, "--key")) if _about(err, p)), None)
        if named is None:
            raise
        raise SigningKeyError(f"{named} {err}") from None


def _about(err: Exception, path: Path | None) -> bool:
    # "PATH: why" or "PATH does not ...": a longer name that starts with PATH is another file
    return path is not None and str(err).startswith((f"{path}:", f"{path} "))
