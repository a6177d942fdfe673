"""``photoimmune manifests``: a manifest store, so stripped copies of signed files are found.

``add`` records signed immunized files by their soft-binding codes; ``serve``
answers lookups by code over HTTP (``photoimmune verify --resolver URL`` asks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import checks
from .common import PortOpt, console, database_option, plain, print_error, table

manifests_app = typer.Typer(
    help="A manifest store and resolver: find the manifest of a stripped copy.",
    no_args_is_help=True,
)
STORE_HELP = "Manifest store: an SQLite file path or a SQLAlchemy URL (postgresql+psycopg://...)."


@manifests_app.command("add")
def add(
    files: Annotated[list[Path], typer.Argument(help="Signed immunized files to record.")],
    db: Annotated[str, typer.Option(help=STORE_HELP)] = "manifests.db",
) -> None:
    """Record signed files' manifests by their soft binding (a file twice is kept once).

    Exit status: 0 when every file was recorded; 2 when one cannot be read or is not a
    signed immunized file with a soft binding (each is named; the others are recorded).
    """
    from photoimmune.resolver.store import ManifestStore
    from photoimmune.sdk.database import redact_url
    from photoimmune.sdk.errors import InputError
    from photoimmune.sdk.io import check_input_file, read_image_bytes

    url = database_option(db, "manifest store")
    # The files first: when none is there, no store is made (an empty one would then pass
    # for a real one at `manifests serve`).
    found: list[Path] = []
    for path in files:
        try:
            found.append(check_input_file(path))
        except InputError as err:  # missing, a folder, a FIFO...: named, the others go on
            print_error(str(err))
    failed = len(found) < len(files)
    if not found:
        raise typer.Exit(2)
    store = ManifestStore(url)
    listing = table("file", "asset", "codes", "")
    for path in found:
        try:
            added = store.add(read_image_bytes(path), source=str(path))
        except InputError as err:  # unreadable, or not a signed file with a soft binding
            failed = True
            print_error(str(err))
            continue
        listing.add_row(
            plain(path), str(added.asset), str(added.codes), "new" if added.new else "known"
        )
    store.dispose()
    if listing.rows:
        console.print(listing)
    console.print(f"{store.count()} signed files in {escape(redact_url(store.url))}")
    if failed:
        raise typer.Exit(2)


@manifests_app.command("serve")
def serve(
    db: Annotated[str, typer.Option(help=STORE_HELP)] = "manifests.db",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: PortOpt = 8480,
) -> None:
    """Answer lookups by soft-binding code over HTTP (FastAPI + uvicorn).

    Lookups carry a 64-bit code, never an image.
    """
    from photoimmune.resolver.server import create_app
    from photoimmune.resolver.store import ManifestStore
    from photoimmune.sdk.serving import run_server

    # Serving an empty store made from a mistyped name would answer every lookup "none".
    url = database_option(db, "manifest store", created_by="photoimmune manifests add")
    checks.listen_address(host, port)
    run_server(create_app(ManifestStore(url)), host, port)
