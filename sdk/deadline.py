"""One deadline for an HTTP request, however slowly the server answers.

httpx bounds each read, not a response: a server that drips its answer never trips a
read timeout, and one dripping its *headers* is read byte by byte with no chunk to
check a deadline between. :class:`Deadline` caps every timeout at the time left and,
at the deadline, shuts down the sockets the request opened, which wakes a blocked
read. The registry's and the resolver's clients share it; each says in its own words
what a missed deadline means.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress

import httpx


class Deadline:
    """A deadline ``seconds`` from now (None: none), for the requests made inside it.

    Pass :meth:`trace` as httpx's ``"trace"`` extension so the deadline sees each
    connection the request opens: it sees them all when the client keeps none alive
    (``httpx.Limits(max_keepalive_connections=0)``).

    Example:
        >>> with Deadline(30.0) as deadline:  # doctest: +SKIP
        ...     client.get(url, timeout=deadline.within(client.timeout),
        ...                extensions={"trace": deadline.trace})
        >>> Deadline(None).left() is None
        True
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._at = None if seconds is None else time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._timer = None if seconds is None else threading.Timer(seconds, self._fire)

    def __enter__(self) -> Deadline:
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *_exc) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def left(self) -> float | None:
        """Seconds left (never below 0), or None without a deadline."""
        return None if self._at is None else max(self._at - time.monotonic(), 0.0)

    @property
    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return self.left() == 0.0

    def within(self, own: httpx.Timeout) -> httpx.Timeout:
        """``own`` timeouts, none longer than the time left."""
        left = self.left()
        if left is None:
            return own
        connect, read, write, pool = (
            left if t is None else min(t, left)
            for t in (own.connect, own.read, own.write, own.pool)
        )
        return httpx.Timeout(connect=connect, read=read, write=write, pool=pool)

    def trace(self, event: str, info: dict) -> None:
        """httpcore's trace hook: remembers each socket the request connects."""
        if event == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self._sockets.append(sock)

    def _fire(self) -> None:
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
