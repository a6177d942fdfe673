"""Property-based fuzzing of the registry's HTTP API: no request, however odd, gets a 5xx.

Anyone on the network can send the registry anything, so every answer to a bad
request must be a 4xx that says what was wrong, never a 500 with a logged traceback.
Two generators, both against the real app (``create_app``) in process, through
FastAPI's TestClient, over a real registry in a temporary folder (vendor ``acme``
with one release published):

* **schemathesis**, from the app's own OpenAPI document: every operation, with
  parameters that match the schema and ones that don't;
* **Hypothesis**, for what the OpenAPI document can't describe: the raw POST bodies
  (TUF metadata, mutated or not, and multipart uploads, well-formed or broken),
  methods the API lacks, traversal and percent-encoded paths, absurd versions, and
  headers that lie (a ``Content-Length`` the body doesn't match, odd boundaries).

After every request the registry must still answer an honest read. An upload the
registry accepts is undone by reopening a pristine copy, so examples stay
independent. ``make fuzz`` raises the example counts (``PHOTOIMMUNE_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import event, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from photoimmune.registry.server import create_app

from .helpers import fuzz_settings, tiny_release

# -- the registry under test --------------------------------------------------------------


class ApiRegistry:
    """The app over a registry copy, the keys an honest vendor and admin hold, and seeds."""

    def __init__(self, base: Path) -> None:
        from photoimmune.registry.admin import LocalRegistry, add_vendor, init_registry
        from photoimmune.registry.keys import load_signer, write_key

        self.base = base
        paths = init_registry(base / "pristine", root_keys=1, root_threshold=1)
        self.targets_key = load_signer(paths.keys / "targets.pem")
        self.acme = write_key(base / "acme.pem")
        service = self._open(paths.root)
        registry = LocalRegistry(service)
        add_vendor(registry, "acme", [self.acme.public_key], 1, [self.targets_key])
        first = tiny_release("acme/api@1", seed=1)
        registry.publish("acme", self.next_vendor_metadata(service, first), first)
        self.target_urls = [self._url(path, blob) for path, blob in first.items()]
        service.store.engine.dispose()
        self.pristine = paths.root
        self.copies = 0
        self.service = None
        self.http: TestClient | None = None
        self.reset()

    @staticmethod
    def _open(folder: Path):
        from photoimmune.registry.service import RegistryService

        return RegistryService.open(folder)

    @staticmethod
    def _url(path: str, blob: bytes) -> str:
        folder, _, name = path.rpartition("/")
        return f"/targets/{folder}/{hashlib.sha256(blob).hexdigest()}.{name}"

    def reset(self) -> None:
        """A fresh copy of the pristine registry behind a new app: undo an accepted upload."""
        if self.service is not None:
            self.service.store.engine.dispose()
        self.copies += 1
        folder = self.base / f"copy-{self.copies}"
        shutil.copytree(self.pristine, folder)
        self.service = self._open(folder)
        # Server exceptions are raised here, so a 500 fails with its traceback.
        self.http = TestClient(APP, raise_server_exceptions=True)

    def next_vendor_metadata(self, service, files: dict[str, bytes]) -> bytes:
        from tuf.api.metadata import Metadata

        from photoimmune.registry import metadata as tm
        from photoimmune.registry.errors import UnknownReleaseError

        try:
            current = Metadata.from_bytes(service.current("acme"))
        except UnknownReleaseError:
            current = None
        descriptor, tensors = files.values()
        md = tm.vendor_release(current, descriptor, tensors, tm.LIFETIMES["vendor"])
        return tm.sign(md, [self.acme])

    def seeds(self) -> dict[str, bytes]:
        """Metadata bodies as honest clients send them, for the mutations to start from."""
        release = tiny_release("acme/api@2", seed=1)
        return {
            "release": self.next_vendor_metadata(self.service, release),
            "targets": self.service.current("targets"),
            "root": self.service.current("root"),
            "timestamp": self.service.metadata_file("timestamp.json"),
        }


@functools.cache
def api_registry() -> ApiRegistry:
    """The registry under test, built on first use and removed when the process exits."""
    base = Path(tempfile.mkdtemp(prefix="photoimmune-api-fuzz-"))
    atexit.register(shutil.rmtree, base, True)
    return ApiRegistry(base)


class _CurrentService:
    """Stands in for the service in the app, forwarding to :func:`api_registry`'s current one.

    The app exists at import, so schemathesis can read its OpenAPI document while
    collecting; the registry is only built when a test runs, and replaced by ``reset``.
    """

    def __getattr__(self, name: str):
        return getattr(api_registry().service, name)


APP = create_app(_CurrentService())


@pytest.fixture(autouse=True)
def api() -> ApiRegistry:
    """The registry, built before Hypothesis draws (building it uses ``random``)."""
    return api_registry()


# -- the property -------------------------------------------------------------------------


def send(api: ApiRegistry, method: str, url: str, headers: dict, body: bytes) -> int | None:
    """One request; its status, or None if httpx can't send it."""
    try:
        response = api.http.request(method, url, headers=headers, content=body)
    except httpx.InvalidURL:
        event("not sendable")
        return None
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400 and method != "HEAD":
        assert "detail" in response.json(), response.text[:500]  # says what was wrong
    return response.status_code


def check_still_serves(api: ApiRegistry, method: str, status: int | None) -> None:
    """The registry answers an honest read after any request; an accepted write is undone."""
    assert api.http.get("/metadata/timestamp.json").status_code == 200
    assert api.http.get(api.target_urls[0]).status_code == 200
    if method == "POST" and status == 200:
        api.reset()


# -- what Hypothesis sends ------------------------------------------------------------------

_SEGMENTS = st.sampled_from(
    ["..", ".", "%2e%2e", "%2E%2e", "%2f", "%00", "", "acme", "timestamp.json", "-1", "²"]
) | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_VERSIONS = st.sampled_from(["1", "2", "0", "-1", "01", "99999999999999999999", str(2**31), "1e3"])
_ROLES = st.sampled_from(["root", "targets", "snapshot", "timestamp", "acme", "nobody", ""])
_VENDORS = st.sampled_from(
    ["acme", "nobody", "..", "%2e%2e", "ACME", "a" * 300, "root", "snapshot", "targets"]
) | st.text(max_size=16)


def _path_strategy(api: ApiRegistry) -> st.SearchStrategy[str]:
    metadata = st.one_of(
        st.just("/metadata/timestamp.json"),
        st.builds("/metadata/{}.{}.json".format, _VERSIONS, _ROLES),
        _SEGMENTS.map("/metadata/{}".format),
    )
    targets = st.one_of(
        st.sampled_from(api.target_urls),
        st.lists(_SEGMENTS, max_size=6).map(lambda parts: "/targets/" + "/".join(parts)),
        st.sampled_from(api.target_urls).map(lambda url: url.replace("/api/", "/api/../")),
    )
    writes = st.one_of(
        st.sampled_from(["/admin/root", "/admin/targets", "/admin", "/admin/snapshot"]),
        _VENDORS.map("/vendors/{}/releases".format),
    )
    anywhere = st.lists(_SEGMENTS, max_size=5).map(lambda parts: "/" + "/".join(parts))
    return st.one_of(metadata, targets, writes, writes, anywhere)


_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_LYING_LENGTHS = st.sampled_from(["0", "1", "-1", "99999999999999999999", "1e3", " 5", "abc"])


def _flip_bytes(draw, data: bytes) -> bytes:
    """A few bytes changed: metadata that is almost, but not quite, what was signed."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if buffer:
            buffer[draw(st.integers(0, len(buffer) - 1))] ^= draw(st.integers(1, 255))
    return bytes(buffer)


@st.composite
def _metadata_body(draw, api: ApiRegistry) -> bytes:
    seeds = api.seeds()
    return _flip_bytes(draw, seeds[draw(st.sampled_from(sorted(seeds)))])


@st.composite
def _multipart(draw, api: ApiRegistry) -> tuple[str, bytes]:
    """A multipart upload (content type, body): parts named and filled in every odd way."""
    boundary = draw(st.sampled_from(["b", "photoimmune", "x" * 70, "--", "a b"]))
    release = tiny_release("acme/api@2", seed=1)
    names = st.sampled_from(["metadata", *release, "acme/../evil/x/y", "", "metadata"])
    contents = st.one_of(
        _metadata_body(api),
        st.sampled_from(list(release.values())),
        st.binary(max_size=256),
    )
    parts = draw(st.lists(st.tuples(names, contents, st.booleans()), max_size=5))
    body = b""
    for name, content, as_file in parts:
        filename = '; filename="f.bin"' if as_file else ""
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode()
    if body and draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body) - 1))]  # cut off mid-upload
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=other",
            ]
        )
    )
    return content_type, body


@st.composite
def any_request(draw, api: ApiRegistry) -> tuple[str, str, dict, bytes]:
    """(method, url, headers, body): any request an anonymous network client can send."""
    method = draw(st.sampled_from(["GET", "GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD"]))
    path = quote(draw(_path_strategy(api)), safe="/%")
    query = draw(st.sampled_from(["", "?x=1", "?version=-1", "?" + "a" * 3000]))
    headers = draw(st.dictionaries(st.sampled_from(["Accept", "Range", "Expect"]), _HEADER_TEXT))
    kind = draw(st.sampled_from(["empty", "bytes", "json", "metadata", "multipart"]))
    body = b""
    if kind == "bytes":
        body = draw(st.binary(max_size=2048))
    elif kind == "json":
        body = json.dumps(draw(_json())).encode()
    elif kind == "metadata":
        body = draw(_metadata_body(api))
    elif kind == "multipart":
        headers["Content-Type"], body = draw(_multipart(api))
    if draw(st.integers(0, 3)) == 0:
        headers["Content-Length"] = draw(_LYING_LENGTHS)
    if draw(st.integers(0, 3)) == 0:
        headers["Content-Type"] = draw(_HEADER_TEXT)
    return method, path + query, headers, body


def _json() -> st.SearchStrategy:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=10,
    )


@fuzz_settings(250)
@given(data=st.data())
def test_hypothesis_requests_never_get_a_5xx(data) -> None:
    """Any method, path, headers and body: a 2xx/4xx answer, and the registry still serves."""
    registry = api_registry()
    method, url, headers, body = data.draw(any_request(registry), label="request")
    status = send(registry, method, url, headers, body)
    check_still_serves(registry, method, status)


def test_an_honest_upload_through_the_api_is_accepted(api):
    """The seeds are real: unmutated, the next release is accepted (then undone)."""
    release = tiny_release("acme/api@2", seed=1)
    parts = [("metadata", ("metadata.json", api.seeds()["release"]))]
    parts += [(path, (path.rpartition("/")[2], blob)) for path, blob in release.items()]
    response = api.http.post("/vendors/acme/releases", files=parts)
    assert response.status_code == 200, response.text
    check_still_serves(api, "POST", 200)


# -- what schemathesis sends --------------------------------------------------------------


#: Read from the app at import: its operations become this test's parameters.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@fuzz_settings(40)
def test_schemathesis_operations_never_get_a_5xx(case, api):
    """Each documented operation, with valid and invalid parameters: never a server error."""
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    check_still_serves(api, case.method.upper(), response.status_code)


@pytest.mark.parametrize("token", ["0.5", "NaN", "1e999"])
@pytest.mark.parametrize("path", ["/admin/targets", "/admin/root", "/vendors/acme/releases"])
def test_anonymous_metadata_with_a_float_is_a_4xx(api, path, token):
    """Anyone can send this: no key, no signature, just a float where TUF has none.

    Found by tests/test_fuzz.py: it parsed, then the signature check raised
    python-tuf's SerializationError, a 500."""
    seed = {"/admin/targets": "targets", "/admin/root": "root"}.get(path, "release")
    document = json.loads(api.seeds()[seed])
    document["signed"]["version"] += 1
    document["signed"]["x-extra"] = "FLOAT"
    body = json.dumps(document).replace('"FLOAT"', token).encode()
    http = TestClient(APP, raise_server_exceptions=False)
    if path.startswith("/vendors/"):
        response = http.post(path, files={"metadata": ("metadata.json", body)})
    else:
        response = http.post(path, content=body)
    assert response.status_code == 409, response.text
    assert "canonical-JSON-serialisable" in response.json()["detail"]
