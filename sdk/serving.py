"""Run an HTTP app (the registry, the manifest resolver, the service) with uvicorn, bounded.

uvicorn has no deadline for a request's headers, so a connection that sends nothing is
held until its client leaves. The concurrency limit keeps such connections from growing
without bound (past it, a request gets 503 at once rather than queueing with its upload);
each app gives request bodies their own deadline. A reverse proxy's header timeout is
what closes silent connections: docs/security.md.

Example:
    >>> run_server(app, "127.0.0.1", 8470)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

#: Connections (silent ones included) and requests a server holds at once; well above
#: what a vendor's or a publisher's clients keep open.
LIMIT_CONCURRENCY = 128
#: Seconds an idle keep-alive connection is kept between requests: a client that means to
#: send another request does so at once, and each kept connection counts against the limit.
TIMEOUT_KEEP_ALIVE_S = 5


def run_server(app: Any, host: str, port: int, *, access_log: bool = True) -> None:
    """Serve ``app`` on ``host:port`` until interrupted, within the limits above."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_keep_alive=TIMEOUT_KEEP_ALIVE_S,
    )
