"""Run an HTTP app (the registry, the manifest resolver, the service) with uvicorn, bounded.

uvicorn has no deadline for a request's headers, so a connection that sends nothing is
held until its client leaves. The concurrency limit keeps such connections from growing
without bound (past it, a request gets 503 at once rather than queueing with its upload);
each app gives request bodies their own deadline. A reverse proxy's header timeout is
what closes silent connections: docs/security.md.

The servers' shared manners live here too: what a message repeats of a client's value
(:func:`excerpt`), names a request gives twice (:func:`repeated_names`), and HEAD
wherever GET is answered (:func:`answer_head`).

Example:
    >>> run_server(app, "127.0.0.1", 8470)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Connections (silent ones included) and requests a server holds at once; well above
#: what a vendor's or a publisher's clients keep open.
LIMIT_CONCURRENCY = 128
#: Seconds an idle keep-alive connection is kept between requests: a client that means to
#: send another request does so at once, and each kept connection counts against the limit.
TIMEOUT_KEEP_ALIVE_S = 5
#: Characters of a client's value a message repeats: enough to spot it, never a 20 KB field.
ECHO_CHARS = 80


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


def excerpt(value: object) -> str:
    """``value`` as an error message repeats it: its first :data:`ECHO_CHARS` characters.

    Example:
        >>> excerpt("x" * 100) == "x" * 80 + "…"
        True
    """
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}…"


def repeated_names(items: Iterable[tuple[str, object]]) -> list[str]:
    """The names given more than once (form fields, upload parts, query parameters), sorted.

    Frameworks keep one value per name, so a repeated one would silently win or vanish.

    Example:
        >>> repeated_names([("image", 1), ("eps", "8/255"), ("image", 2)])
        ['image']
    """
    counts = Counter(name for name, _ in items)
    return sorted(name for name, n in counts.items() if n > 1)


def answer_head(app: FastAPI) -> None:
    """Answer HEAD wherever ``app`` answers GET (caches, mirrors and health checks use it).

    FastAPI's routes, unlike Starlette's, don't; one undocumented HEAD route per GET keeps
    the schema (and so its fuzzing) to one operation each. Call it once the GET routes are in.
    """
    from fastapi.routing import APIRoute

    for route in list(app.routes):
        if isinstance(route, APIRoute) and "GET" in (route.methods or set()):
            app.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)
