"""``photoimmune catalog ...`` and ``photoimmune reimmunize``: publisher jobs from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from photoimmune.sdk.errors import InputError
from photoimmune.sdk.limits import MAX_SEED, MAX_STEPS

from . import checks
from .common import (
    DB_HELP,
    console,
    database_option,
    err_console,
    plain,
    progress_bar,
    quiet_libraries,
    shown_path,
    signer_from_options,
    table,
)

if TYPE_CHECKING:
    from photoimmune.sdk.keys import ManifestSigner

CREATED_BY = "photoimmune catalog add"  # what creates a catalog; the other commands read one
catalog_app = typer.Typer(help="A publisher's catalog of originals and immunized copies.")


@catalog_app.command("add")
def catalog_add(
    paths: Annotated[list[str], typer.Argument(help="Image files or folders (recursive).")],
    db: Annotated[str, typer.Option(help=DB_HELP)] = "catalog.db",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was done, file by file, as JSON.")
    ] = False,
) -> None:
    """Catalogue originals (idempotent: only new and changed files are recorded).

    Exit status: 0 when every path was found and every image read; 1 when some image is
    unreadable (recorded, with the reason); 2 when a path does not exist (the others are
    still catalogued).
    """
    from photoimmune.sdk.database import redact_url
    from photoimmune.sdk.jobs.catalog import Catalog

    catalog = Catalog(database_option(db, "catalog"))
    with err_console.status("cataloguing") as status:
        report = catalog.add(
            paths, progress=lambda p: status.update(f"cataloguing {escape(p.name)}")
        )
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        _print_added(report, redact_url(catalog.url))
    if report.missing or report.unreadable:
        raise typer.Exit(2 if report.missing else 1)


def _print_added(report, where: str) -> None:
    for path, why in report.skipped.items():
        err_console.print(f"[yellow]skipped[/] {escape(f'{path}: {why}')}")
    for path, why in report.unreadable.items():
        err_console.print(f"[red]unreadable[/] {escape(_reason(path, why))}")
    for path, why in report.missing.items():
        err_console.print(f"[red]missing[/] {escape(f'{path}: {why}')}")
    console.print(
        f"{len(report.added)} added, {len(report.updated)} changed, {report.unchanged} unchanged, "
        f"{len(report.unreadable)} unreadable, {len(report.skipped)} skipped, "
        f"{len(report.missing)} missing  ({escape(where)})"
    )


@catalog_app.command("list")
def catalog_list(
    db: Annotated[str, typer.Option(help=DB_HELP)] = "catalog.db",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per original.")] = False,
) -> None:
    """Show each original and what its current immunized copy is protected against."""
    from photoimmune.sdk.jobs.catalog import Catalog

    catalog = Catalog(database_option(db, "catalog", created_by=CREATED_BY))
    current = catalog.current_copies()
    listing = table("original", "size", "protected against", "copy")
    for original in catalog.originals():
        copy = current.get(original.id)
        record: dict[str, Any] = {
            "original": original.location,
            "readable": original.readable,
            "error": original.error,
            "protected_against": list(copy.protected_against) if copy else [],
            "copy": copy.path if copy else None,
        }
        if as_json:
            typer.echo(json.dumps(record))
            continue
        size = f"{original.width}x{original.height}" if original.readable else "[red]unreadable"
        covered = ", ".join(record["protected_against"]) or "-"
        copy_path = shown_path(record["copy"]) if record["copy"] else "-"
        listing.add_row(
            plain(shown_path(original.location)), size, plain(covered), plain(copy_path)
        )
    if not as_json:
        console.print(listing)


def _own_signer(
    key: Path | None, cert: Path | None, trust: Path | None, anchors: list[bytes]
) -> ManifestSigner | None:
    """The signer ``--key``/``--cert`` name, read and checked against ``--trust`` now, dry
    run or not (a dry run refuses what the run would); None for the development keys,
    which may be created, so they wait until every server has answered."""
    if key is not None and trust is None:
        raise InputError("--key needs --trust: the CA certificate that --cert chains to")
    if key is None and cert is None:
        return None
    from photoimmune.sdk.keys import check_chain

    signer = signer_from_options(key, cert, None)
    check_chain(signer, anchors)
    return signer


def reimmunize_command(
    registry: Annotated[str, typer.Option(help="Registry: folder or server URL.")],
    models: Annotated[
        list[str],
        typer.Option(help="Subscribed models, vendor/model[,vendor/model...]; repeatable."),
    ],
    db: Annotated[str, typer.Option(help=DB_HELP)] = "catalog.db",
    root: Annotated[
        Path | None, typer.Option(help="The registry's root.json (needed for a URL).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for immunized copies.")] = Path(
        "immunized"
    ),
    engine: Annotated[str, typer.Option(help="local (this process) or ray.")] = "local",
    workers: Annotated[int, typer.Option(min=1, help="Ray actors (--engine ray only).")] = 2,
    dry_run: Annotated[bool, typer.Option(help="Show the plan; change nothing.")] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Finish at most N images, then stop.")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="encoder, diffusion or edit (default: the target's recommendation)."),
    ] = None,
    eps: Annotated[
        str | None,
        typer.Option(
            help="L-inf budget in [0, 1] pixel scale, 8/255 or 0.03 (default: the target's "
            "recommendation for the method)."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_STEPS,
            help="PGD iterations per image (default: the target's recommendation).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Random seed (same seed, same pixels).")
    ] = 0,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="PyTorch threads per worker; equal counts give equal bytes."),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(help="vendor/model=FOLDER: local weights of a release; repeatable."),
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Try failed images again.")] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: start a local one).")
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(min=0, help="GPUs per Ray actor (default: 1 if the cluster has any)."),
    ] = None,
    cpus_per_worker: Annotated[float, typer.Option(min=0, help="CPUs per Ray actor.")] = 1,
    key: Annotated[Path | None, typer.Option(help="PEM private key to sign with.")] = None,
    cert: Annotated[Path | None, typer.Option(help="PEM certificate chain for --key.")] = None,
    trust: Annotated[
        Path | None, typer.Option(help="CA certificate --cert chains to (needed with --key).")
    ] = None,
    keys_dir: Annotated[
        Path | None, typer.Option("--keys", help="Key folder (default: development keys).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    manifest_store: Annotated[
        str | None,
        typer.Option(help="Also record each copy's manifest in this manifest store (a URL)."),
    ] = None,
) -> None:
    """Re-immunize every catalogued image that lacks the latest release of a subscribed model."""
    # Every option first: the job below imports torch and may run for hours.
    names = checks.subscriptions(models)
    checks.one_of(engine, ("local", "ray"), "--engine")
    if method is not None:
        checks.one_of(method, checks.METHODS, "--method")
    if eps is not None:
        eps = checks.budget(eps)
    if not dry_run:  # a dry run writes nothing: any --out will do
        checks.output_folder(out, "--out")
    bound = dict(checks.weights(w) for w in weights or [])
    checks.signer_files(key, cert)
    anchors = checks.trust_files([trust] if trust is not None else [])
    own_signer = _own_signer(key, cert, trust, anchors)
    trusted_root = checks.registry(registry, root)
    # Read, never created: a dry run changes nothing, and a job on an empty catalog does nothing.
    url = database_option(db, "catalog", created_by=CREATED_BY)
    if manifest_store is not None:
        manifest_store = database_option(
            manifest_store, "manifest store", option="--manifest-store"
        )

    from photoimmune.registry.client import connect
    from photoimmune.sdk.jobs.catalog import Catalog
    from photoimmune.sdk.jobs.planning import plan
    from photoimmune.sdk.keys import default_trust_anchors

    catalog = Catalog(url)  # checked above: one that exists
    client = connect(registry, trusted_root)
    if dry_run:
        _print_plan(plan(catalog, client, names), as_json)
        return
    # Every server answered before any key is made: a refusal leaves nothing written.
    on_copy = _copy_recorder(manifest_store)
    signer = own_signer or signer_from_options(key, cert, keys_dir)
    trust_pem = anchors or default_trust_anchors(keys_dir)
    from photoimmune.sdk.jobs.runner import run
    from photoimmune.sdk.jobs.worker import JobSettings

    quiet_libraries()
    settings = JobSettings(
        method=method,  # type: ignore[arg-type]  # checked above: one of checks.METHODS
        eps=eps,
        steps=steps,
        seed=seed,
        threads=threads,
    )
    with progress_bar("{task.fields[current]}") as bar:
        task = bar.add_task("re-immunizing", total=None, current="")

        def progress(done: int, total: int, location: str) -> None:
            bar.update(task, completed=done, total=total, current=Path(location).name)

        summary = run(
            catalog,
            client,
            names,
            out_dir=out,
            signer=signer,
            trust=trust_pem,
            settings=settings,
            engine=engine,
            workers=workers,
            limit=limit,
            retry_failed=retry_failed,
            weights=bound,
            ray_address=ray_address,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            progress=progress,
            on_copy=on_copy,
        )
    if as_json:
        typer.echo(summary.model_dump_json())
    else:
        _print_summary(summary)
    # An unreadable original is as unprotected as a failed one: neither is a success.
    if summary.failed or summary.unreadable:
        raise typer.Exit(1)


def _print_plan(job_plan, as_json: bool) -> None:
    if as_json:
        typer.echo(job_plan.model_dump_json())
        return
    listing = table("original", "protected against", "lacks")
    for image in job_plan.images:
        listing.add_row(
            plain(shown_path(image.location)),
            plain(", ".join(image.protected_against) or "-"),
            plain(", ".join(image.missing)),
        )
    console.print(listing)
    console.print(
        f"would re-immunize {len(job_plan.images)} image(s) against "
        f"{escape(', '.join(t.ref for t in job_plan.targets))}; {job_plan.up_to_date} up to "
        f"date, {len(job_plan.unreadable)} unreadable"
    )


def _print_summary(summary) -> None:
    console.print(
        f"against {escape(', '.join(summary.targets))} ({summary.method} attack, ε "
        f"{summary.eps}, {summary.steps} steps; {summary.engine}, {summary.workers} "
        f"worker(s)): planned {summary.planned}, {summary.up_to_date} already up to date"
    )
    counts = table(
        "done",
        "adopted",
        "failed",
        "unreadable",
        "retrying",
        "lost leases",
        "remaining",
        "seconds",
        "images/s",
    )
    counts.add_row(
        str(len(summary.done)),
        str(len(summary.adopted)),
        str(len(summary.failed)),
        str(len(summary.unreadable)),
        str(summary.retrying),
        str(summary.lost_leases),
        str(summary.remaining),
        f"{summary.seconds:.1f}",
        f"{summary.images_per_second:.2f}",
    )
    console.print(counts)
    for location, why in summary.failed.items():
        console.print(f"[red]failed[/] {escape(_reason(location, why))}")
    if summary.failed:
        console.print("fix the causes, then run again with --retry-failed")
    for location, why in summary.unreadable.items():
        console.print(f"[red]unreadable[/] {escape(_reason(location, why))}")
    if summary.unreadable:
        console.print(
            "unreadable originals are not protected: replace or remove them, then run "
            "`photoimmune catalog add` on them again"
        )


def _reason(location: str, why: str) -> str:
    """``location: why``, without naming the file twice (load errors start with it)."""
    return why if why.startswith(location) else f"{location}: {why}"


def _copy_recorder(url: str | None):
    """``on_copy`` for a job: each copy's manifest into the manifest store at ``url``."""
    if url is None:
        return None
    from photoimmune.resolver.store import ManifestStore

    store = ManifestStore(url)
    return lambda path, data: store.add(data, source=path)
