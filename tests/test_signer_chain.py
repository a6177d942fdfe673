"""A job signs its copies with one key and later verifies them against its trust anchors:
a signer whose chain leads to none of them is refused before any work, in the SDK and
on the command line (a dry run included), or every copy it signed would look untrusted
and be made again on the next run.
"""

from __future__ import annotations

import pytest

from photoimmune.cli import main
from photoimmune.sdk.io import save_image
from photoimmune.sdk.jobs import Catalog, run
from photoimmune.sdk.jobs.queue import WorkQueue
from photoimmune.sdk.keys import SigningKeyError, check_chain, init_keys
from photoimmune.sdk.samples import sample_pixels


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two development key folders: two CAs, each with its own publisher."""
    root = tmp_path_factory.mktemp("keys")
    return init_keys(root / "ours"), init_keys(root / "theirs")


def test_a_signer_chains_to_its_own_ca_and_not_to_another(folders):
    ours, theirs = folders
    signer = ours.signer("publisher")
    assert signer.chains_to([ours.ca_cert.read_bytes()])
    assert not signer.chains_to([theirs.ca_cert.read_bytes()])
    # one anchor of several is enough, in any order
    assert signer.chains_to([theirs.ca_cert.read_bytes(), ours.ca_cert.read_bytes()])


def test_check_chain_names_the_certificate_and_what_to_pass(folders):
    ours, theirs = folders
    anchors = [ours.ca_cert.read_bytes()]
    assert check_chain(ours.signer("vendor"), anchors) is anchors
    with pytest.raises(SigningKeyError) as caught:
        check_chain(ours.signer("publisher"), [theirs.ca_cert.read_bytes()])
    said = str(caught.value)
    assert "does not chain to the trust anchors" in said and "--trust" in said
    assert "CN=" in said and "BEGIN" not in said  # the certificate named, never shown


def test_run_refuses_a_signer_its_trust_does_not_cover_before_anything_is_queued(tmp_path, folders):
    from photoimmune.registry.admin import local_registry

    ours, theirs = folders
    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    save_image(sample_pixels("chelsea.png", 32), photo)
    catalog = Catalog(tmp_path / "c.db")
    catalog.add([photo])
    client = local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    with pytest.raises(SigningKeyError, match="does not chain"):
        run(
            catalog,
            client,
            ["photoimmune/tiny-ldm"],
            out_dir=tmp_path / "out",
            signer=ours.signer("publisher"),
            trust=theirs.ca_cert,
        )
    assert WorkQueue(catalog).claim(10, None) == []  # nothing was queued
    assert not (tmp_path / "out").exists()


def reimmunize(capsys, tmp_path, folders, *extra: str) -> tuple[int, str]:
    ours, _ = folders
    code = main(
        [
            "reimmunize",
            "--registry",
            str(tmp_path / "no-registry"),
            "--models",
            "photoimmune/tiny-ldm",
            "--key",
            str(ours.path / "publisher.key"),
            "--cert",
            str(ours.path / "publisher.pem"),
            "--dry-run",
            *extra,
        ]
    )
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def test_a_dry_run_refuses_a_key_without_trust_as_the_run_would(capsys, tmp_path, folders):
    code, text = reimmunize(capsys, tmp_path, folders)
    assert code == 2 and "Traceback" not in text
    assert "--key needs --trust" in text


def test_a_dry_run_refuses_a_cert_that_does_not_chain_to_trust(capsys, tmp_path, folders):
    _, theirs = folders
    code, text = reimmunize(capsys, tmp_path, folders, "--trust", str(theirs.ca_cert))
    assert code == 2 and "Traceback" not in text
    assert "does not chain to the trust anchors" in text
    # with the right CA the key options pass, and the dry run goes on to the catalog
    ours, _ = folders
    code, text = reimmunize(capsys, tmp_path, folders, "--trust", str(ours.ca_cert))
    assert "does not chain" not in text and "no such catalog" in text
