"""Loopback load test of the registry server: honest clients, with hostile uploads in parallel.

Set-up: a temporary registry (SQLite) with ``--writers`` vendors (``w0``, ``w1``...),
each with its own key and one release already published; releases are built by
hand (descriptor plus ``--tensor-kib`` of tensors, no model needed). The real
server (``create_app`` under uvicorn, access log off) runs in a subprocess on
127.0.0.1 with an upload limit of ``--max-upload-mib``, so the client threads
and the server don't share a GIL, and its RSS is the server's alone.

Two phases of ``--seconds`` each, with the same honest load:

* **honest only** (the reference): ``--readers`` threads each walk what a TUF
  client fetches (``timestamp.json``, then the snapshot and the top-level targets
  it names, by version), and ``--writers`` threads each publish release after
  release for their own vendor (multipart upload of signed metadata and files).
  A write refused with 503 (every write slot busy) is retried after a short
  pause, as a client honouring ``Retry-After`` would; it fails only if it is not
  accepted within ``--write-deadline`` seconds.
* **honest + hostile**: the same, plus ``--hostile`` threads cycling through
  uploads anyone can send: an oversized chunked body with a lying
  ``Content-Length`` (raw socket, 4x the limit, to a real vendor so it takes a
  write slot), a 1 MiB upload for an unknown vendor, garbage metadata (random
  bytes, broken JSON, wrong types) to ``/admin/targets`` and ``/admin/root``, and
  a release signed by the wrong key.

Prints requests/s and latency percentiles per kind of request, ratios against the
honest-only phase, and the server's RSS (after warm-up, peak, growth). Exits 1 if
any honest request failed or the server's RSS grew more than ``--max-rss-growth-mib``
over its post-warm-up level; hostile answers are tallied by status (any 5xx other
than 503 is printed as a warning: anyone can send those requests).

    .venv/bin/python bench/registry_load.py [--seconds 10] [--readers 4] [--writers 2]
        [--hostile 4] [--max-upload-mib 16] [--max-rss-growth-mib 256]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table
from tuf.api.metadata import Metadata

from photoimmune.registry import metadata as tm
from photoimmune.registry.admin import LocalRegistry, add_vendor, init_registry
from photoimmune.registry.keys import generate_signer, load_signer
from photoimmune.registry.service import RegistryService

SERVER = """
import sys
from pathlib import Path

import uvicorn

from photoimmune.registry.server import create_app
from photoimmune.registry.service import RegistryService

app = create_app(RegistryService.open(Path(sys.argv[1])), max_upload_bytes=int(sys.argv[3]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""
WARMUP_S = 2.0
RETRY_PAUSE_S = 0.2
HONEST_KINDS = ("read timestamp", "read snapshot", "read targets", "publish")
#: A TUF client's refresh, in order: each role read, and the role whose version it names.
REFRESH_WALK = (("timestamp", "snapshot"), ("snapshot", "targets"), ("targets", None))


# -- releases and the registry ------------------------------------------------------------


def make_release(ref: str, tensor_kib: int, seed: int) -> dict[str, bytes]:
    """A release's descriptor and tensor file, made by hand: the server checks one against
    the other, never against a model, so no weights are needed."""
    import torch
    from safetensors.torch import save as save_safetensors

    from photoimmune.sdk.refs import ModelRef
    from photoimmune.sdk.targets import (
        DESCRIPTOR_NAME,
        AttackTarget,
        EncoderSpec,
        TensorFile,
        WeightFingerprints,
    )

    side = max(8, int((tensor_kib * 1024 / 12) ** 0.5) // 8 * 8)
    generator = torch.Generator().manual_seed(seed)
    tensors = save_safetensors(
        {
            "x_target": torch.rand(1, 3, side, side, generator=generator),
            "z_target": torch.rand(1, 4, side // 8, side // 8, generator=generator),
        }
    )
    target = AttackTarget(
        ref=ModelRef.parse(ref),
        fingerprints=WeightFingerprints(vae=f"{seed:064x}", denoiser=f"{seed + 1:064x}"),
        encoder=EncoderSpec(resolution=side, latent_scaling="0.18215"),
        tensors=TensorFile(sha256=hashlib.sha256(tensors).hexdigest(), length=len(tensors)),
    )
    descriptor = json.dumps(target.model_dump(mode="json"), sort_keys=True).encode()
    folder = tm.release_dir(target.ref)
    return {f"{folder}/{DESCRIPTOR_NAME}": descriptor, f"{folder}/{target.tensors.path}": tensors}


@dataclass
class Vendor:
    """One honest writer: its name, key, the role version it last published, a counter."""

    name: str
    signer: object
    current: Metadata | None = None
    published: int = 0

    def next_upload(self, tensor_kib: int) -> tuple[bytes, dict[str, bytes], Metadata]:
        """The signed next version of this vendor's role with one new release, and its files."""
        self.published += 1
        files = make_release(f"{self.name}/m{self.published}@1", tensor_kib, self.published)
        descriptor, tensors = files.values()
        base = None if self.current is None else Metadata.from_bytes(self.current.to_bytes())
        md = tm.vendor_release(base, descriptor, tensors, tm.LIFETIMES["vendor"])
        return tm.sign(md, [self.signer]), files, md


def make_registry(root: Path, writers: int, tensor_kib: int) -> tuple[Path, list[Vendor]]:
    """A registry folder where each writer vendor has published one release."""
    paths = init_registry(root / "registry", root_keys=1, root_threshold=1)
    service = RegistryService.open(paths.root)
    registry = LocalRegistry(service)
    targets_key = load_signer(paths.keys / "targets.pem")
    vendors = [Vendor(f"w{k}", generate_signer()) for k in range(writers)]
    for vendor in vendors:
        add_vendor(registry, vendor.name, [vendor.signer.public_key], 1, [targets_key])
        data, files, md = vendor.next_upload(tensor_kib)
        registry.publish(vendor.name, data, files)
        vendor.current = md
    service.store.engine.dispose()
    return paths.root, vendors


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path, port: int, max_upload: int, log: Path) -> subprocess.Popen:
    """The server in its own process (its stderr to ``log``), once it answers."""
    with open(log, "wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(folder), str(port), str(max_upload)], stderr=err
        )
    return answering(server, port, log=log)


def answering(
    server: subprocess.Popen,
    port: int,
    get: Callable[[str], httpx.Response] = httpx.get,
    log: Path | None = None,
) -> subprocess.Popen:
    """``server`` once it answers ``GET /metadata/timestamp.json`` on ``port`` (through
    ``get``); the benchmark ends if it exits first (see ``log``) or is silent for 120 s."""
    url = f"http://127.0.0.1:{port}/metadata/timestamp.json"
    see = "" if log is None else f": see {log}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the registry server exited with {server.returncode}{see}")
        try:
            if get(url).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the registry server did not answer within 120 s")


class RssMonitor(threading.Thread):
    """Samples the server's resident memory every 0.1 s; :meth:`peak` since the last reset."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.high = 0

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            with self.lock:
                self.high = max(self.high, rss)

    def reset(self) -> int:
        """Start a new peak from the current RSS; returns that RSS."""
        rss = self.process.memory_info().rss
        with self.lock:
            self.high = rss
        return rss

    def peak(self) -> int:
        with self.lock:
            return self.high


# -- what the clients do ------------------------------------------------------------------


@dataclass
class Tally:
    """Latencies and outcomes by kind of request, shared by the threads of one phase."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    retries: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, status: int | str, failure: str | None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[kind][status] += 1
            if failure is not None:
                self.failures[kind].append(failure)


def timed_get(http: httpx.Client, url: str) -> tuple[float, httpx.Response | None, str | None]:
    start = time.perf_counter()
    try:
        response = http.get(url)
    except httpx.HTTPError as exc:
        return time.perf_counter() - start, None, f"{url}: {exc!r}"
    failure = None if response.status_code == 200 else f"{url}: HTTP {response.status_code}"
    return time.perf_counter() - start, response, failure


def reader(base: str, stop: threading.Event, tally: Tally) -> None:
    """What a TUF client fetches on refresh: timestamp, then the snapshot and targets it names."""
    with httpx.Client(base_url=base, timeout=60.0) as http:
        while not stop.is_set():
            url = "/metadata/timestamp.json"
            for role, names in REFRESH_WALK:
                seconds, response, failure = timed_get(http, url)
                tally.record(f"read {role}", seconds, _status(response), failure)
                if names is None or response is None or failure:
                    break  # the walk is done, or starts again from the timestamp
                version = response.json()["signed"]["meta"][f"{names}.json"]["version"]
                url = f"/metadata/{version}.{names}.json"


def _status(response: httpx.Response | None) -> int | str:
    return "error" if response is None else response.status_code


def writer(base: str, vendor: Vendor, args, stop: threading.Event, tally: Tally) -> None:
    """Publish release after release for one vendor; 503s are retried, nothing else is."""
    with httpx.Client(base_url=base, timeout=120.0) as http:
        while not stop.is_set():
            data, files, md = vendor.next_upload(args.tensor_kib)
            parts = [("metadata", ("metadata.json", data))]
            parts += [(path, (path.rpartition("/")[2], blob)) for path, blob in files.items()]
            start = time.perf_counter()
            status, failure = _publish(http, vendor.name, parts, args.write_deadline, tally)
            tally.record("publish", time.perf_counter() - start, status, failure)
            if failure is not None:
                return  # the vendor's role is now out of step; stop this writer
            vendor.current = md


def _publish(http: httpx.Client, name: str, parts, deadline_s: float, tally: Tally):
    """POST one release until it is answered other than 503, or the deadline passes."""
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            response = http.post(f"/vendors/{name}/releases", files=parts)
        except httpx.HTTPError as exc:
            return "error", f"publish {name}: {exc!r}"
        if response.status_code == 200:
            return 200, None
        if response.status_code != 503 or time.monotonic() > give_up:
            return response.status_code, f"publish {name}: HTTP {response.status_code} " + (
                response.text[:200]
            )
        with tally.lock:
            tally.retries["publish"] += 1
        time.sleep(RETRY_PAUSE_S)


def oversized_chunked(port: int, limit: int) -> int:
    """4x the upload limit, chunked, with a lying Content-Length, to a real vendor."""
    boundary = "loadtestboundary"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        conn.sendall(
            (
                "POST /vendors/w0/releases HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name=metadata; filename="m"\r\n\r\n'
        ).encode()
        chunk = b"A" * 65536
        try:
            for body in [head] + [chunk] * (4 * limit // len(chunk)):
                conn.sendall(b"%x\r\n%s\r\n" % (len(body), body))
            conn.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server cut us off, as it should: its answer is waiting
        return _status_line(conn)


def _status_line(conn: socket.socket) -> int:
    data = b""
    try:
        while b"\r\n" not in data:
            more = conn.recv(4096)
            if not more:
                break
            data += more
    except OSError:
        pass
    parts = data.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def hostile_requests(base: str, port: int, limit: int, rng: random.Random):
    """Each hostile kind as (name, callable returning a status)."""
    http = httpx.Client(base_url=base, timeout=120.0)
    stranger = generate_signer()
    forged = Vendor("w0", stranger, published=10_000 + rng.randrange(10**6))

    def unknown_vendor() -> int:
        body = {"metadata": ("m.json", os.urandom(1 << 20))}
        return http.post(f"/vendors/nobody{rng.randrange(10**6)}/releases", files=body).status_code

    def garbage_metadata() -> int:
        body = rng.choice(
            [
                os.urandom(rng.randrange(1, 4096)),
                b'{"signed": {"_type": "targets", "version": "two"}, "signatures": []}',
                b'{"signed": ' * 2000,
                json.dumps({"signed": [], "signatures": {}}).encode(),
            ]
        )
        return http.post(rng.choice(["/admin/targets", "/admin/root"]), content=body).status_code

    def wrong_key() -> int:
        data, files, _ = forged.next_upload(4)
        parts = [("metadata", ("metadata.json", data))]
        parts += [(path, (path.rpartition("/")[2], blob)) for path, blob in files.items()]
        return http.post("/vendors/w0/releases", files=parts).status_code

    return [
        ("hostile oversized chunked", lambda: oversized_chunked(port, limit)),
        ("hostile unknown vendor", unknown_vendor),
        ("hostile garbage metadata", garbage_metadata),
        ("hostile wrong key", wrong_key),
    ]


def hostile(base: str, port: int, limit: int, seed: int, stop: threading.Event, tally: Tally):
    """Cycle through the hostile kinds until stopped; every answer is tallied by status."""
    rng = random.Random(seed)
    kinds = hostile_requests(base, port, limit, rng)
    turn = seed
    while not stop.is_set():
        name, send = kinds[turn % len(kinds)]
        turn += 1
        start = time.perf_counter()
        try:
            status: int | str = send()
        except (httpx.HTTPError, OSError) as exc:
            status = f"error {type(exc).__name__}"
        tally.record(name, time.perf_counter() - start, status, None)


# -- a phase, and the report --------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    tally: Tally
    rss_start: int
    rss_peak: int


def run_phase(name: str, args, base: str, port: int, vendors, monitor, hostile_threads: int):
    """Run the honest load (and ``hostile_threads`` attackers) for ``--seconds``."""
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=reader, args=(base, stop, tally)) for _ in range(args.readers)
    ]
    threads += [threading.Thread(target=writer, args=(base, v, args, stop, tally)) for v in vendors]
    limit = args.max_upload_mib << 20
    threads += [
        threading.Thread(target=hostile, args=(base, port, limit, k, stop, tally), daemon=True)
        for k in range(hostile_threads)
    ]
    rss_start = monitor.reset()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=args.write_deadline + 60)
    seconds = time.perf_counter() - started
    return Phase(name, seconds, tally, rss_start, monitor.peak())


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1]


def report(phases: list[Phase], console: Console) -> None:
    """One table: every kind of request in every phase, with ratios to the honest-only phase."""
    reference = phases[0]
    table = Table(title="registry under load (loopback)")
    for column in (
        "phase",
        "requests",
        "n",
        "req/s",
        "p50 ms",
        "p99 ms",
        "rate vs ref",
        "p99 vs ref",
    ):
        table.add_column(column, justify="left" if column in ("phase", "requests") else "right")
    for phase in phases:
        for kind, latencies in sorted(phase.tally.latencies.items()):
            rate = len(latencies) / phase.seconds
            p99 = _percentile(latencies, 99)
            ref = reference.tally.latencies.get(kind)
            vs_rate = vs_p99 = "-"
            if ref and phase is not reference:
                vs_rate = f"{rate / (len(ref) / reference.seconds):.2f}x"
                vs_p99 = f"{p99 / _percentile(ref, 99):.2f}x"
            table.add_row(
                phase.name,
                kind,
                str(len(latencies)),
                f"{rate:.1f}",
                f"{statistics.median(latencies) * 1000:.1f}",
                f"{p99 * 1000:.1f}",
                vs_rate,
                vs_p99,
            )
    console.print(table)
    for phase in phases:
        growth = (phase.rss_peak - phase.rss_start) / 2**20
        console.print(
            f"{phase.name}: server RSS {phase.rss_start / 2**20:.0f} MiB at start, peak "
            f"{phase.rss_peak / 2**20:.0f} MiB (+{growth:.0f} MiB); publish retries after 503: "
            f"{phase.tally.retries['publish']}"
        )
        for kind, statuses in sorted(phase.tally.statuses.items()):
            if kind.startswith("hostile"):
                console.print(f"  {kind}: " + ", ".join(f"{s}: {n}" for s, n in statuses.items()))


def verdict(phases: list[Phase], baseline_rss: int, args) -> list[str]:
    """What makes this run fail: honest failures, memory beyond the bound."""
    problems = []
    for phase in phases:
        for kind in HONEST_KINDS:
            for failure in phase.tally.failures.get(kind, [])[:5]:
                problems.append(f"{phase.name}: honest {kind} failed: {failure}")
        growth = (phase.rss_peak - baseline_rss) / 2**20
        if growth > args.max_rss_growth_mib:
            problems.append(
                f"{phase.name}: server RSS grew {growth:.0f} MiB over its post-warm-up level "
                f"(bound {args.max_rss_growth_mib} MiB)"
            )
        if not phase.tally.latencies.get("publish"):
            problems.append(f"{phase.name}: no release was published at all")
    return problems


def _server_error(status: int | str) -> bool:
    """A 5xx other than 503 (a full house of writes, which is by design)."""
    return isinstance(status, int) and status >= 500 and status != 503


def warnings_for(phases: list[Phase], server_log: Path) -> list[str]:
    """Not failures of this bench, but worth a look: server errors on hostile input."""
    notes = []
    for phase in phases:
        for kind, statuses in phase.tally.statuses.items():
            bad = {s: n for s, n in statuses.items() if _server_error(s)}
            if kind.startswith("hostile") and bad:
                notes.append(f"{phase.name}: {kind} got server errors {bad}")
    tracebacks = server_log.read_text(errors="replace").count("Traceback")
    if tracebacks:
        notes.append(f"the server logged {tracebacks} tracebacks ({server_log})")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--hostile", type=int, default=4)
    parser.add_argument("--tensor-kib", type=int, default=256)
    parser.add_argument("--max-upload-mib", type=int, default=16)
    parser.add_argument("--max-rss-growth-mib", type=float, default=256.0)
    parser.add_argument("--write-deadline", type=float, default=60.0)
    args = parser.parse_args()

    console = Console(width=132)
    with tempfile.TemporaryDirectory(prefix="registry-load-") as tmp:
        root = Path(tmp)
        folder, vendors = make_registry(root, args.writers, args.tensor_kib)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server_log = root / "server.log"
        server = start_server(folder, port, args.max_upload_mib << 20, server_log)
        monitor = RssMonitor(server.pid)
        monitor.start()
        try:
            warm_up = argparse.Namespace(**{**vars(args), "seconds": WARMUP_S})
            run_phase("warm-up", warm_up, base, port, vendors, monitor, 0)
            baseline_rss = monitor.reset()
            phases = [
                run_phase("honest only", args, base, port, vendors, monitor, 0),
                run_phase("honest + hostile", args, base, port, vendors, monitor, args.hostile),
            ]
        finally:
            monitor.stop.set()
            server.terminate()
            server.wait(timeout=30)
        report(phases, console)
        problems = verdict(phases, baseline_rss, args)
        for note in warnings_for(phases, server_log):
            console.print(f"[yellow]warning:[/yellow] {note}", markup=True)
    for problem in problems:
        console.print(f"[red]FAIL:[/red] {problem}", markup=True)
    if problems:
        raise SystemExit(1)
    console.print("ok: every honest request succeeded and the server's memory stayed bounded")


if __name__ == "__main__":
    main()
