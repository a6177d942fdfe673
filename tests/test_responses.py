"""The JSON answers of the resolver and the service: typed models, documented in OpenAPI.

``GET /v1/lookup`` (resolver) and ``GET /v1/models`` (service) answer pydantic
models that the OpenAPI schema names; the JSON on the wire keeps the keys clients
(the resolver's client, the service's web page) read.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from photoimmune.resolver import ManifestStore, ResolverClient
from photoimmune.resolver import create_app as resolver_app
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.manifest import sign_pixels
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.softbinding import ALGORITHM, MATCH_BITS, image_code
from photoimmune.service import Service, ServiceSettings
from photoimmune.service import create_app as service_app

from .helpers import LoopbackServer, protection, service_world


def _response_schema(openapi: dict, path: str) -> str:
    """The schema name ``GET path``'s 200 answer refers to."""
    content = openapi["paths"][path]["get"]["responses"]["200"]["content"]
    return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A manifest store holding one signed photo, and that photo's pixels."""
    folder = tmp_path_factory.mktemp("responses")
    pixels = sample_pixels("astronaut.png", 96)
    signer = init_keys(folder / "keys").signer("publisher")
    store = ManifestStore(f"sqlite:///{folder / 'manifests.db'}")
    store.add(sign_pixels(pixels, [protection()], signer))
    return store, pixels


def test_a_lookup_answers_the_documented_json_the_client_reads(store):
    manifests, pixels = store
    code = image_code(pixels)
    app = resolver_app(manifests)
    with TestClient(app) as http:
        answer = http.get("/v1/lookup", params={"code": f"{code:016x}"}).json()
        openapi = http.get("/openapi.json").json()
    assert answer == {
        "alg": ALGORITHM,
        "max_bits": MATCH_BITS,
        "matches": [
            {"asset": 1, "distance": 0, "region": {"x": 0, "y": 0, "width": 100, "height": 100}}
        ],
    }
    assert _response_schema(openapi, "/v1/lookup") == "LookupAnswer"
    server = LoopbackServer(app)
    server.start()
    client = ResolverClient(server.url)
    try:
        assert [(m.asset, m.distance) for m in client.lookup(code)] == [(1, 0)]
    finally:
        client.close()
        server.stop()


def test_the_offer_answers_the_documented_json_the_web_page_reads(tmp_path):
    registry, keys = service_world()
    service = Service.open(f"sqlite:///{tmp_path / 'service.db'}", registry, keys)
    try:
        with TestClient(service_app(service)) as http:
            offer = http.get("/v1/models").json()
            openapi = http.get("/openapi.json").json()
    finally:
        service.close()
    limits = ServiceSettings()
    assert offer == {
        "models": ["photoimmune/tiny-ldm"],
        "default_eps": "8/255",
        "max_eps": limits.max_eps,
        "formats": ["png", "jpeg", "webp"],
        "max_upload_bytes": limits.max_upload_bytes,
        "max_sync_pixels": limits.max_sync_pixels,
    }
    assert _response_schema(openapi, "/v1/models") == "OfferDescription"
