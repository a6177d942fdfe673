"""The resolver client against servers that are not, or not well-behaved, resolvers.

A ``--resolver`` URL is whatever someone typed: a web page, a resolver's asset URL, a
server that drips its answer or never ends it. Each is a :class:`ResolverError` that
names the URL and says what to check, never a traceback or a hang.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from photoimmune.resolver import (
    ResolverClient,
    ResolverError,
    ResolverUnavailableError,
    UnknownAssetError,
    client,
    recover,
)
from photoimmune.sdk.codec import encode_image
from photoimmune.sdk.samples import sample_pixels

from .helpers import WAIT_S

# A double gives up after these, so that a client without a deadline or a size limit
# fails the test instead of hanging it or filling the memory.
GIVE_UP_S = 30.0
GIVE_UP_BYTES = 16 << 20
NOT_A_RESOLVER = "did not answer as a photoimmune resolver"


class MisbehavingResolver:
    """Test double: a loopback HTTP server that answers every request the same wrong way.

    By default ``status`` and ``body`` at once. ``drip="body"`` or ``"headers"``: a 200
    whose chunked body (or whose headers) comes one byte every ``every`` seconds.
    ``endless``: a chunked 200 that does not end (until :data:`GIVE_UP_BYTES`).

    >>> with MisbehavingResolver(b"<html>") as url:  # doctest: +SKIP
    ...     ResolverClient(url).lookup(0)
    """

    def __init__(
        self,
        body: bytes = b"",
        *,
        status: int = 200,
        drip: str | None = None,
        every: float = 5.0,
        endless: bool = False,
    ) -> None:
        self.body = body
        self.status = status
        self.drip = drip
        self.every = every
        self.endless = endless
        self._stop = threading.Event()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.close_connection = True
                # OSError: the client hung up, as its deadline or size limit makes it
                with contextlib.suppress(OSError):
                    double._answer(self)

            do_POST = do_GET  # noqa: N815 (http.server's name): an upload, answered unread

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    def __enter__(self) -> str:
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}"

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        out = handler.wfile  # unbuffered: each write goes out at once
        if self.drip == "headers":
            out.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            self._keep_sending(out, b"a", self.every)
        elif self.drip == "body" or self.endless:
            out.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            if self.endless:
                self._keep_sending(out, b"10000\r\n" + b"0" * 0x10000 + b"\r\n", 0)
            else:
                self._keep_sending(out, b"1\r\n{\r\n", self.every)
        else:
            handler.send_response(self.status)
            handler.send_header("Content-Length", str(len(self.body)))
            handler.end_headers()
            out.write(self.body)

    def _keep_sending(self, out, data: bytes, every: float) -> None:
        """``data`` every ``every`` seconds until the client hangs up or the double gives up."""
        end, sent = time.monotonic() + GIVE_UP_S, 0
        while sent < GIVE_UP_BYTES and time.monotonic() < end:
            out.write(data)
            sent += len(data)
            if self._stop.wait(every):
                return


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>a web page</body></html>",
        b'{"matches":"x"}',
        b'{"alg":"io.iscc.v0","max_bits":10,"matches":[{"asset":1}]}',
        b"[]",
        b"",
        encode_image(sample_pixels("coffee.png", 16), "PNG"),  # a resolver's asset URL
    ],
)
def test_an_answer_that_is_not_a_resolvers_names_the_url_and_what_to_check(body):
    with (
        MisbehavingResolver(body) as url,
        pytest.raises(ResolverUnavailableError, match=NOT_A_RESOLVER) as caught,
    ):
        ResolverClient(url).lookup(0)
    assert url in str(caught.value) and "check that the URL" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, b"[1]", ResolverError),
        (400, b"<html>bad request</html>", ResolverError),
        (404, b'"no such page"', UnknownAssetError),
        (502, b"<html>bad gateway</html>", ResolverUnavailableError),
    ],
)
def test_an_error_answer_that_is_not_our_json_is_still_our_error(status, body, error):
    with MisbehavingResolver(body, status=status) as url, pytest.raises(error, match=url):
        ResolverClient(url).asset(1)


@pytest.mark.parametrize(
    ("drip", "every", "ask"),
    [
        ("body", 0.1, "lookup"),  # bytes keep coming: the deadline is checked between them
        ("body", 5.0, "asset"),  # a read waits past the deadline: the watchdog ends it
        ("headers", 0.1, "lookup"),  # no chunk to check between: only the watchdog ends it
        ("headers", 5.0, "asset"),
    ],
)
def test_a_dripping_resolver_cannot_hold_a_request_past_its_deadline(drip, every, ask):
    with MisbehavingResolver(drip=drip, every=every) as url:
        resolver = ResolverClient(url, deadline=1.0)
        with pytest.raises(ResolverUnavailableError, match=r"no complete answer within 1 s"):
            getattr(resolver, ask)(0)


def test_an_endless_answer_is_cut_off_at_the_size_limit(monkeypatch):
    with MisbehavingResolver(endless=True) as url:
        with pytest.raises(ResolverUnavailableError, match="more than 1,048,576 bytes"):
            ResolverClient(url).lookup(0)
        # The asset limit is the store's (256 MiB): the test lowers it, not the bytes sent.
        monkeypatch.setattr(client, "MAX_ASSET_BYTES", 100_000)
        with pytest.raises(ResolverUnavailableError, match="more than 100,000 bytes"):
            ResolverClient(url).asset(1)
    with (
        MisbehavingResolver(bytes(100_001)) as url,  # an ordinary answer, past the limit
        pytest.raises(ResolverUnavailableError, match="more than 100,000 bytes"),
    ):
        ResolverClient(url).asset(1)


def test_recover_says_so_for_the_plugin_and_the_cli_alike():
    with (
        MisbehavingResolver(b"<html>") as url,
        pytest.raises(ResolverUnavailableError, match=NOT_A_RESOLVER),
    ):
        recover(sample_pixels("coffee.png", 32), [url])


def test_verify_with_a_resolver_that_is_not_one_exits_1_without_a_traceback(tmp_path):
    photo = tmp_path / "copy.png"  # carries no manifest: verify asks the resolver
    photo.write_bytes(encode_image(sample_pixels("coffee.png", 32), "PNG"))
    script = Path(sys.executable).with_name("photoimmune")
    with MisbehavingResolver(b"<html><body>a web page</body></html>") as url:
        result = subprocess.run(
            [str(script), "verify", str(photo), "--resolver", url],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            env={**os.environ, "COLUMNS": "300"},
        )
    assert result.returncode == ResolverUnavailableError.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert NOT_A_RESOLVER in result.stderr and url in result.stderr
