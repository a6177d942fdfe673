"""The service's HTTP API under hostile or careless clients: real app, real server.

An upload's key is checked from its headers before any of its body is read; a
body that does not arrive in time gets 408; the form parser's refusals and
pydantic's say what to do; what a client sent is echoed only in part; HEAD works
where GET does; ``serve`` starts uvicorn with a cap on connections.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from photoimmune.sdk.serving import LIMIT_CONCURRENCY
from photoimmune.service import Service, ServiceSettings, add_key, create_app
from photoimmune.service.apikeys import revoke_keys

from .helpers import WAIT_S, LoopbackServer, service_world
from .test_service import bearer, photo_bytes

SETTINGS = ServiceSettings(steps=2, max_sync_pixels=32 * 32)
DEADLINE_S = 2.0  # the test server's body deadline: short, so a 408 comes in seconds
UPLOADS = ("/v1/immunize", "/v1/jobs")


@pytest.fixture
def service(tmp_path) -> Iterator[Service]:
    registry, keys = service_world()
    opened = Service.open(f"sqlite:///{tmp_path / 'service.db'}", registry, keys, SETTINGS)
    yield opened
    opened.close()


@pytest.fixture
def server(service) -> Iterator[LoopbackServer]:
    running = LoopbackServer(create_app(service, body_deadline_s=DEADLINE_S))
    running.start()
    yield running
    running.stop()


def stalled_upload(
    port: int, path: str, headers: str = "", *, until_closed: bool = False
) -> tuple[int, dict, bytes]:
    """A POST that declares 10 MB, sends 200 KB of a photo part and stops: the status,
    the JSON and (``until_closed``) what follows it before the server closes the connection."""
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 10000000\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
            + part
            + b"\x89PNG" * 50_000
        )
        answer = sock.makefile("rb")
        status = int(answer.readline().split()[1])
        length = 0
        while (line := answer.readline().strip()) != b"":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = json.loads(answer.read(length))
        return status, body, answer.read() if until_closed else b""  # a hang: timeout


@pytest.mark.parametrize("path", UPLOADS)
def test_an_upload_without_a_valid_key_is_refused_before_its_body_arrives(server, service, path):
    status, body, _ = stalled_upload(server.port, path)
    assert status == 401 and "Bearer" in body["error"], body
    revoked = add_key(service.store, "gone")
    revoke_keys(service.store, "gone")
    status, body, _ = stalled_upload(server.port, path, f"Authorization: Bearer {revoked}\r\n")
    assert status == 403 and "revoked" in body["error"], body


def test_a_body_that_stalls_gets_408_and_its_connection_is_closed(server, service):
    key = add_key(service.store, "slow")
    auth = f"Authorization: Bearer {key}\r\n"
    status, body, rest = stalled_upload(server.port, "/v1/jobs", auth, until_closed=True)
    assert status == 408, body
    assert "faster connection" in body["error"] and "smaller file" in body["error"]
    assert rest == b""  # closed: the server reads no more of the slow body
    assert service.store.catalog.originals() == []  # nothing was queued
    # the server is still serving, and a whole upload within the deadline is taken
    files = {"image": ("photo.png", photo_bytes(32), "image/png")}
    done = httpx.post(f"{server.url}/v1/jobs", files=files, headers=bearer(key), timeout=WAIT_S)
    assert done.status_code == 202, done.text


def test_unauthenticated_malformed_forms_learn_nothing_about_their_upload(service):
    http = TestClient(create_app(service))
    many = [("eps", (None, b"8/255"))] * 2000
    for path in UPLOADS:
        for content_type, content in [
            ("multipart/form-data; boundary=b", b"garbage"),
            ("multipart/form-data", b"--b\r\n"),
            ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: x\r\n\r\n"),
        ]:
            answer = http.post(path, content=content, headers={"Content-Type": content_type})
            assert answer.status_code == 401 and "Bearer" in answer.json()["error"], answer.text
        answer = http.post(path, files=many)
        assert answer.status_code == 401 and "Bearer" in answer.json()["error"], answer.text


def test_the_key_is_checked_first_under_a_path_prefix_too(service):
    # Behind a proxy that mounts the service under /api, the full path starts with it.
    http = TestClient(create_app(service), root_path="/api")
    for path in UPLOADS:
        answer = http.post(f"/api{path}", files={"image": ("a.png", b"not a photo")})
        assert answer.status_code == 401 and "Bearer" in answer.json()["error"], answer.text


def test_forms_that_cannot_be_read_say_how_to_send_the_photo(service):
    http = TestClient(create_app(service))
    key = bearer(add_key(service.store, "careless"))
    photo = {"image": ("photo.png", photo_bytes(32), "image/png")}
    refused = {
        "Invalid multipart data": http.post(
            "/v1/jobs",
            content=b"garbage",
            headers={**key, "Content-Type": "multipart/form-data; boundary=b"},
        ),
        "Missing boundary": http.post(
            "/v1/jobs", content=b"--b\r\n", headers={**key, "Content-Type": "multipart/form-data"}
        ),
        "Part exceeded maximum size": http.post(
            "/v1/jobs", files=photo, data={"eps": "1" * (1100 << 10)}, headers=key
        ),
        "image: ": http.post("/v1/immunize", data={"image": "not a file"}, headers=key),
        "image:": http.post("/v1/immunize", data={"eps": "8/255"}, headers=key),
    }
    for said, answer in refused.items():
        assert answer.status_code in (400, 422), (said, answer.text)
        error = answer.json()["error"]
        assert said in error and "file part named image" in error, error
        assert "UploadFile" not in error and "<class" not in error, error
    assert service.store.catalog.originals() == []
    # the repeated-field check still runs, once the key is known
    twice = http.post("/v1/jobs", files=photo, data={"eps": ["8/255", "4/255"]}, headers=key)
    assert twice.status_code == 400 and "gives eps more than once" in twice.json()["error"]


def test_what_a_client_sent_is_echoed_only_in_part(service):
    http = TestClient(create_app(service))
    key = bearer(add_key(service.store, "verbose"))
    photo = {"image": ("photo.png", photo_bytes(32), "image/png")}
    unknown = http.post("/v1/immunize", files=photo, data={"models": "a" * 20_000}, headers=key)
    assert unknown.status_code == 422
    error = unknown.json()["error"]
    assert "a" * 80 + "…" in error and "a" * 81 not in error, error
    assert "photoimmune/tiny-ldm" in error  # still says what to choose
    missing = http.get("/static/" + "b" * 10_000)
    assert missing.status_code == 404
    assert "b" * 80 + "…" in missing.json()["error"] and len(missing.text) < 400, missing.text


def test_head_is_answered_wherever_get_is_without_new_documented_operations(service):
    http = TestClient(create_app(service))
    key = bearer(add_key(service.store, "head"))
    assert http.head("/").status_code == 200
    assert http.head("/v1/models").status_code == 200
    assert http.head("/v1/jobs/nope/result").status_code == 401
    assert http.head("/v1/jobs/nope/result", headers=key).status_code == 404
    assert http.head("/v1/jobs/nope", headers=key).status_code == 404
    methods = {
        m for operations in http.get("/openapi.json").json()["paths"].values() for m in operations
    }
    assert methods == {"get", "post"}


def test_serve_refuses_connections_past_its_limit_with_503(tmp_path):
    registry, keys = service_world()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli = str(Path(sys.executable).parent / "photoimmune")
    args = ["--registry", str(registry), "--keys", str(keys), "--workers", "0"]
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    served = subprocess.Popen(
        [cli, "service", "serve", "--db", db, *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    idle: list[socket.socket] = []
    url = f"http://127.0.0.1:{port}/v1/models"
    try:
        _wait_until_serving(url, served)
        for _ in range(LIMIT_CONCURRENCY):  # connections that never send a request
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT_S))
        # each connection counts once the server has accepted it: wait for the cap
        give_up = time.monotonic() + WAIT_S
        while httpx.get(url, timeout=WAIT_S).status_code != 503:
            assert time.monotonic() < give_up, "the server never refused past its limit"
            time.sleep(0.1)
        for sock in idle:
            sock.close()
        idle.clear()
        answer = _wait_until_serving(url, served)
        assert answer.status_code == 200
    finally:
        for sock in idle:
            sock.close()
        served.terminate()
        served.wait(WAIT_S)


def _wait_until_serving(url: str, served: subprocess.Popen) -> httpx.Response:
    give_up = time.monotonic() + WAIT_S
    while True:
        assert served.poll() is None, "the service exited"
        assert time.monotonic() < give_up, "the service did not start"
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.2)
