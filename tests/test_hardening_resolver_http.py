"""The resolver's HTTP edges: every refusal is one plain string that says what to send.

A real store holding one signed file, served by FastAPI's TestClient (and, where the
server's own handling of HEAD matters, by uvicorn on loopback).
"""

from __future__ import annotations

import warnings

import httpx
import pytest
from fastapi.testclient import TestClient

from photoimmune.resolver import ManifestStore, ResolverClient, ResolverError, create_app
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.manifest import sign_pixels
from photoimmune.sdk.samples import sample_pixels

from .helpers import LoopbackServer, protection

ZERO = "0" * 16
CODE_ADVICE = "code must be 16 hex digits"
ID_ADVICE = "asset ids are whole numbers"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding one signed file, asset 1."""
    keys = init_keys(tmp_path_factory.mktemp("keys") / "dev")
    data = sign_pixels(sample_pixels("coffee.png", 64), [protection()], keys.signer("publisher"))
    store = ManifestStore(f"sqlite:///{tmp_path_factory.mktemp('store') / 'm.db'}")
    assert store.add(data).asset == 1
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def http(store):
    with TestClient(create_app(store)) as client:
        yield client


@pytest.fixture(scope="module")
def served(store):
    """The store under uvicorn on loopback: what HEAD gets is the real server's doing."""
    server = LoopbackServer(create_app(store))
    server.start()
    yield server.url
    server.stop()


def _refusal(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str)
    return body["detail"]


@pytest.mark.parametrize(
    ("path", "params", "advice"),
    [
        ("/v1/lookup", {"code": "xyz"}, CODE_ADVICE),
        ("/v1/lookup", {}, "code is missing; " + CODE_ADVICE),
        ("/v1/assets/abc", {}, ID_ADVICE),
    ],
)
def test_a_bad_value_gets_advice_not_pydantics_list(http, path, params, advice):
    detail = _refusal(http.get(path, params=params), 422)
    assert detail.startswith(advice)
    assert "pattern" not in detail and "string_pattern_mismatch" not in detail


def test_the_code_advice_names_a_real_command(http):
    detail = _refusal(http.get("/v1/lookup", params={"code": "xyz"}), 422)
    assert "`photoimmune verify --resolver URL`" in detail and "'xyz'" in detail


def test_a_long_bad_value_is_echoed_only_in_part(http):
    sent = "q" * 5000
    for path, params in (("/v1/lookup", {"code": sent}), (f"/v1/assets/{sent}", {})):
        detail = _refusal(http.get(path, params=params), 422)
        assert "q" * 80 in detail and "q" * 81 not in detail and len(detail) < 400


@pytest.mark.parametrize(
    "query",
    [
        f"code=zz&code={ZERO}",  # the last would win, hiding the bad one
        f"code={ZERO}&alg=io.iscc.v0&alg=other",
        f"code={ZERO}&code={ZERO}",  # even the same value twice
    ],
)
def test_a_repeated_parameter_is_refused_naming_it(http, query):
    detail = _refusal(http.get(f"/v1/lookup?{query}"), 400)
    name = query.split("&")[-1].split("=")[0]
    assert f"query parameter '{name}' is given more than once" in detail


@pytest.mark.parametrize(
    "written", ["1.0", "+1", "%201", "1%20", "01", "1_0", "-1", "%D9%A1", "0x1", "1e0"]
)
def test_only_the_canonical_spelling_of_an_asset_id_finds_it(http, written):
    assert http.get("/v1/assets/1").status_code == 200
    assert _refusal(http.get(f"/v1/assets/{written}"), 422).startswith(ID_ADVICE)


def test_ids_in_range_but_unknown_are_404_and_past_it_422(http):
    assert "no asset 0" in _refusal(http.get("/v1/assets/0"), 404)
    assert "no asset" in _refusal(http.get(f"/v1/assets/{2**63 - 1}"), 404)
    assert _refusal(http.get(f"/v1/assets/{2**63}"), 422).startswith(ID_ADVICE)


def test_routing_refusals_say_what_is_served(http):
    detail = _refusal(http.get("/v2/lookup"), 404)
    assert "no such endpoint '/v2/lookup'" in detail and "GET /v1/lookup" in detail
    response = http.post("/v1/lookup")
    assert "POST is not allowed" in _refusal(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


def test_head_is_answered_where_get_is_with_the_same_headers(served):
    with httpx.Client(base_url=served) as client:
        for path, params in [
            ("/v1/assets/1", {}),
            ("/v1/lookup", {"code": ZERO}),
            ("/v1/health", {}),
        ]:
            get, head = client.get(path, params=params), client.head(path, params=params)
            assert get.status_code == head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(len(get.content))
            assert head.headers["content-type"] == get.headers["content-type"]
        assert client.head("/v1/assets/2").status_code == 404


def test_the_resolver_client_shows_the_advice_as_sent(served):
    client = ResolverClient(served, timeout=5)
    with pytest.raises(ResolverError, match=r"refused the request \(422\): asset ids are whole"):
        client.asset(-1)
    client.close()


def test_the_schema_documents_each_read_once_without_duplicate_ids(store):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = create_app(store).openapi()
    assert [str(w.message) for w in caught] == []
    assert set(schema["paths"]["/v1/assets/{asset_id}"]) == {"get"}  # HEAD answers, undocumented


def test_a_store_whose_database_goes_away_answers_503_json(tmp_path):
    db = tmp_path / "gone.db"
    store = ManifestStore(f"sqlite:///{db}")
    http = TestClient(create_app(store), raise_server_exceptions=False)
    assert http.get("/v1/health").status_code == 200
    store.dispose()
    db.unlink()
    db.mkdir()  # what was the database file is now a folder: SQLite cannot open it
    answer = http.get("/v1/assets/1")
    assert answer.status_code == 503, answer.text
    assert "retry later" in answer.json()["detail"]
    assert answer.headers["Retry-After"] == "30"
