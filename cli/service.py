"""``photoimmune service ...``: the vendor's immunization service and its API keys.

Example:
    photoimmune service key add newsroom --db service.db
    photoimmune service serve --db service.db --registry out/demo/registry \\
        --keys out/demo/keys --port 8490 --workers 2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from photoimmune.sdk.errors import InputError
from photoimmune.sdk.limits import MAX_STEPS

from . import checks
from .common import MAX_SQL_INT, PortOpt, console, database_option, plain, table

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


def _store(db: str, *, created_by: str | None = "photoimmune service key add"):
    """The service's database; by default one that is there already (see database_option)."""
    from photoimmune.service.store import ServiceStore

    return ServiceStore(database_option(db, "service database", created_by=created_by))


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
    port: PortOpt = 8490,  # not manifests serve's 8480: a publisher may run both
    workers: Annotated[
        int, typer.Option(min=0, help="Worker processes (Ray actors with ray).")
    ] = 1,
    engine: Annotated[str, typer.Option(help="local (processes here) or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster (auto, ray://host:10001); default: local.")
    ] = None,
    max_eps: Annotated[str, typer.Option(help="Largest ε a client may ask for.")] = "16/255",
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, max=MAX_STEPS, help="PGD steps (default: each target's recommendation)."
        ),
    ] = None,
    max_upload_bytes: Annotated[int, typer.Option(min=1, help="Largest upload.")] = 20 << 20,
    max_sync_pixels: Annotated[
        int, typer.Option(min=1, help="Largest image POST /v1/immunize answers at once.")
    ] = 1 << 20,
    rate: Annotated[
        int,
        typer.Option(min=1, max=MAX_SQL_INT, help="Requests a minute per key, unless set on it."),
    ] = 60,
) -> None:
    """Serve the immunization API, its docs (/docs) and web page (/) with its workers."""
    from photoimmune.service.serve import serve as run
    from photoimmune.service.settings import ServiceSettings

    checks.one_of(engine, ("local", "ray"), "--engine")
    max_eps = checks.budget(max_eps, "--max-eps")
    checks.registry(registry, root)
    _check_signing_keys(keys)
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
    # Checked here, created by `run` (as `key add` does): a missing file is no mistake.
    url = database_option(db, "service database")
    checks.listen_address(host, port)

    def ready() -> None:  # once the registry, weights and database are checked
        console.print(f"starting on http://{host}:{port}/ (API docs: /docs); Ctrl-C stops")

    run(url, registry, keys, settings, host=host, port=port, root=root, ready=ready)


def _check_signing_keys(keys: Path) -> None:
    """``--keys`` must hold a vendor key and certificate already (`keys init` makes them):
    a mistyped folder would otherwise get a new development CA that no verifier trusts."""
    from photoimmune.sdk.keys import KeyDir

    found = KeyDir(keys)
    if keys.exists() and not keys.is_dir():
        raise InputError(
            f"--keys {keys}: is a file, not a key folder; pass the folder `photoimmune keys "
            "init --dir FOLDER` made"
        )
    if not (found.key("vendor").is_file() and found.cert("vendor").is_file()):
        raise InputError(
            f"--keys {keys}: no vendor signing key and certificate there; create them with "
            f"`photoimmune keys init --dir {keys}`, or pass the folder that holds yours"
        )


@key_app.command("add")
def key_add(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    db: DbOpt,
    rate: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_SQL_INT, help="Requests a minute (default: serve's)."),
    ] = None,
    quota: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_SQL_INT, help="Images in all (default: no quota)."),
    ] = None,
) -> None:
    """Issue an API key; it is printed once, as the last word, and stored only hashed."""
    from photoimmune.service.apikeys import add_key

    key = add_key(_store(db, created_by=None), name, rate_per_minute=rate, quota_images=quota)
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
    from photoimmune.service.apikeys import revoke_keys

    count = revoke_keys(_store(db), name)
    if not count:
        raise InputError(f"no active key named {name!r}; `photoimmune service key list` shows them")
    console.print(f"revoked {count} key(s) named {escape(name)}", highlight=False)


@key_app.command("list")
def key_list(
    db: DbOpt,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per key (never the key itself).")
    ] = False,
) -> None:
    """List the keys (never the keys themselves): rate, quota, use, state."""
    from photoimmune.service.apikeys import list_keys

    rows = table("id", "name", "rate/min", "quota", "used", "created", "state")
    for key in list_keys(_store(db)):
        state = "active" if key.revoked_at is None else "revoked"
        if as_json:  # revoked_at says when
            typer.echo(json.dumps({**key.model_dump(mode="json"), "state": state}))
            continue
        if key.revoked_at is not None:
            state += f" {key.revoked_at:%Y-%m-%d}"
        rows.add_row(
            str(key.id),
            plain(key.name),
            str(key.rate_per_minute or "default"),
            str(key.quota_images or "none"),
            str(key.used_images),
            f"{key.created_at:%Y-%m-%d %H:%M}",
            state,
        )
    if not as_json:
        console.print(rows)
