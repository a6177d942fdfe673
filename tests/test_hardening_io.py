"""Regression tests for issue 30's defects in reading images and writing files:
special files (4), crafted TIFFs (6), extreme aspect ratios (5), bad output paths in
jobs (13), long file names (14) and never-signed bitmaps (17).

Each reproduces the defect as reported. Calls that used to hang (a FIFO) or eat
memory (``/dev/zero``) run in a child process with a timeout and a 4 GiB
address-space limit, so on a broken loader the test fails instead of the
machine. Nothing asserts on wall-clock time: the timeouts only bound a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from photoimmune.sdk import immunization
from photoimmune.sdk.attacks.sizing import (
    MAX_ASPECT_RATIO,
    MAX_WORKING_PIXELS,
    check_attack_size,
    working_size,
)
from photoimmune.sdk.errors import (
    AttackSizeError,
    ImageLoadError,
    OutputExistsError,
    OutputPathError,
)
from photoimmune.sdk.immunization import immunize
from photoimmune.sdk.io import (
    atomic_write_bytes,
    check_output_path,
    load_image,
    read_image_bytes,
    save_image,
    stale_temp_files,
)
from photoimmune.sdk.jobs import Catalog, JobSettings, plan, run
from photoimmune.sdk.jobs.queue import WorkItem
from photoimmune.sdk.jobs.runner import output_name, work_key
from photoimmune.sdk.manifest import read_manifest
from photoimmune.sdk.samples import sample_pixels

CRAFTED_TIFF = Path(__file__).parent / "data" / "missing_dimensions.tiff"
MODEL = "photoimmune/tiny-ldm"
FAST = JobSettings(steps=2, threads=1)
WAIT_S = 300  # a generous bound on a child that should finish in seconds (never asserted)
ISOLATED_PRELUDE = """
import json, resource, sys
# On the old loader /dev/zero was read until memory ran out: cap it at 4 GiB.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from photoimmune.sdk.errors import ImageLoadError
from photoimmune.sdk.io import load_image
"""


def isolated(code: str, *args: str | os.PathLike[str]) -> dict:
    """Run ``code`` (after :data:`ISOLATED_PRELUDE`) in a child; the JSON it prints last.

    A child that hangs (a blocking FIFO) is killed after :data:`WAIT_S` and the
    test fails; one that runs out of its 4 GiB fails with its traceback.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    script = ISOLATED_PRELUDE + textwrap.dedent(code)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {WAIT_S} s: blocked on a special file")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def photo(path: Path, size: int = 40) -> Path:
    # Pillow, not save_image: a fixture must not depend on the writer under test.
    Image.fromarray(sample_pixels("coffee.png", size)).save(path, "PNG")
    return path


# -- 4. special files --------------------------------------------------------------------


def test_a_fifo_given_as_an_image_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    out = isolated(
        """
        try:
            load_image(sys.argv[1])
            print(json.dumps({"error": None}))
        except ImageLoadError as err:
            print(json.dumps({"error": str(err), "exit": err.exit_code}))
        """,
        fifo,
    )
    assert "FIFO" in out["error"] and "not a regular file" in out["error"]
    assert out["exit"] == 2


def test_dev_zero_and_a_link_to_it_are_refused_before_a_byte_is_read(tmp_path):
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    out = isolated(
        """
        errors = {}
        for path in sys.argv[1:]:
            try:
                load_image(path)
            except ImageLoadError as err:
                errors[path] = str(err)
        print(json.dumps(errors))
        """,
        "/dev/zero",
        link,
    )
    assert "character device" in out["/dev/zero"]
    assert "character device" in out[str(link)]  # symbolic links are judged by their target


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_reads_are_bounded_by_the_bytes_read_not_the_size_the_file_reports():
    # /proc files report st_size 0 whatever they hold: the limit must count what arrives.
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(ImageLoadError, match="over the 16-byte limit"):
        load_image("/proc/self/status", max_bytes=16)
    with pytest.raises(ImageLoadError, match="over the 16-byte limit"):
        read_image_bytes("/proc/self/status", max_bytes=16)


def test_regular_files_and_links_to_them_still_load_and_dangling_links_say_so(tmp_path):
    original = photo(tmp_path / "cat.png")
    (tmp_path / "link.png").symlink_to(original)
    assert load_image(tmp_path / "link.png").pixels.shape == (40, 40, 3)
    assert read_image_bytes(tmp_path / "link.png", head=4) == b"\x89PNG"
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageLoadError, match="symbolic link to a missing file"):
        load_image(tmp_path / "dangling.png")


def test_catalog_add_records_a_fifo_and_a_dev_zero_link_beside_a_photo(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = photo(folder / "good.png")
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    out = isolated(
        """
        from photoimmune.sdk.jobs import Catalog
        report = Catalog(sys.argv[1]).add([sys.argv[2]])
        print(report.model_dump_json())
        """,
        tmp_path / "catalog.db",
        folder,
    )
    assert out["added"] == [str(good)]
    assert "FIFO" in out["unreadable"][str(folder / "fifo.png")]
    assert "character device" in out["unreadable"][str(folder / "zero.png")]


# -- 6. a crafted TIFF -------------------------------------------------------------------


def test_the_crafted_tiff_is_an_image_load_error_not_a_type_error():
    # Pillow opens it, then counting its frames raises TypeError: Missing dimensions.
    with Image.open(CRAFTED_TIFF) as img, pytest.raises(TypeError, match="Missing dimensions"):
        img.n_frames  # noqa: B018 (the property is the point)
    data = CRAFTED_TIFF.read_bytes()
    for source in (CRAFTED_TIFF, data):
        with pytest.raises(ImageLoadError, match="Missing dimensions") as caught:
            load_image(source)
        assert caught.value.exit_code == 2
    with pytest.raises(ImageLoadError):
        load_image(CRAFTED_TIFF, verify=True)  # what `photoimmune verify` runs
    with Image.open(CRAFTED_TIFF) as img, pytest.raises(ImageLoadError):
        load_image(img)  # a lazily opened PIL image decodes only inside the loader


def test_catalog_add_records_the_photo_beside_the_crafted_tiff(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = photo(folder / "good.png")
    bad = folder / "crafted.tiff"
    bad.write_bytes(CRAFTED_TIFF.read_bytes())
    report = Catalog(tmp_path / "catalog.db").add([folder])
    assert report.added == [str(good)]
    assert "Missing dimensions" in report.unreadable[str(bad)]


# -- 5. extreme aspect ratios ------------------------------------------------------------


def test_a_strip_is_refused_by_immunize_before_any_model_is_loaded(monkeypatch):
    def no_attack(*args, **kwargs):
        raise AssertionError("an attack was built for a 16x100000 strip")

    monkeypatch.setattr(immunization, "_build_attack", no_attack)
    strip = np.zeros((16, 100_000, 3), np.uint8)  # passes the 2^26-pixel load limit
    with pytest.raises(AttackSizeError, match="6250:1") as caught:
        immunize(strip, "tiny-ldm@1", steps=1)
    assert caught.value.exit_code == 2
    assert "crop it" in str(caught.value)


def test_every_attack_sizes_through_the_limits():
    # working_size is what the encoder and diffusion attacks and the plugin's detector
    # call before the model sees the image, so they all refuse what immunize refuses.
    for height, width in ((16, 100_000), (100_000, 16), (4_000_000, 16)):
        with pytest.raises(AttackSizeError, match="crop it"):
            working_size(height, width, 128)
    # A target that works at a large resolution: 4:1 is fine in shape but not in area.
    with pytest.raises(AttackSizeError, match=f"over the limit of {MAX_WORKING_PIXELS}"):
        working_size(4000, 16000, 4096)
    # Ordinary photos, panoramas and the widest accepted banner still pass.
    assert working_size(1000, 1500, 512) == (512, 768)
    assert working_size(512, 512 * MAX_ASPECT_RATIO, 512) == (512, 512 * MAX_ASPECT_RATIO)
    check_attack_size(1000, 4000, 1024)


# -- 13 and 14. output paths in jobs -----------------------------------------------------


@pytest.fixture(scope="module")
def registry_folder(tmp_path_factory) -> Path:
    """A local registry where tiny-ldm@1 is published (built once: it takes a while)."""
    from photoimmune.registry.admin import local_registry

    folder = tmp_path_factory.mktemp("registry")
    local_registry(folder, ["tiny-ldm@1"])
    return folder


@pytest.fixture
def registry_client(registry_folder):
    from photoimmune.registry.admin import local_registry

    return local_registry(registry_folder, ["tiny-ldm@1"])


def catalogued(tmp_path: Path, names: list[str]) -> tuple[Catalog, dict[str, Path]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = {name: photo(folder / name, 32 + 4 * i) for i, name in enumerate(names)}
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.add([folder])
    return catalog, paths


def output_of(catalog: Catalog, client, original: Path, out: Path) -> Path:
    """Where a job writes the copy of ``original``."""
    key = work_key(plan(catalog, client, [MODEL]), FAST)  # the queue's key names the copy
    record = next(r for r in catalog.originals() if r.location == str(original))
    return out / output_name(record.location, record.sha256, key)


def no_item_left_leased(catalog: Catalog) -> bool:
    with catalog.session() as session:
        return not list(session.scalars(select(WorkItem).where(WorkItem.state == "leased")))


def test_a_glob_pattern_in_a_photo_name_is_just_a_name(tmp_path, registry_client):
    catalog, _paths = catalogued(tmp_path, ["**.png", "[a-z].png"])
    summary = run(catalog, registry_client, [MODEL], out_dir=tmp_path / "out", settings=FAST)
    assert summary.failed == {}
    assert len(summary.done) == 2 and summary.remaining == 0


def test_a_directory_at_an_output_path_fails_that_item_and_the_job_goes_on(
    tmp_path, registry_client
):
    catalog, paths = catalogued(tmp_path, ["blocked.png", "fine.png"])
    out = tmp_path / "out"
    output_of(catalog, registry_client, paths["blocked.png"], out).mkdir(parents=True)
    summary = run(catalog, registry_client, [MODEL], out_dir=out, settings=FAST)
    assert "is a directory" in summary.failed[str(paths["blocked.png"])]
    assert "move it away" in summary.failed[str(paths["blocked.png"])]
    assert len(summary.done) == 1 and summary.remaining == 0
    assert no_item_left_leased(catalog)


def test_a_dangling_link_at_an_output_path_fails_that_item_before_the_compute(
    tmp_path, registry_client
):
    catalog, paths = catalogued(tmp_path, ["linked.png", "fine.png"])
    out = tmp_path / "out"
    target = output_of(catalog, registry_client, paths["linked.png"], out)
    out.mkdir()
    target.symlink_to(tmp_path / "nowhere.png")
    summary = run(catalog, registry_client, [MODEL], out_dir=out, settings=FAST)
    assert "symbolic link" in summary.failed[str(paths["linked.png"])]
    assert len(summary.done) == 1 and summary.remaining == 0
    assert sum(summary.by_worker.values()) == 1  # the linked one was never computed
    assert target.is_symlink() and no_item_left_leased(catalog)


def test_a_job_whose_original_became_a_fifo_fails_it_and_finishes(tmp_path, registry_folder):
    _catalog, paths = catalogued(tmp_path, ["piped.png"])
    paths["piped.png"].unlink()
    os.mkfifo(paths["piped.png"])
    out = isolated(
        """
        from photoimmune.registry.admin import local_registry
        from photoimmune.sdk.jobs import Catalog, JobSettings, run
        client = local_registry(__import__("pathlib").Path(sys.argv[2]), ["tiny-ldm@1"])
        summary = run(Catalog(sys.argv[1]), client, ["photoimmune/tiny-ldm"],
                      out_dir=sys.argv[3], settings=JobSettings(steps=2, threads=1))
        print(summary.model_dump_json())
        """,
        tmp_path / "catalog.db",
        registry_folder,
        tmp_path / "out",
    )
    assert "FIFO" in out["failed"][str(paths["piped.png"])]
    assert out["remaining"] == 0


def test_a_long_multibyte_photo_name_gets_a_copy_name_within_name_max(tmp_path, registry_client):
    name = "日" * 83 + ".png"  # 253 bytes: legal; its first 100 characters are 249 bytes
    catalog, _paths = catalogued(tmp_path, [name])
    summary = run(catalog, registry_client, [MODEL], out_dir=tmp_path / "out", settings=FAST)
    assert summary.failed == {} and len(summary.done) == 1
    assert len(os.fsencode(Path(summary.done[0]).name)) <= 255


def test_an_output_name_too_long_for_the_file_system_fails_before_the_compute(
    tmp_path, registry_client, monkeypatch
):
    catalog, _paths = catalogued(tmp_path, ["a" * 60 + ".png"])
    # A file system with a small NAME_MAX (eCryptfs allows 143): the copy's name can't fit.
    monkeypatch.setattr("photoimmune.sdk.io._name_max", lambda folder: 64)
    summary = run(catalog, registry_client, [MODEL], out_dir=tmp_path / "out", settings=FAST)
    (why,) = summary.failed.values()
    assert "over this file system's limit of 64" in why
    assert summary.by_worker == {} and summary.done == []  # refused before any compute
    assert no_item_left_leased(catalog)


# -- 14. long names in the SDK's writer --------------------------------------------------


def test_a_legal_255_byte_name_is_written_despite_the_temporary_name(tmp_path):
    dest = tmp_path / ("x" * 251 + ".png")
    assert atomic_write_bytes(dest, b"data") == dest
    assert dest.read_bytes() == b"data"
    save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / ("y" * 251 + ".png"))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_name_too_long_is_refused_up_front_with_what_to_do(tmp_path):
    dest = tmp_path / "new" / ("z" * 300 + ".png")
    with pytest.raises(OutputPathError, match="304 bytes, over this file system's limit") as c:
        check_output_path(dest)
    assert c.value.exit_code == 2 and "choose a shorter name" in str(c.value)
    with pytest.raises(OutputPathError):
        atomic_write_bytes(dest, b"data")
    assert not (tmp_path / "new").exists()  # refused before anything was created
    with pytest.raises(OutputExistsError, match="is a directory"):
        check_output_path(tmp_path)


def test_stale_temporary_files_are_found_by_name_never_by_pattern(tmp_path):
    dest = tmp_path / "**.png"
    legacy = tmp_path / ".**.png.abc123.tmp"  # what earlier versions left behind
    legacy.write_bytes(b"half")
    (tmp_path / ".other.png.abc123.tmp").write_bytes(b"someone else's")
    assert stale_temp_files(dest) == [legacy]


# -- 17. a never-signed bitmap -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["BMP", "PPM"])
def test_a_never_signed_bitmap_is_missing_not_tampered(tmp_path, fmt):
    path = tmp_path / f"plain.{fmt.lower()}"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, fmt)
    report = read_manifest(path.read_bytes())
    assert report.verdict == "missing", report.explanation
    assert f"{fmt} files cannot carry a C2PA manifest" in report.explanation
    assert load_image(path, verify=True).manifest.verdict == "missing"
