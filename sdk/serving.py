"""Run an HTTP app (the registry, the manifest resolver, the service) with uvicorn, bounded.

uvicorn has no deadline for a request's headers, so a connection that sends nothing (or
drips its headers) would be held until its client leaves: :func:`header_deadline_protocol`
closes it :data:`HEADER_DEADLINE_S` after it opened or its last response ended. The
concurrency limit bounds how many are open at once (past it, a request gets 503 at once
rather than queueing with its upload); each app gives request bodies their own deadline.

The servers' shared manners live here too: what a message repeats of a client's value
(:func:`excerpt`), names a request gives twice (:func:`repeated_names`), and HEAD
wherever GET is answered (:func:`answer_head`).

Example:
    >>> run_server(app, "127.0.0.1", 8470)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
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
#: Seconds a connection has to send a whole request's headers, from when it opens or its
#: last response ends; any client sends them at once.
HEADER_DEADLINE_S = 10.0
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
        http=header_deadline_protocol(),
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_keep_alive=TIMEOUT_KEEP_ALIVE_S,
    )


def header_deadline_protocol(seconds: float = HEADER_DEADLINE_S) -> type:
    """uvicorn's h11 protocol, closing a connection that has no request with the app
    ``seconds`` after it opened or its last response ended: one whose next request's
    headers are not all in (slow-loris connections), or one still sending the body of a
    request answered without it.

    A request whose headers are in is left to the app, which gives its body a deadline
    and may take as long as its work does.

    Example:
        >>> uvicorn.run(app, http=header_deadline_protocol(5.0))  # doctest: +SKIP
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(seconds, self._headers_overdue)

        def _headers_overdue(self) -> None:
            # Overdue unless a request is with the app: none has begun (h11 holds a
            # request back until its headers are whole), or the last was answered while
            # its client still drips a body nobody reads (a 404 or 413 sent before it).
            answered = self.cycle is None or self.cycle.response_complete
            if answered and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


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
