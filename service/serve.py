"""``photoimmune service serve``: the API in this process, the workers in their own.

Workers are separate processes (spawned: PyTorch and forked threads don't mix),
each a :class:`~.worker.ServiceWorker` over the same database; a supervisor
thread starts a new one whenever one dies, and the queue's leases hand the
dead one's job to the next. With ``engine="ray"`` one worker process drives
``workers`` Ray actors instead. Stopping the service (Ctrl-C, SIGTERM) stops
the workers; a job they were on stays queued and is finished after a restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .settings import ServiceSettings

logger = logging.getLogger(__name__)
#: Seconds between the supervisor's looks at its workers.
SUPERVISE_S = 2.0


def work(db: str, registry: str, keys: str, settings_json: str, root: str | None = None) -> None:
    """A worker process's body: work the queue until SIGTERM."""
    from .runtime import Service
    from .worker import ServiceWorker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    settings = ServiceSettings.model_validate_json(settings_json)
    # The parent made the database: a worker never makes a new, empty one in its place.
    service = Service.open(
        db, registry, keys, settings, root=root, created_by="photoimmune service serve"
    )
    ServiceWorker(service.store, service.offer, service.signer, settings).run(stop)


class Workers:
    """The worker processes, kept at their number by a supervisor thread."""

    def __init__(self, count: int, args: tuple[Any, ...]) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._args = args
        self._processes: list[Any] = []
        self._halt = threading.Event()
        for _ in range(count):
            self._processes.append(self._start())
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _start(self) -> Any:
        process = self._context.Process(target=work, args=self._args, daemon=True)
        process.start()
        return process

    def _supervise(self) -> None:
        while not self._halt.wait(SUPERVISE_S):
            for i, process in enumerate(self._processes):
                if not process.is_alive() and not self._halt.is_set():
                    logger.warning(
                        "service: worker %d exited (%s); starting another; its job is "
                        "retried when its lease lapses",
                        process.pid,
                        process.exitcode,
                    )
                    self._processes[i] = self._start()

    def stop(self, timeout: float = 30.0) -> None:
        self._halt.set()
        self._supervisor.join()
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def serve(
    db: str,
    registry: str | os.PathLike[str],
    keys: str | os.PathLike[str],
    settings: ServiceSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8490,
    root: str | os.PathLike[str] | None = None,
    ready: Callable[[], object] | None = None,
) -> None:
    """Run the service until interrupted: the API on ``host:port``, and its workers.

    ``ready`` is called once the registry, keys, weights and database are checked and the
    workers started, just before the API starts: the CLI says "starting on ..." then, so
    a start that is refused never announces itself.

    Example:
        >>> serve("sqlite:///s.db", "out/demo/registry", "out/demo/keys")  # doctest: +SKIP
    """
    from photoimmune.sdk.serving import run_server

    from .app import create_app
    from .runtime import Service

    settings = settings or ServiceSettings()
    # The weights are checked here, once, not in each worker: a worker restarted after a
    # new release must still start (the release is then not offered until its weights are given).
    service = Service.open(db, registry, keys, settings, root=root, check_weights=True)
    count = min(settings.workers, 1) if settings.engine == "ray" else settings.workers
    args = (db, os.fspath(registry), os.fspath(keys), settings.model_dump_json())
    workers = Workers(count, (*args, None if root is None else os.fspath(Path(root))))
    # uvicorn stops on SIGTERM, then raises that signal again: under the default
    # handler it would end this process before `finally` stops the workers, and
    # they would live on as orphans. Raising SystemExit lets `finally` run.
    signal.signal(signal.SIGTERM, _exit)
    try:
        if ready is not None:
            ready()
        # "Uvicorn running on ..." says when it answers; one access line per request would not.
        run_server(create_app(service), host, port, access_log=False)
    finally:
        workers.stop()
        service.close()
