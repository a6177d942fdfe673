"""Scorecards: measured under the protocol, published and signed with a release, shown by
`registry show`; the bundled releases ship theirs."""

from __future__ import annotations

import json

import pytest
from tuf.api.metadata import TargetFile

from photoimmune.cli import main
from photoimmune.registry import metadata as tm
from photoimmune.registry.admin import add_vendor, init_registry, open_registry, publish
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.errors import ReleaseRejectedError
from photoimmune.registry.keys import load_signer, write_key
from photoimmune.sdk import scorecard as scorecards
from photoimmune.sdk.models.bundled import bundled_models
from photoimmune.sdk.scorecard import (
    PROTOCOL,
    SCORECARD_NAME,
    ScorecardError,
    ScoreProtocol,
    bundled_scorecard,
    parse_scorecard,
    score_target,
)
from photoimmune.sdk.targets import build_target, save_target

QUICK = ScoreProtocol(
    photos=("chelsea.png",),
    size=64,
    steps=2,
    edit_steps=2,
    prompts=("a cat",),
    processing=("none", "jpeg75"),
)


@pytest.fixture(scope="module")
def scored(tiny_models):
    target = build_target(tiny_models[0], ref="acme/quick@1")
    return target, score_target(target, protocol=QUICK)


def test_a_scorecard_measures_each_step_of_the_protocol(scored):
    target, card = scored
    assert card.target == target.ref and card.target_digest == target.digest
    assert card.protocol == QUICK and [r.processing for r in card.scores] == ["none", "jpeg75"]
    row = card.score("jpeg75")
    assert row.ssim_gap == pytest.approx(row.ssim_noise - row.ssim_immunized, abs=2e-4)
    assert card.immunize_seconds_per_photo > 0
    assert parse_scorecard(card.to_json(), digest=target.digest) == card
    with pytest.raises(ScorecardError, match="no 'impress' row"):
        card.score("impress")


def test_parse_scorecard_refuses_garbage_and_another_targets_card(scored):
    _, card = scored
    with pytest.raises(ScorecardError, match="targets score"):
        parse_scorecard(b"not json")
    with pytest.raises(ScorecardError, match="measure it again"):
        parse_scorecard(card.to_json(), digest="0" * 64)


def _registry(tmp_path):
    paths = init_registry(tmp_path / "reg", root_keys=1, root_threshold=1)
    registry = open_registry(tmp_path / "reg")
    acme = write_key(tmp_path / "acme.pem")
    add_vendor(registry, "acme", [acme.public_key], 1, [load_signer(paths.keys / "targets.pem")])
    return paths, registry, acme


def test_a_published_scorecard_is_signed_verified_and_shown(tmp_path, scored, capsys):
    target, card = scored
    paths, registry, acme = _registry(tmp_path)
    folder = tmp_path / "release"
    save_target(target, folder)
    (folder / SCORECARD_NAME).write_bytes(card.to_json())
    publish(registry, "acme", folder, [acme])
    client = RegistryClient(
        tmp_path / "reg", trusted_root=paths.trusted_root, cache_dir=tmp_path / "cache"
    )
    assert client.scorecard("acme/quick@1") == card
    args = ["registry", "show", "acme/quick@1", "--registry", str(tmp_path / "reg"), "--json"]
    assert main(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["digest"] == target.digest and shown["scorecard"]["target_digest"] == target.digest
    # A card of another target is refused before anything is signed.
    other = card.model_copy(update={"target_digest": "1" * 64})
    (folder / SCORECARD_NAME).write_bytes(other.to_json())
    with pytest.raises(ReleaseRejectedError, match="measure it again"):
        publish(registry, "acme", folder, [acme])
    # Published again without a card, the release no longer lists the old one.
    (folder / SCORECARD_NAME).unlink()
    publish(registry, "acme", folder, [acme])
    client = RegistryClient(
        tmp_path / "reg", trusted_root=paths.trusted_root, cache_dir=tmp_path / "cache2"
    )
    assert client.scorecard("acme/quick@1") is None


def test_the_registry_refuses_a_signed_card_of_another_target(tmp_path, scored):
    target, card = scored
    _, registry, acme = _registry(tmp_path)
    save_target(target, tmp_path / "release")
    descriptor = (tmp_path / "release" / "target.json").read_bytes()
    tensors = (tmp_path / "release" / target.tensors.path).read_bytes()
    md = tm.vendor_release(None, descriptor, tensors, tm.LIFETIMES["vendor"])
    base = tm.release_dir(target.ref)
    wrong = card.model_copy(update={"target_digest": "1" * 64}).to_json()
    path = f"{base}/{SCORECARD_NAME}"
    md.signed.targets[path] = TargetFile.from_data(path, wrong, ["sha256"])
    files = {
        f"{base}/target.json": descriptor,
        f"{base}/{target.tensors.path}": tensors,
        path: wrong,
    }
    with pytest.raises(ReleaseRejectedError, match="scorecard"):
        registry.publish("acme", tm.sign(md, [acme]), files)


def test_bundled_releases_ship_scorecards_of_their_targets(tmp_path):
    from photoimmune.registry.admin import local_registry

    for model in bundled_models():
        target = build_target(model.name)
        card = parse_scorecard(bundled_scorecard(target), digest=target.digest)
        assert card.protocol == PROTOCOL
        assert [r.processing for r in card.scores] == list(PROTOCOL.processing)
    client = local_registry(tmp_path / "reg", ["tiny-ldm@2"])
    card = client.scorecard("photoimmune/tiny-ldm@2")
    assert card is not None and card.target_digest == build_target("tiny-ldm@2").digest


def test_targets_score_cli(tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setattr(scorecards, "PROTOCOL", QUICK)
    folder = tmp_path / "release"
    save_target(build_target(tiny_models[0], ref="acme/quick@1"), folder)
    out = tmp_path / "card.json"
    assert main(["targets", "score", str(folder), "-o", str(out)]) == 2
    assert "--model" in capsys.readouterr().err  # not bundled: its weights are needed
    args = ["targets", "score", str(folder), "--model", str(tiny_models[0]), "-o", str(out)]
    assert main(args) == 0
    card = parse_scorecard(out.read_bytes())
    assert str(card.target) == "acme/quick@1" and "jpeg75" in capsys.readouterr().out
    assert main(args) == 2  # the card exists: --overwrite to replace it
    assert main([*args, "--overwrite", "--photos", "no-such.png"]) == 2
    assert "no sample photo" in capsys.readouterr().err
