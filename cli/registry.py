"""``photoimmune registry ...``: the vendor and admin side (``targets``: the release it publishes).

Example:
    photoimmune registry init reg
    photoimmune registry keygen keys/acme.pem
    photoimmune registry vendor add acme --key keys/acme.pub.pem --registry reg
    photoimmune targets build --model ./my-sd --ref acme/sd@1.5 -o release
    photoimmune registry publish release --key keys/acme.pem --registry reg
    photoimmune registry serve reg --port 8470
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from photoimmune.sdk.errors import InputError

from . import checks
from .common import (
    PortOpt,
    console,
    database_option,
    err_console,
    plain,
    quiet_libraries,
    table,
)

registry_app = typer.Typer(
    help="A registry of signed attack targets (TUF): create, onboard, publish, serve.",
    no_args_is_help=True,
)
vendor_app = typer.Typer(help="Vendors of a registry.", no_args_is_help=True)
registry_app.add_typer(vendor_app, name="vendor")

RegistryOpt = Annotated[
    str, typer.Option("--registry", "-r", help="Registry folder (registry init) or server URL.")
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="The registry's root.json (trust anchor); needed for a URL."),
]


@registry_app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(help="New (or empty) folder for the registry.")],
    root_keys: Annotated[int, typer.Option(min=1, help="Number of root keys.")] = 3,
    root_threshold: Annotated[int, typer.Option(min=1, help="Root signatures required.")] = 2,
    db: Annotated[str | None, typer.Option(help="Database URL (default: SQLite file).")] = None,
) -> None:
    """Create a registry: keys, root and targets metadata, database, blob store.

    An init that fails or is interrupted leaves nothing in FOLDER: run it again.
    """
    from photoimmune.registry.admin import init_registry

    checks.output_folder(folder, "FOLDER")
    if db is not None:
        db = database_option(db, "registry database")
    paths = init_registry(
        folder, root_keys=root_keys, root_threshold=root_threshold, database_url=db
    )
    console.print(
        f"registry in {escape(str(folder))}; give clients {escape(str(paths.trusted_root))}"
    )
    console.print(
        f"offline keys (move them off this machine): {escape(str(paths.keys))}/root-*.pem, "
        "targets.pem"
    )


@registry_app.command("keygen")
def keygen(
    path: Annotated[Path, typer.Argument(help="Private key file to create (.pem).")],
) -> None:
    """Create an ed25519 signing key at PATH, and its public half to hand to the registry admin.

    The public half is PATH with .pem replaced by .pub.pem: keys/acme.pem writes
    keys/acme.pub.pem.
    """
    from photoimmune.registry.keys import public_path, write_key

    checks.output_folder(path.parent, "PATH")
    signer = write_key(path)
    console.print(
        f"key {signer.public_key.keyid[:16]}…; public half: {escape(str(public_path(path)))}"
    )


@vendor_app.command("add")
def vendor_add(
    vendor: Annotated[str, typer.Argument(help="Vendor name: the namespace it may publish.")],
    key: Annotated[list[Path], typer.Option(help="Vendor public key (.pub.pem); repeat.")],
    registry: RegistryOpt,
    threshold: Annotated[int, typer.Option(min=1, help="Vendor signatures required.")] = 1,
    targets_key: Annotated[
        list[Path] | None, typer.Option(help="Targets-role private key(s).")
    ] = None,
    root: RootOpt = None,
) -> None:
    """Onboard a vendor (or replace its keys): delegate VENDOR/* to its keys."""
    from photoimmune.registry.admin import add_vendor, open_registry
    from photoimmune.registry.keys import load_public_key, load_signer

    handle = open_registry(registry, trusted_root=root)
    if targets_key is None and registry.startswith(("http://", "https://")):
        raise InputError(
            "--targets-key: with a server URL, pass the targets role's private key (registry "
            "init wrote it to FOLDER/keys/targets.pem; it is kept offline, not on the server)"
        )
    signers = [load_signer(p) for p in targets_key or [Path(registry) / "keys" / "targets.pem"]]
    version = add_vendor(handle, vendor, [load_public_key(k) for k in key], threshold, signers)
    console.print(f"{escape(vendor)} may publish {escape(vendor)}/*; targets is now v{version}")


@registry_app.command("publish")
def publish_command(
    target_dir: Annotated[Path, typer.Argument(help="Folder written by `targets build`.")],
    key: Annotated[list[Path], typer.Option(help="Vendor private key; repeat for a threshold.")],
    registry: RegistryOpt,
    root: RootOpt = None,
) -> None:
    """Sign the vendor's metadata with the release added, and upload it."""
    from photoimmune.registry.admin import open_registry, publish
    from photoimmune.registry.keys import load_signer
    from photoimmune.sdk.targets import load_target

    target = load_target(target_dir)
    handle = open_registry(registry, trusted_root=root)
    version = publish(handle, target.ref.vendor, target_dir, [load_signer(k) for k in key])
    console.print(
        f"published {target.ref} (target {target.digest[:16]}…); {target.ref.vendor} v{version}",
        highlight=False,
    )


@registry_app.command("list")
def list_command(
    registry: RegistryOpt,
    root: RootOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per release.")] = False,
) -> None:
    """List every release, verified against the trusted root.

    Exit status: 0 when every vendor's releases verify; 1 when some vendor's do not (they
    are left out, and the reason is printed: often a key rotation in progress).
    """
    from photoimmune.registry.client import connect

    client = connect(registry, root)
    listing = table("release", "recipe", "resolution", "pipelines", "digest")
    releases = sorted(client.releases().items(), key=lambda kv: str(kv[0]))
    for vendor, why in client.skipped_vendors.items():
        err_console.print(
            f"[red]left out[/] {escape(vendor)}'s releases: {escape(why)}", highlight=False
        )
    for ref, target in releases:
        if as_json:
            record = {"release": str(ref), "recipe": target.recipe, "digest": target.digest}
            typer.echo(
                json.dumps(
                    {**record, "resolution": target.resolution, "pipelines": target.pipelines}
                )
            )
            continue
        listing.add_row(
            str(ref),
            plain(target.recipe),
            str(target.resolution),
            ", ".join(target.pipelines),
            target.digest[:16],
        )
    if not as_json:
        console.print(listing)
    if not releases and not as_json and not client.skipped_vendors:
        console.print("no releases yet")
    if client.skipped_vendors:
        raise typer.Exit(1)


@registry_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="vendor/model@version, or vendor/model for latest.")],
    registry: RegistryOpt,
    root: RootOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One line of JSON (default: indented, coloured).")
    ] = False,
) -> None:
    """Print one release's descriptor (downloaded and verified, tensors included) and its
    scorecard, when the vendor published one (docs/vendor-guide.md: reading a scorecard)."""
    from photoimmune.registry.client import connect
    from photoimmune.sdk.refs import ModelRef, check_model_name

    # Named as a reference before any registry is asked: '' is no reference, not a release.
    named = str(ModelRef.parse(ref)) if "@" in ref else check_model_name(ref)
    quiet_libraries()  # a bundled release's weights load with the target: no loading bars
    client = connect(registry, root)
    ref = named if "@" in named else str(client.latest(named))
    target = client.get(ref)
    card = client.scorecard(ref)
    record = json.dumps(
        {
            "digest": target.digest,
            **target.model_dump(mode="json"),
            "scorecard": None if card is None else card.model_dump(mode="json"),
        }
    )
    if as_json:
        typer.echo(record)
    else:
        console.print_json(record)


@registry_app.command("serve")
def serve(
    folder: Annotated[Path, typer.Argument(help="Registry folder (its online keys).")],
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: the folder's SQLite).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: PortOpt = 8470,
) -> None:
    """Serve the registry over HTTP (FastAPI + uvicorn)."""
    from photoimmune.registry.server import create_app
    from photoimmune.registry.service import RegistryService
    from photoimmune.sdk.serving import run_server

    checks.listen_address(host, port)
    service = RegistryService.open(folder, _existing_database(db))
    run_server(create_app(service), host, port)


def _existing_database(db: str | None) -> str | None:
    """``--db`` of a registry `registry init --db` made (None: the one the folder names)."""
    if db is None:
        return None
    return database_option(db, "registry database", created_by="photoimmune registry init --db")


@registry_app.command("export")
def export(
    folder: Annotated[Path, typer.Argument(help="Registry folder.")],
    out: Annotated[Path, typer.Argument(help="Folder for the static files.")],
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: the folder's SQLite).")
    ] = None,
) -> None:
    """Write the whole repository as static files for any web server or CDN."""
    from photoimmune.registry.service import RegistryService

    checks.output_folder(out, "OUT")
    count = RegistryService.open(folder, _existing_database(db)).export(out)
    console.print(
        f"wrote {count} files to {escape(str(out))}; serve it as-is (e.g. python -m http.server)"
    )
