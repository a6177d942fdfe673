"""What a verified ``RegistryClient.latest()`` costs against a live server, next to one HTTP read.

Set-up: a temporary registry (SQLite) with one vendor, ``acme``, that publishes
``--releases`` releases (``acme/model-0@1``, ``acme/model-1@1``, ...: copies of
the tiny-ldm@1 target under new names, so the vendor's signed role lists two
files per release). The real server (``create_app`` under uvicorn, access log
off) runs in a subprocess on 127.0.0.1, so client and server don't share a GIL.

Each case runs for ``--seconds`` after a short warm-up; every call is timed:

* ``GET timestamp.json``: ``httpx`` GET of ``/metadata/timestamp.json`` on a
  keep-alive connection. One round trip, nothing verified: the floor.
* ``latest(), new client``: a fresh ``RegistryClient`` per call sharing one warm
  cache folder and the same keep-alive connection, so every call is a full TUF
  refresh: download and verify the timestamp, probe for a newer root (a 404),
  and verify the cached snapshot, top-level targets and vendor role against it.
  What a CLI invocation pays.
* ``latest(), one client``: one long-lived client, refreshed once before timing.
  No network and no re-verification: the client keeps the releases of its last
  refresh in memory, so this is the cost of the answer itself.

Throughput is reported relative to the first case.

    .venv/bin/python bench/registry_latest.py [--releases 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from registry_load import answering, free_port  # bench/ is on sys.path when this script runs
from rich.console import Console
from rich.table import Table

from photoimmune.registry.admin import LocalRegistry, add_vendor, init_registry, publish
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.keys import generate_signer, load_signer
from photoimmune.registry.service import RegistryService
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.targets import AttackTarget, build_target, save_target

SERVER = """
import sys
from pathlib import Path

import uvicorn

from photoimmune.registry.server import create_app
from photoimmune.registry.service import RegistryService

app = create_app(RegistryService.open(Path(sys.argv[1])))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""
WARMUP_CALLS = 20


def make_registry(root: Path, releases: int) -> Path:
    """A registry folder where ``acme`` has published ``releases`` one-version models."""
    paths = init_registry(root / "registry")
    service = RegistryService.open(paths.root)
    registry = LocalRegistry(service)
    vendor = generate_signer()
    add_vendor(registry, "acme", [vendor.public_key], 1, [load_signer(paths.keys / "targets.pem")])
    target = build_target("tiny-ldm@1")
    for k in range(releases):
        folder = root / "targets" / f"model-{k}"
        save_target(renamed(target, f"acme/model-{k}@1"), folder)
        publish(registry, "acme", folder, [vendor])
    service.store.engine.dispose()
    return paths.root


def renamed(target: AttackTarget, ref: str) -> AttackTarget:
    copy = target.model_copy(update={"ref": ModelRef.parse(ref)})
    copy._tensors = dict(target._tensors)  # what save_target writes; not part of the copy's fields
    return copy


def start_server(folder: Path, port: int, http: httpx.Client) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), str(port)])
    return answering(server, port, http.get)


def timed(call: Callable[[], object], seconds: float) -> list[float]:
    """Seconds per call of ``call``, repeated for ``seconds`` after a warm-up."""
    for _ in range(WARMUP_CALLS):
        call()
    latencies = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp, httpx.Client() as http:
        root = Path(tmp)
        folder = make_registry(root, args.releases)
        port = free_port()
        server = start_server(folder, port, http)
        try:
            url = f"http://127.0.0.1:{port}"
            trusted_root = (folder / "root.json").read_bytes()
            cache = root / "cache"
            expected = ModelRef.parse("acme/model-0@1")

            def fresh_client() -> RegistryClient:
                return RegistryClient(url, trusted_root=trusted_root, cache_dir=cache, http=http)

            def timestamp() -> None:
                http.get(f"{url}/metadata/timestamp.json").raise_for_status()

            def latest_new_client() -> None:
                assert fresh_client().latest("acme/model-0") == expected

            long_lived = fresh_client()
            long_lived.refresh()

            def latest_one_client() -> None:
                assert long_lived.latest("acme/model-0") == expected

            cases = {
                "GET timestamp.json (one round trip)": timestamp,
                "latest(), new client (TUF refresh)": latest_new_client,
                "latest(), one client (no network)": latest_one_client,
            }
            results = {name: timed(call, args.seconds) for name, call in cases.items()}
        finally:
            server.terminate()
            server.wait(timeout=30)

    # Calls per second of time spent in calls: the last call may overrun --seconds.
    rates = {name: len(lat) / sum(lat) for name, lat in results.items()}
    reference = next(iter(rates.values()))
    table = Table(title=f"registry reads: {args.releases} releases, {args.seconds:g} s per case")
    for column in ("case", "reads/s", "p50 (ms)", "p99 (ms)", "vs GET"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for name, latencies in results.items():
        rate = rates[name]
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
        table.add_row(
            name,
            f"{rate:.0f}",
            f"{statistics.median(latencies) * 1000:.2f}",
            f"{p99 * 1000:.2f}",
            f"{rate / reference:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
