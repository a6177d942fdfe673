"""The immunization service on loopback: images/s and latency under concurrent clients.

Set-up: a temporary registry where the bundled tiny-ldm@1 is published, a
development key folder, an SQLite database and an API key. The real service
(``photoimmune service serve``, no queue workers) runs in a subprocess on
127.0.0.1; clients are threads here, each with its own keep-alive connection,
each POSTing a photo to ``/v1/immunize`` and reading the signed PNG back.

* for each size (``--sizes``, default 128 and 512 px) and each number of
  concurrent clients (``--clients``, default 1, 4, 16): ``--requests`` requests
  in all; images/s, p50 and p99 latency, errors (any answer but 200 is one).
  Images/s is also shown relative to one client at the same size (the service
  immunizes one image at a time per process, so more clients queue: latency
  grows, throughput should hold);
* memory: ``--memory-requests`` (default 1000) more requests at 32 px, 4 clients;
  the server's resident memory (VmRSS) after the first tenth and at the end.

    .venv/bin/python bench/service.py [--steps 3] [--requests 32] [--memory-requests 1000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image
from registry_load import free_port  # bench/ is on sys.path when this script runs
from rich.console import Console
from rich.table import Table

from photoimmune.registry.admin import local_registry
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.samples import sample_pixels
from photoimmune.service import ServiceStore, add_key

CLI = str(Path(sys.executable).parent / "photoimmune")


def photo(size: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(sample_pixels("chelsea.png", size)).save(out, format="PNG")
    return out.getvalue()


def start(base: Path, steps: int, port: int) -> subprocess.Popen:
    local_registry(base / "registry", ["tiny-ldm@1"])
    keys = init_keys(base / "keys")
    args = ["--db", str(base / "service.db"), "--registry", str(base / "registry")]
    args += ["--keys", str(keys.path), "--port", str(port), "--workers", "0"]
    args += ["--steps", str(steps), "--max-sync-pixels", str(1024 * 1024), "--rate", "1000000"]
    log = open(base / "server.log", "wb")  # noqa: SIM115 (open for the server's lifetime)
    server = subprocess.Popen([CLI, "service", "serve", *args], stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited: see {base / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit("the service did not start within 300 s")


def run_case(url: str, key: str, data: bytes, clients: int, requests: int) -> dict:
    """``requests`` POSTs of ``data`` from ``clients`` threads: their latencies and errors."""
    latencies: list[float] = []
    errors = 0

    def client(count: int) -> None:
        nonlocal errors
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            for _ in range(count):
                started = time.perf_counter()
                answer = http.post(f"{url}/v1/immunize", files={"image": ("p.png", data)})
                latencies.append(time.perf_counter() - started)
                errors += answer.status_code != 200

    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "images_s": len(latencies) / seconds,
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "errors": errors,
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="per size and client count")
    parser.add_argument("--steps", type=int, default=3, help="PGD steps the service runs")
    parser.add_argument("--memory-requests", type=int, default=1000)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="photoimmune-bench-service-") as tmp:
        base = Path(tmp)
        port = free_port()
        server = start(base, args.steps, port)
        url = f"http://127.0.0.1:{port}"
        key = add_key(ServiceStore(f"sqlite:///{base / 'service.db'}"), "bench")
        try:
            run_case(url, key, photo(64), 1, 2)  # warm-up: models loaded, code paths hot
            table = Table(title=f"POST /v1/immunize on loopback ({args.steps} PGD steps)")
            for column in (
                "size",
                "clients",
                "images/s",
                "vs 1 client",
                "p50 s",
                "p99 s",
                "errors",
            ):
                table.add_column(column, justify="right")
            for size in args.sizes:
                data, reference = photo(size), None
                for clients in args.clients:
                    case = run_case(url, key, data, clients, max(args.requests, clients))
                    reference = reference or case["images_s"]
                    table.add_row(
                        f"{size} px", str(clients), f"{case['images_s']:.2f}",
                        f"{case['images_s'] / reference:.2f}x", f"{case['p50']:.3f}",
                        f"{case['p99']:.3f}", str(case["errors"]),
                    )  # fmt: skip
            console.print(table)
            memory(console, url, key, server.pid, args.memory_requests)
        finally:
            server.terminate()
            server.wait(60)


def memory(console: Console, url: str, key: str, pid: int, requests: int) -> None:
    """Resident memory of the server after a tenth of ``requests`` and after all of them."""
    data, tenth = photo(32), max(1, requests // 10)
    errors = run_case(url, key, data, 4, tenth)["errors"]
    early = rss_mib(pid)
    errors += run_case(url, key, data, 4, requests - tenth)["errors"]
    late = rss_mib(pid)
    console.print(
        f"memory over {requests} requests (32 px, 4 clients): {early:.0f} MiB after {tenth}, "
        f"{late:.0f} MiB after {requests} ({late / early:.3f}x); errors: {errors}"
    )


if __name__ == "__main__":
    main()
