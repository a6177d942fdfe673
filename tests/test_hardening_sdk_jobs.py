"""Hardening of the jobs and evaluation API against what Python callers pass by mistake.

One rule for every parameter that takes a list of paths or names (``Catalog.add``,
``plan``/``run``'s models, ``evaluate``'s photos): one item given alone is taken as
one item, never walked character by character (``"/"`` once catalogued ``/dev``).
A link that cannot even be resolved is recorded as unreadable, not a crash; bad
settings are refused by name before any work is queued.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from photoimmune.sdk.devices import check_device, check_device_available
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.evaluate.harness import EvalSettings, _photo_list, evaluate
from photoimmune.sdk.io import save_image
from photoimmune.sdk.jobs import Catalog, JobSettings, plan, run
from photoimmune.sdk.jobs.planning import subscribed_models
from photoimmune.sdk.jobs.queue import WorkQueue
from photoimmune.sdk.limits import MAX_STEPS
from photoimmune.sdk.samples import sample_pixels
from photoimmune.service.settings import ServiceSettings

MODEL = "photoimmune/tiny-ldm"
QUICK_EVAL = {
    "size": 64,
    "steps": 1,
    "diffusion_steps": 1,
    "edit_steps": 2,
    "methods": ("noise",),
    "processing": ("none",),
}


def photos(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.png"
        save_image(sample_pixels("chelsea.png", 32 + 8 * i), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def registry_client(tmp_path_factory):
    from photoimmune.registry.admin import local_registry

    return local_registry(tmp_path_factory.mktemp("registry"), ["tiny-ldm@1"])


# -- 1. one item given alone ------------------------------------------------------------


@pytest.mark.parametrize("as_given", [str, Path])
def test_catalog_add_takes_one_folder_given_alone_as_that_folder(tmp_path, as_given):
    made = photos(tmp_path / "in")
    report = Catalog(tmp_path / "c.db").add(as_given(tmp_path / "in"))
    assert sorted(report.added) == sorted(str(p) for p in made)
    assert report.missing == {} and report.unreadable == {} and report.skipped == {}


def test_catalog_add_of_a_relative_name_alone_is_never_its_letters(tmp_path, monkeypatch):
    made = photos(tmp_path / "in")
    (tmp_path / "i").mkdir()  # a folder named like the name's first letter: never walked
    save_image(sample_pixels("coffee.png", 32), tmp_path / "i" / "decoy.png")
    monkeypatch.chdir(tmp_path)
    catalog = Catalog("c.db")
    report = catalog.add("in")
    assert sorted(report.added) == sorted(str(p) for p in made)
    assert report.missing == {}
    assert [o.location for o in catalog.originals()] == sorted(str(p) for p in made)


@pytest.mark.parametrize("paths", [b"/tmp", 5, None, [None], ["ok", 3]])
def test_catalog_add_refuses_what_is_no_path_by_name(tmp_path, paths):
    with pytest.raises(InputError, match="path"):
        Catalog(tmp_path / "c.db").add(paths)


def test_catalog_add_still_takes_any_iterable_of_paths(tmp_path):
    made = photos(tmp_path / "in")
    report = Catalog(tmp_path / "c.db").add(p for p in made)
    assert sorted(report.added) == sorted(str(p) for p in made)


def test_plan_and_subscribed_models_take_one_name_given_alone():
    assert subscribed_models(MODEL) == (MODEL,)
    assert subscribed_models([MODEL, f" {MODEL} "]) == (MODEL,)


def test_plan_with_one_model_name_alone_plans_that_model(tmp_path, registry_client):
    photos(tmp_path / "in")
    catalog = Catalog(tmp_path / "c.db")
    catalog.add([tmp_path / "in"])
    job_plan = plan(catalog, registry_client, MODEL)
    assert job_plan.models == (MODEL,)
    assert [t.ref for t in job_plan.targets] == [f"{MODEL}@1"]
    assert len(job_plan.images) == 2


@pytest.mark.parametrize("models", [[5], [None], 5, b"photoimmune/tiny-ldm"])
def test_a_model_that_is_no_name_is_refused_by_name(models):
    with pytest.raises(InputError, match="models"):
        subscribed_models(models)


def test_evaluate_takes_one_photo_given_alone(tmp_path):
    (photo,) = photos(tmp_path, 1)
    report = evaluate(str(photo), EvalSettings(**QUICK_EVAL))
    assert report.photos == [str(photo)]
    assert [(r.method, r.processing) for r in report.rows] == [("noise", "none")]


def test_one_photo_of_any_kind_is_one_item():
    pixels = np.zeros((8, 8, 3), np.uint8)
    for single in ("a.png", Path("a.png"), b"\x89PNG", pixels):
        assert len(_photo_list(single)) == 1
    assert len(_photo_list([pixels, pixels])) == 2
    assert len(_photo_list(p for p in ["a.png", "b.png"])) == 2


# -- 2. a link that cannot be resolved -------------------------------------------------


def test_a_link_loop_in_a_folder_is_recorded_unreadable_and_the_rest_catalogued(tmp_path):
    made = photos(tmp_path / "in")
    (tmp_path / "in" / "loop.png").symlink_to("loop.png")
    report = Catalog(tmp_path / "c.db").add([tmp_path / "in"])
    assert sorted(report.added) == sorted(str(p) for p in made)
    assert list(report.unreadable) == [str(tmp_path / "in" / "loop.png")]


def test_a_link_whose_resolution_is_denied_is_recorded_not_raised(tmp_path, monkeypatch):
    """As a link to /proc/1/cwd is for an unprivileged user (or in a container)."""
    made = photos(tmp_path / "in")
    denied = tmp_path / "in" / "denied.png"
    denied.symlink_to(made[0])
    resolve = Path.resolve

    # A double at the OS boundary: run as root, no real link's resolution is ever denied.
    def resolve_denied_double(self, strict=False):
        if self.name == "denied.png":
            raise PermissionError(13, "Permission denied", str(self))
        return resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", resolve_denied_double)
    catalog = Catalog(tmp_path / "c.db")
    report = catalog.add([tmp_path / "in"])
    # Its content still loads, so it is catalogued under its own name (it has no other).
    assert sorted(report.added) == sorted(str(p) for p in [denied, *made])
    # Named alone too: no raw PermissionError.
    assert catalog.add(denied).missing == {}


def test_a_folder_that_cannot_be_listed_is_reported_not_skipped_silently(tmp_path, monkeypatch):
    made = photos(tmp_path / "in")
    (tmp_path / "in" / "locked").mkdir()
    real_scandir = os.scandir

    # A double at the OS boundary: root lists any folder, whatever its permissions say.
    def scandir_denied_double(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_denied_double)
    report = Catalog(tmp_path / "c.db").add([tmp_path / "in"])
    assert sorted(report.added) == sorted(str(p) for p in made)
    assert "cannot list" in report.unreadable[str(tmp_path / "in" / "locked")]


# -- 3. the catalog's database ------------------------------------------------------------


@pytest.mark.parametrize("db", [None, 5, ["c.db"]])
def test_a_catalog_without_a_database_location_is_refused_naming_db(db):
    with pytest.raises(InputError, match="db="):
        Catalog(db)


# -- 4. JobSettings and EvalSettings ------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"eps": "abc"}, "eps="),
        ({"eps": "0"}, "eps="),
        ({"eps": "2"}, "eps="),
        ({"seed": 2**70}, "seed="),
        ({"seed": -1}, "seed="),
        ({"device": "tpu"}, "device="),
        ({"device": "cuda:x"}, "device="),
        ({"device": "meta"}, "device="),
    ],
)
def test_job_settings_refuse_a_bad_field_by_name(fields, named):
    with pytest.raises(InputError, match=named):
        JobSettings(**fields)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_job_settings_take_every_device_a_worker_may_have(device):
    # Whether *this* machine has it is checked where the work runs: a Ray job's
    # workers may have GPUs the machine that starts it lacks.
    assert JobSettings(device=device).device == device
    assert JobSettings(eps="8/255", seed=2**63 - 1).seed == 2**63 - 1


def test_a_cuda_device_this_machine_lacks_is_refused_before_any_work(
    tmp_path, monkeypatch, registry_client
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device("cuda")  # a device photoimmune runs on...
    with pytest.raises(InputError, match="no CUDA device"):
        check_device_available("cuda")  # ...that this machine lacks
    catalog = Catalog(tmp_path / "c.db")
    with pytest.raises(InputError, match="device='cuda'"):
        run(
            catalog,
            registry_client,
            [MODEL],
            out_dir=tmp_path / "out",
            settings=JobSettings(device="cuda"),
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"eps": "abc"}, "eps="), ({"eps": "0"}, "eps="), ({"seed": 2**70}, "seed=")],
)
def test_eval_settings_refuse_a_bad_field_by_name(fields, named):
    with pytest.raises(InputError, match=named):
        EvalSettings(**fields)


@pytest.mark.parametrize(
    ("model", "field", "low"),
    [
        (JobSettings, "steps", 1),
        (ServiceSettings, "steps", 1),
        (EvalSettings, "steps", 0),
        (EvalSettings, "diffusion_steps", 0),
        (EvalSettings, "edit_steps", 1),
    ],
)
def test_step_counts_are_bounded_when_the_settings_are_made(model, field, low):
    # Refused as immunize() refuses them, before any job is planned or upload answered.
    for wrong in (MAX_STEPS + 1, low - 1):
        with pytest.raises(InputError) as caught:
            model(**{field: wrong})
        said = f"{field}={wrong!r}: give a whole number from {low} to {MAX_STEPS}"
        assert str(caught.value) == said
    assert getattr(model(**{field: MAX_STEPS}), field) == MAX_STEPS


def test_run_refuses_too_many_steps_before_anything_is_queued(tmp_path, registry_client):
    catalog = Catalog(tmp_path / "c.db")
    catalog.add(photos(tmp_path / "in", 1))
    with pytest.raises(InputError, match=f"steps=20000: .* to {MAX_STEPS}"):
        run(catalog, registry_client, [MODEL], out_dir=tmp_path / "out", settings={"steps": 20000})
    assert WorkQueue(catalog).claim(10, None) == []  # nothing was queued


# -- 5. run()'s settings and limit ---------------------------------------------------------


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_run_refuses_a_limit_that_is_no_count(tmp_path, limit, registry_client):
    with pytest.raises(InputError, match="limit="):
        run(Catalog(tmp_path / "c.db"), registry_client, [MODEL], out_dir=tmp_path, limit=limit)


@pytest.mark.parametrize("settings", ["fast", 5, ["steps", 1]])
def test_run_refuses_settings_that_are_neither_settings_nor_a_dict(tmp_path, settings):
    with pytest.raises(InputError, match="settings="):
        run(
            Catalog(tmp_path / "c.db"),
            registry_client,
            [MODEL],
            out_dir=tmp_path,
            settings=settings,
        )


def test_settings_of_another_type_are_refused_naming_the_model_to_give(tmp_path, registry_client):
    catalog = Catalog(tmp_path / "c.db")
    with pytest.raises(InputError, match=r"settings='fast': give JobSettings\(\.\.\.\)"):
        run(catalog, registry_client, [MODEL], out_dir=tmp_path, settings="fast")
    with pytest.raises(InputError, match=r"settings=5: give EvalSettings\(\.\.\.\)"):
        evaluate(photos(tmp_path, 1), settings=5)


def test_run_validates_a_dict_of_settings(tmp_path):
    with pytest.raises(InputError, match="eps="):
        run(
            Catalog(tmp_path / "c.db"),
            registry_client,
            [MODEL],
            out_dir=tmp_path,
            settings={"eps": "abc"},
        )


def test_run_takes_a_dict_of_settings_and_one_model_alone(tmp_path, registry_client):
    photos(tmp_path / "in")
    catalog = Catalog(tmp_path / "c.db")
    catalog.add(tmp_path / "in")
    summary = run(
        catalog,
        registry_client,
        MODEL,
        out_dir=tmp_path / "out",
        settings={"steps": 1, "threads": 1},
        limit=0,  # plan and queue only
    )
    assert summary.models == (MODEL,)
    assert summary.steps == 1
    assert summary.planned == 2 and summary.remaining == 2 and summary.done == []


# -- 6. evaluate() with no photos ---------------------------------------------------------


@pytest.mark.parametrize("nothing", [[], (), iter([])])
def test_evaluate_refuses_no_photos_up_front(nothing, monkeypatch):
    import photoimmune.sdk.models.pipelines as pipelines

    def never(*args, **kwargs):  # pragma: no cover
        raise AssertionError("no model is loaded for nothing to evaluate")

    monkeypatch.setattr(pipelines, "load_pipeline", never)
    with pytest.raises(InputError, match="no photos"):
        evaluate(nothing, EvalSettings(**QUICK_EVAL))


def test_evaluate_takes_a_dict_of_settings_and_refuses_other_things():
    with pytest.raises(InputError, match="settings="):
        evaluate(["a.png"], "quick")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="eps="):
        evaluate(["a.png"], {"eps": "abc"})  # type: ignore[arg-type]
