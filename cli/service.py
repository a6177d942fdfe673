"""``photoimmune service ...``: the vendor's immunization service and its API keys.

Example:
    photoimmune service key add newsroom --db service.db
    photoimmune service serve --db service.db --registry out/demo/registry \\
        --keys out/demo/keys --port 8480 --workers 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import checks
from .common import console, plain, table

service_app = typer.Typer(
    help="The vendor's immunization service: an HTTP API and web page, with API keys.",
    no_args_is_help=True,
)
key_app = typer.Typer(help="API keys of a service.", no_args_is_help=True)
service_app.add_typer(key_app, name="key")

DbOpt = Annotated[
    str,
    typer.Option(
        help="The service's database: an SQLite file path or a SQLAlchemy URL "
        "(postgresql+psycopg://...)."
    ),
]


def _store(db: str):
    from photoimmune.sdk.database import database_url
    from photoimmune.service.store import ServiceStore

    return ServiceStore(database_url(db))


@service_app.command("serve")
def serve(
    db: DbOpt,
    registry: Annotated[
        str, typer.Option("--registry", "-r", help="Registry folder or server URL.")
    ],
    keys: Annotated[Path, typer.Option(help="Key folder whose vendor key signs the results.")],
    root: Annotated[
        Path | None, typer.Option(help="The registry's root.json; needed for a URL.")
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(help="vendor/model=FOLDER: the weights of your releases; repeatable."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8480,
    workers: Annotated[int, typer.Option(help="Worker processes (Ray actors with ray).")] = 1,
    engine: Annotated[str, typer.Option(help="local (processes here) or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster (auto, ray://host:10001); default: local.")
    ] = None,
    max_eps: Annotated[str, typer.Option(help="Largest ε a client may ask for.")] = "16/255",
    steps: Annotated[
        int | None, typer.Option(help="PGD steps (default: each target's recommendation).")
    ] = None,
    max_upload_bytes: Annotated[int, typer.Option(help="Largest upload.")] = 20 << 20,
    max_sync_pixels: Annotated[
        int, typer.Option(help="Largest image POST /v1/immunize answers at once.")
    ] = 1 << 20,
    rate: Annotated[int, typer.Option(help="Requests a minute per key, unless set on it.")] = 60,
) -> None:
    """Serve the immunization API, its docs (/docs) and web page (/) with its workers."""
    from photoimmune.sdk.database import database_url
    from photoimmune.service.serve import serve as run
    from photoimmune.service.settings import ServiceSettings

    checks.one_of(engine, ("local", "ray"), "--engine")
    settings = ServiceSettings(
        weights=dict(checks.weights(w) for w in weights or []),
        max_eps=max_eps,
        steps=steps,
        max_upload_bytes=max_upload_bytes,
        max_sync_pixels=max_sync_pixels,
        rate_per_minute=rate,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        ray_address=ray_address,
    )
    console.print(f"serving on http://{host}:{port}/ (API docs: /docs); Ctrl-C stops")
    run(database_url(db), registry, keys, settings, host=host, port=port, root=root)


@key_app.command("add")
def key_add(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    db: DbOpt,
    rate: Annotated[int | None, typer.Option(help="Requests a minute (default: serve's).")] = None,
    quota: Annotated[int | None, typer.Option(help="Images in all (default: no quota).")] = None,
) -> None:
    """Issue an API key; it is printed once, as the last word, and stored only hashed."""
    from photoimmune.service.apikeys import add_key

    key = add_key(_store(db), name, rate_per_minute=rate, quota_images=quota)
    console.print(
        f"API key for {escape(name)} (shown once: store it now; only its hash is kept):",
        highlight=False,
    )
    console.print(key, highlight=False, soft_wrap=True)


@key_app.command("revoke")
def key_revoke(
    name: Annotated[str, typer.Argument(help="The name the keys were added with.")],
    db: DbOpt,
) -> None:
    """Revoke every active key with this name."""
    from photoimmune.sdk.errors import InputError
    from photoimmune.service.apikeys import revoke_keys

    count = revoke_keys(_store(db), name)
    if not count:
        raise InputError(f"no active key named {name!r}; `photoimmune service key list` shows them")
    console.print(f"revoked {count} key(s) named {escape(name)}", highlight=False)


@key_app.command("list")
def key_list(db: DbOpt) -> None:
    """List the keys (never the keys themselves): rate, quota, use, state."""
    from photoimmune.service.apikeys import list_keys

    rows = table("id", "name", "rate/min", "quota", "used", "created", "state")
    for key in list_keys(_store(db)):
        state = "active" if key.revoked_at is None else f"revoked {key.revoked_at:%Y-%m-%d}"
        rows.add_row(
            str(key.id),
            plain(key.name),
            str(key.rate_per_minute or "default"),
            str(key.quota_images or "none"),
            str(key.used_images),
            f"{key.created_at:%Y-%m-%d %H:%M}",
            state,
        )
    console.print(rows)
