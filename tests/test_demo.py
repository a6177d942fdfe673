"""`photoimmune demo` and the pictures it draws."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from photoimmune.cli import main
from photoimmune.cli.demo import DemoSettings, run_demo
from photoimmune.sdk import load_image, read_manifest
from photoimmune.sdk.evaluate.metrics import edit_similarity
from photoimmune.sdk.pictures import amplify_delta, comparison_grid, loss_curve, scatter_chart


def test_demo_writes_grid_and_reports_a_disrupted_edit(tmp_path):
    # 128 px, not the default 256: a quarter of the edits' cost; what runs differently at
    # 256 px (the budget's resolution and its full-steps side) is tested in test_attacks.py.
    settings = replace(DemoSettings(), steps=8, edit_steps=8, size=128)
    report = run_demo(tmp_path, settings)
    # The target came through the local registry: published by the vendor, verified on fetch.
    assert report.target_ref == "photoimmune/tiny-ldm@3"  # the newest trained for edits
    assert (tmp_path / "registry" / "root.json").is_file()
    grid = load_image(report.grid)
    assert grid.width > 5 * grid.height  # six panels: both budgets' immunized edits
    assert load_image(report.curve).width > 0
    assert load_image(report.chart).width > load_image(report.chart).height  # bars, a legend
    immunized = load_image(tmp_path / "immunized.png").pixels
    assert immunized.shape == (settings.size, settings.size, 3)
    assert 0 < report.max_abs_delta <= 16
    assert -1.0 <= report.ssim < 1.0  # the two edits differ
    assert -1.0 <= report.fidelity < 1.0  # the clean edit is not the photo
    # Noise and immunization at the target's default budget and at the demo's own,
    # each immunized row with its gap over the same budget's noise.
    assert [(r.case, r.eps) for r in report.effect] == [
        ("uniform noise", "8/255"),
        ("immunized", "8/255"),
        ("uniform noise", "16/255"),
        ("immunized", "16/255"),
    ]
    noise, immunized = report.effect[2], report.effect[3]
    assert immunized.gap == noise.ssim - immunized.ssim and noise.gap is None
    assert immunized.ssim == report.ssim
    assert float(report.loss_after) < float(report.loss_before)
    # The published image is signed; step 2 re-immunizes a v2-only copy for v3 and chains
    # the manifests.
    assert read_manifest((tmp_path / "immunized.png").read_bytes()).assertion.covers(
        report.target_ref
    )
    forward = report.forward
    assert (forward.status, forward.action) == ("outdated", "reimmunized")
    assert forward.chain == ("photoimmune/tiny-ldm@2", "photoimmune/tiny-ldm@3")
    assert [row[0] for row in forward.rows] == [
        "tiny-ldm@2 only, no check",
        "tiny-ldm@2 + re-immunized by the check",
        "tiny-ldm@3 native",
        "tiny-ldm@3 native, edited by tiny-ldm@4",
    ]
    # v4 honours v3: the v3-native image passes its check untouched, and its edit breaks
    # further than on v3, where only the perturbation works.
    assert (forward.honouring, forward.honoured_status) == ("tiny-ldm@4", "covered")
    assert forward.rows[3][1] < forward.rows[2][1]
    assert read_manifest((tmp_path / "immunized-previous.png").read_bytes()).assertion.covers(
        "photoimmune/tiny-ldm@2"
    )
    assert all(-1 <= ssim <= 1 and psnr > 0 for _, ssim, psnr in forward.rows)
    assert load_image(forward.grid).width > 5 * load_image(forward.grid).height
    assert forward.image.is_file()


def test_demo_cli_prints_the_table_and_reuses_its_registry(tmp_path, capsys):
    for strength in ("0.2", "0.3"):  # the second run finds the release already published
        fast = ["--steps", "5", "--size", "128", "--edit-steps", "8"]
        options = fast if strength == "0.2" else [*fast, "--strength", strength]
        assert main(["demo", "--out", str(tmp_path), *options]) == 0
        out = capsys.readouterr().out
        assert "SSIM" in out and "max |δ|" in out and "photoimmune/tiny-ldm@3" in out
        words = " ".join(out.split())  # rich wraps long lines
        assert "gap over noise" in words and f"strength {strength}," in words
        assert (
            "the effect is" in words
            and "often weaker" in words
            and ("believably" in words or "recognisable" in words)
        )
        assert "forward compatibility" in words and "outdated → reimmunized" in words
        assert "tiny-ldm@4 honours tiny-ldm@3's protections" in words and "covered" in words
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "forward.png").is_file()
    # v2, v3, and v4, which honours v3
    assert len(list((tmp_path / "registry" / "releases").iterdir())) == 3


def test_a_demo_whose_edits_would_run_no_step_is_refused_before_anything_is_made(tmp_path, capsys):
    # strength 0.2 of 4 steps: diffusers would run int(0.8) = 0 of them
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--edit-steps", "4", "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "edit steps runs none" in err and "at least 5" in err and "Traceback" not in err
    assert not out.exists()  # no keys, no registry: it stopped before the attack


def test_a_registry_an_earlier_photoimmune_published_to_is_moved_aside_never_replaced(tmp_path):
    from photoimmune.cli.demo import _demo_registry
    from photoimmune.registry import StaleRegistryError, local_registry, open_registry, publish
    from photoimmune.registry.keys import load_signer
    from photoimmune.sdk.descriptor import Budget
    from photoimmune.sdk.targets import build_target, save_target

    folder = tmp_path / "registry"
    local_registry(folder, [])  # the vendor and its key, nothing published yet
    # tiny-ldm@2 as a photoimmune that recommended another budget would have published it
    earlier = build_target("tiny-ldm@2", budgets=(Budget(method="encoder", eps="4/255", steps=9),))
    save_target(earlier, tmp_path / "release")
    vendor = load_signer(folder / "vendor-keys" / "photoimmune.pem")
    publish(open_registry(folder), "photoimmune", tmp_path / "release", [vendor])
    with pytest.raises(StaleRegistryError, match="tiny-ldm@2 as an earlier photoimmune"):
        local_registry(folder, ["tiny-ldm@2"])
    client, moved = _demo_registry(folder, ["tiny-ldm@2"])
    assert moved is not None and (moved / "root.json").is_file()  # kept, beside the new one
    assert client.get("photoimmune/tiny-ldm@2").budgets == build_target("tiny-ldm@2").budgets


def test_similarity_of_identical_and_different_images():
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 200, np.uint8)
    assert edit_similarity(a, a)[0] == 1.0
    ssim, psnr = edit_similarity(a, b)
    assert ssim < 0.1 and psnr < 10


def test_pictures():
    a = np.zeros((10, 20, 3), np.uint8)
    grid = comparison_grid([a, a, a], ["x", "y", "z"], tile=40)
    assert grid.size == (3 * 44 + 4, 20 + 18 + 8)
    delta = amplify_delta(a, a + 2, gain=10)
    assert int(delta.max()) == 148
    assert loss_curve([]).size == (360, 200)


def test_scatter_chart_shades_the_goal_and_places_points_by_value():
    inside, outside = (0.6, 0.3), (0.2, 0.1)
    chart = scatter_chart(
        {"first": {"in": inside}, "second": {"out": outside}},
        x_label="x",
        y_label="y",
        goal=(0.5, 0.25),
    )
    pixels = np.asarray(chart)
    shaded = np.all(pixels == (214, 238, 214), axis=2)
    rows, cols = np.nonzero(shaded)
    # The shaded corner runs from the goal to the axes' ends: the top right.
    assert cols.min() > chart.width / 2 and rows.max() < chart.height / 2
    box = np.zeros_like(shaded)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    first = np.all(pixels == (90, 90, 90), axis=2)  # the first point's colour
    second = np.all(pixels == (30, 110, 200), axis=2)  # the second's
    assert (first & box).sum() > 20  # its marker, on the shading
    assert second.any() and not (second & box).any()


def test_scatter_chart_keeps_a_negative_value_on_the_canvas():
    # A protection that did worse than noise has a negative gap: the axis starts below it.
    chart = scatter_chart({"v": {"worse than noise": (0.3, -0.05)}}, x_label="x", y_label="y")
    rows, _ = np.nonzero(np.all(np.asarray(chart) == (90, 90, 90), axis=2))
    assert rows.size > 20 and rows.max() < chart.height - 20  # above the x axis' labels
