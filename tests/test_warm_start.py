"""A student warm-started from a finished run of the cache (issue #31): keyed by that run, loads its
weights, and a missing run or one of another architecture is an error naming it."""

import json

import pytest
import torch

from glamd_core import engine
from glamd_core.data import splits as data_splits
from glamd_core import runs
from glamd_core.detectors import build_detector
from glamd_core.engine import CHECKPOINT
from glamd_core.experiments import Experiment, run, run_dir
from glamd_core.profiles import get_profile


def _state(path):
    return torch.load(path / CHECKPOINT, map_location="cpu", weights_only=False)["model"]


def test_a_warm_start_loads_the_runs_weights_and_is_keyed_by_it(tmp_path):
    alone = Experiment("retinanet", "none", "smoke", seed=0)
    warm = Experiment("retinanet", "none", "smoke", seed=0, init_from=alone)
    assert run_dir(warm, runs_dir=tmp_path) != run_dir(alone, runs_dir=tmp_path)
    r = run(warm, runs_dir=tmp_path)  # trains the run it starts from first, like a teacher
    source = run_dir(alone, runs_dir=tmp_path)
    assert (source / "eval.json").exists() and r["run_dir"] == run_dir(warm, runs_dir=tmp_path).name
    assert json.loads((tmp_path / r["run_dir"] / "config.json").read_text())["init_run"] == source.name
    assert "init_run" not in json.loads((source / "config.json").read_text())  # earlier keys unchanged

    profile = get_profile("smoke")
    classes = data_splits.load_split(profile, data_splits.dataset_root(profile), "train").num_classes
    fresh = build_detector("retinanet", profile.student_backbone, classes, **profile.detector)
    engine.warm_start(fresh, source)
    loaded, saved = fresh.state_dict(), _state(source)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)

    # a distilled student warm-started from the same run: its student starts from those weights
    glamd = Experiment("retinanet", "glamd", "smoke", seed=0, init_from=alone)
    assert run_dir(glamd, runs_dir=tmp_path) != run_dir(Experiment("retinanet", "glamd", "smoke"), runs_dir=tmp_path)


def test_a_missing_run_is_named_before_anything_trains(tmp_path):
    missing = tmp_path / "retinanet-regnetx_002-s0-000000000000"
    with pytest.raises(FileNotFoundError, match="retinanet-regnetx_002-s0-000000000000 is not a finished run"):
        runs.train_detector("retinanet", "regnetx_002", get_profile("smoke"), runs_dir=tmp_path, init_run=missing)
    assert not any(p.name.startswith("retinanet-regnetx_002-s0-") and p != missing for p in tmp_path.iterdir())


def test_weights_of_another_architecture_are_named(tmp_path):
    teacher = Experiment("retinanet", "teacher", "smoke")
    run(teacher, runs_dir=tmp_path)
    source = run_dir(teacher, runs_dir=tmp_path)
    profile = get_profile("smoke")
    with pytest.raises(ValueError, match=f"warm start from {source.name}: its weights do not fit"):
        runs.train_detector("retinanet", profile.student_backbone, profile, runs_dir=tmp_path, init_run=source)
    # nothing of the failed run is left behind
    assert {p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("synthetic")} == {source.name}
    with pytest.raises(ValueError, match="init_from must be an Experiment"):
        Experiment("retinanet", "none", "smoke", init_from="retinanet-regnetx_002-s0-1580dbe05fdb")
    with pytest.raises(ValueError, match="warm-starts a student"):
        Experiment("retinanet", "teacher", "smoke", init_from=teacher)
