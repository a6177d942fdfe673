"""Regression tests for the registry server's hardening: top-level metadata that would break
every client, delegations no vendor could publish under, names echoed in full, repeated
multipart parts, and HEAD on reads.

Each test signs with a real registry folder's offline keys and posts through the real
FastAPI app (TestClient), or serves it on loopback where the HTTP framing matters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from tuf.api.metadata import DelegatedRole, Metadata, Root, Targets

from photoimmune.registry import metadata as tm
from photoimmune.registry.keys import generate_signer, load_signer
from photoimmune.registry.server import create_app

from .helpers import LoopbackServer
from .test_hardening_registry import Reg, fake_release


@pytest.fixture
def reg(tmp_path) -> Reg:
    reg = Reg(tmp_path)
    reg.publish("acme/quick@1")
    return reg


@pytest.fixture
def http(reg) -> TestClient:
    return TestClient(create_app(reg.service), raise_server_exceptions=False)


def next_root(reg: Reg, change: Callable[[Root], object]) -> bytes:
    """Root N+1 with ``change`` applied, signed by the registry's offline root key."""
    md = Metadata[Root].from_bytes(reg.service.current("root"))
    md.signed.version += 1
    change(md.signed)
    return tm.sign(md, [load_signer(reg.paths.keys / "root-1.pem")])


def next_targets(reg: Reg, change: Callable[[Targets], object]) -> bytes:
    """Top-level targets N+1 with ``change`` applied, signed by the offline targets key."""
    md = Metadata[Targets].from_bytes(reg.service.current("targets"))
    md.signed.version += 1
    change(md.signed)
    return tm.sign(md, [reg.targets_key])


def version(reg: Reg, role: str) -> int:
    return Metadata.from_bytes(reg.service.current(role)).signed.version


# -- 1. signed top-level metadata that would break every client ---------------------------


def _expired(signed: Root | Targets) -> None:
    signed.expires = datetime(2020, 1, 1, tzinfo=UTC)


def _expiring_soon(signed: Root | Targets) -> None:
    signed.expires = tm.expiry(timedelta(days=2))  # before the 7-day snapshot over it


def _swap_online_key(role: str) -> Callable[[Root], None]:
    def change(root: Root) -> None:
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        root.add_key(generate_signer().public_key, role)

    return change


def _online_key_plus_threshold_2(root: Root) -> None:
    root.add_key(generate_signer().public_key, "snapshot")
    root.roles["snapshot"].threshold = 2


def _not_consistent(root: Root) -> None:
    root.consistent_snapshot = False


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_expired, "expires 2020-01-01"),
        (_expiring_soon, "at least 7 days"),
        (_not_consistent, "consistent_snapshot"),
        (_swap_online_key("timestamp"), "online timestamp key"),
        (_swap_online_key("snapshot"), "online snapshot key"),
        (_online_key_plus_threshold_2, "threshold 1"),
    ],
)
def test_a_root_that_would_break_clients_is_refused(reg, http, change, says):
    response = http.post("/admin/root", content=next_root(reg, change))
    assert response.status_code == 409, response.text
    assert says in response.json()["detail"]
    assert version(reg, "root") == 1
    assert reg.client(reg.mirror()).vendors() == ["acme"]


@pytest.mark.parametrize(
    ("change", "says"), [(_expired, "expires 2020-01-01"), (_expiring_soon, "7 days")]
)
def test_targets_that_would_expire_under_clients_are_refused(reg, http, change, says):
    response = http.post("/admin/targets", content=next_targets(reg, change))
    assert response.status_code == 409, response.text
    assert says in response.json()["detail"]
    assert version(reg, "targets") == 2


def test_a_root_adding_a_key_beside_the_online_one_is_accepted_and_followed(reg, http):
    """The way to prepare an online-key rotation stays open: both keys, threshold 1."""
    data = next_root(reg, lambda root: root.add_key(generate_signer().public_key, "timestamp"))
    response = http.post("/admin/root", content=data)
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 2}
    assert reg.client(reg.mirror()).vendors() == ["acme"]


# -- 2. delegations no vendor could publish under -----------------------------------------


def _delegate(name: str, paths: list[str], threshold: int = 1) -> Callable[[Targets], None]:
    def change(targets: Targets) -> None:
        assert targets.delegations is not None and targets.delegations.roles is not None
        role = DelegatedRole(name, [], threshold, True, paths)
        targets.delegations.roles[name] = role
        targets.add_key(generate_signer().public_key, name)

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_delegate("Bad Name", ["Bad Name/*/*/*"]), "is not a vendor name"),
        (_delegate("beta", ["*"]), 'paths must be ["beta/*/*/*"]'),
        (_delegate("beta", ["acme/*/*/*"]), "the vendor's namespace"),
        (_delegate("beta", ["beta/*/*/*"], threshold=2), "vendor beta threshold 2: choose 1 to 1"),
    ],
)
def test_a_delegation_no_vendor_could_publish_under_is_refused(reg, http, change, says):
    response = http.post("/admin/targets", content=next_targets(reg, change))
    assert response.status_code == 409, response.text
    assert says in response.json()["detail"]
    assert version(reg, "targets") == 2


@pytest.mark.parametrize("name", ["root", "targets", "timestamp"])
def test_a_delegation_named_like_a_top_level_role_is_refused_by_name(reg, http, name):
    md = Metadata[Targets].from_bytes(reg.service.current("targets"))
    md.signed.version += 1
    document = md.to_dict()
    document["signed"]["delegations"]["roles"][0].update(name=name, paths=[f"{name}/*/*/*"])
    response = http.post("/admin/targets", content=json.dumps(document).encode())
    assert response.status_code == 409, response.text
    assert f"'{name}' is reserved for TUF's own roles" in response.json()["detail"]


# -- 3. names from a URL: checked first, echoed short -------------------------------------


@pytest.mark.parametrize("vendor", ["a" * 20_000, "%2e%2e", "%00", "acm%C3%A9", "Bad"])
def test_an_invalid_vendor_name_in_the_url_is_named_as_such_and_shortened(http, vendor):
    response = http.post(f"/vendors/{vendor}/releases", files={"metadata": ("m.json", b"{}")})
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert "is not a vendor name" in detail
    assert "vendor add" not in detail  # advice the CLI would refuse
    assert len(detail) < 300


def test_an_unknown_valid_vendor_still_gets_the_advice(http):
    response = http.post("/vendors/nobody/releases", files={"metadata": ("m.json", b"{}")})
    assert response.status_code == 404, response.text
    assert "photoimmune registry vendor add nobody" in response.json()["detail"]


@pytest.mark.parametrize("url", ["/metadata/" + "x" * 10_000, "/targets/acme/" + "y/" * 5_000])
def test_a_404_echoes_only_the_start_of_a_long_path(http, url):
    response = http.get(url)
    assert response.status_code == 404, response.text[:300]
    detail = response.json()["detail"]
    assert detail.endswith("…'") and len(detail) < 200


# -- 4. repeated and misplaced multipart parts --------------------------------------------


def _release_parts(reg: Reg) -> list[tuple[str, tuple[str, bytes]]]:
    """A valid upload of acme/quick@2: the signed role and its two files."""
    folder = fake_release("acme/quick@2", reg.root / "two")
    files = {
        "acme/quick/2/target.json": (folder / "target.json").read_bytes(),
        "acme/quick/2/tensors.safetensors": (folder / "tensors.safetensors").read_bytes(),
    }
    current = Metadata[Targets].from_bytes(reg.service.current("acme"))
    descriptor, tensors = files.values()
    md = tm.vendor_release(current, descriptor, tensors, tm.LIFETIMES["vendor"])
    parts = [("metadata", ("metadata.json", tm.sign(md, [reg.vendor_key])))]
    return parts + [(path, (path.rpartition("/")[2], blob)) for path, blob in files.items()]


@pytest.mark.parametrize("repeat", [0, 1], ids=["metadata", "file"])
def test_a_repeated_part_is_refused_by_name(reg, http, repeat):
    parts = _release_parts(reg)
    response = http.post("/vendors/acme/releases", files=[*parts, parts[repeat]])
    assert response.status_code == 400, response.text
    assert f"part {parts[repeat][0]!r} is sent more than once" in response.json()["detail"]
    assert version(reg, "acme") == 1
    # The same release, each part once, is accepted.
    response = http.post("/vendors/acme/releases", files=parts)
    assert response.status_code == 200, response.text


def test_metadata_sent_as_a_plain_field_is_named_as_such(reg, http):
    parts = _release_parts(reg)
    signed = parts[0][1][1].decode()
    response = http.post("/vendors/acme/releases", data={"metadata": signed}, files=parts[1:])
    assert response.status_code == 422, response.text
    assert "as a file part" in response.json()["detail"]


# -- 5. HEAD where GET is allowed ---------------------------------------------------------


@pytest.fixture
def served(reg) -> Iterator[str]:
    server = LoopbackServer(create_app(reg.service))
    server.start()
    yield server.url
    server.stop()


def test_head_answers_like_get_without_the_body(reg, served):
    snapshot = Metadata.from_bytes(reg.service.current("timestamp")).signed.snapshot_meta
    descriptor = Metadata.from_bytes(reg.service.current("acme")).signed.targets[
        "acme/quick/1/target.json"
    ]
    target = f"/targets/acme/quick/1/{descriptor.hashes['sha256']}.target.json"
    with httpx.Client(base_url=served) as http:
        urls = ["/metadata/timestamp.json", f"/metadata/{snapshot.version}.snapshot.json", target]
        for url in urls:
            got, head = http.get(url), http.head(url)
            assert (got.status_code, head.status_code) == (200, 200)
            assert head.content == b""
            assert head.headers["content-length"] == str(len(got.content))
        assert http.head("/metadata/9.snapshot.json").status_code == 404
        assert http.head("/targets/acme/quick/1/00.target.json").status_code == 404
