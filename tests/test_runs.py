import json
from dataclasses import replace

import pytest

from glamd_core import runs
from glamd_core.__main__ import main as cli
from glamd_core.profiles import PROFILES, get_profile
from glamd_core.reproduce import run_baselines

SMOKE = get_profile("smoke")


def test_a_run_is_cached_by_its_config_and_reused(tmp_path, monkeypatch):
    first = runs.train_detector("retinanet", "resnet10t", SMOKE, 0, tmp_path / "runs", data_dir=tmp_path / "data")
    assert set(first["metrics"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07_mAP50"}
    assert first["train_seconds"] > 0
    assert first["code_commit"] == runs.git_commit() != ""  # the code that trained it, not in the key
    run_dir = tmp_path / "runs" / first["run_dir"]
    assert {"config.json", "last.pt", "metrics.jsonl", "metrics.csv", "eval.json", "detections_val.json"} <= \
        {p.name for p in run_dir.iterdir()}

    def no_training(*a, **k):
        raise AssertionError("a cached run must not train again")

    monkeypatch.setattr(runs, "train", no_training)
    assert runs.train_detector("retinanet", "resnet10t", SMOKE, 0, tmp_path / "runs", data_dir=tmp_path / "data") == first
    with pytest.raises(AssertionError, match="must not train"):  # any changed setting is a new run
        runs.train_detector("retinanet", "resnet10t", SMOKE.with_train(lr=5e-4), 0, tmp_path / "runs",
                            data_dir=tmp_path / "data")


def test_config_key_changes_with_any_setting():
    a = {"detector": {"image_size": 128}, "train": {"lr": 1e-3}}
    b = {"detector": {"image_size": 128}, "train": {"lr": 2e-3}}
    assert runs.config_key(a) == runs.config_key(json.loads(json.dumps(a)))
    assert runs.config_key(a) != runs.config_key(b)


def test_baselines_table_and_manifest(tmp_path):
    profile = replace(SMOKE, teacher_backbone="resnet10t", student_backbone="resnet10t")
    table = run_baselines(profile, kinds=("faster_rcnn",), seeds=(0, 1), runs_dir=tmp_path / "runs",
                          out_dir=tmp_path / "out", data_dir=tmp_path / "data")
    assert list(table.role) == ["teacher", "student", "student"]
    assert list(table.seed) == [0, 0, 1]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["seeds"] == [0, 1]
    assert {"commit", "wall_seconds", "torch", "torchvision", "timm"} <= set(manifest)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "Profile `smoke`, seeds [0, 1]" in md and "| kind" in md
    assert (tmp_path / "out" / "table.csv").read_text().startswith("kind,role,backbone,seed,AP,")


def test_profiles_are_data_and_unknown_names_fail():
    assert {"smoke", "cpu", "paper"} <= set(PROFILES)
    assert PROFILES["cpu"].data.num_train > PROFILES["smoke"].data.num_train
    assert PROFILES["paper"].data is None
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        get_profile("fast")
    with pytest.raises(SystemExit):
        cli(["reproduce", "--profile", "fast"])


def test_distilled_run_reuses_the_cached_teacher(tmp_path):
    from glamd_core.distill import DistillConfig

    profile = replace(SMOKE, teacher_backbone="resnet10t", student_backbone="resnet10t")
    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    teacher = runs.train_detector("retinanet", "resnet10t", profile, 0, **kw)
    r = runs.train_distilled("retinanet", "resnet10t", "resnet10t", profile, DistillConfig(method="glamd"), 1, **kw)
    assert r["teacher_run"] == teacher["run_dir"] and r["method"] == "glamd"
    assert 0.0 <= r["metrics"]["AP"] <= 1.0
    config = json.loads((tmp_path / "runs" / r["run_dir"] / "config.json").read_text())
    assert config["distill"]["method"] == "glamd" and config["teacher_run"] == teacher["run_dir"]
    dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(dirs) == 2  # one teacher, one distilled student: the teacher was not trained twice
    other = runs.train_distilled("retinanet", "resnet10t", "resnet10t", profile, DistillConfig(method="global"), 1, **kw)
    assert other["run_dir"] != r["run_dir"]


def test_reproduce_cli_runs_every_notebook_with_the_profile_parameter(monkeypatch, capsys):
    import papermill

    from glamd_core.notebooks import NOTEBOOK_DIR

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda src, out, parameters, **kw: calls.append((src, out, parameters, kw["cwd"])))
    cli(["reproduce", "--profile", "smoke"])
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    assert notebooks and [c[0] for c in calls] == [str(p) for p in notebooks]
    for (src, out, params, cwd), nb in zip(calls, notebooks):
        assert params == {"profile": "smoke"} and cwd == str(runs.REPO_ROOT)
        assert out.endswith(f"results/_smoke/{nb.stem}/{nb.name}")  # smoke never overwrites committed results
    assert capsys.readouterr().out.count("executed") == len(notebooks)
    calls.clear()
    cli(["reproduce", "--profile", "smoke", "01_voc_small_models"])
    assert len(calls) == 1
    with pytest.raises(FileNotFoundError, match="no notebook 'nope'"):
        cli(["reproduce", "--profile", "smoke", "nope"])


def test_run_cli_builds_the_experiment_it_is_given(monkeypatch, capsys):
    from glamd_core import experiments

    seen = []
    monkeypatch.setattr(experiments, "run", lambda exp, voc_root=None: seen.append((exp, voc_root)) or {"AP": 0.5})
    cli(["run", "--profile", "smoke", "--kind", "faster_rcnn", "--method", "glamd", "--seed", "2",
         "--student", "resnet10t", "--alpha", "0.5", "--patch-size", "3", "--distill-roi", "false"])
    (exp, voc_root), = seen
    assert (exp.kind, exp.method, exp.profile, exp.seed, exp.student, exp.teacher) == \
        ("faster_rcnn", "glamd", "smoke", 2, "resnet10t", None)
    assert (exp.distill.alpha, exp.distill.beta, exp.distill.patch_size, exp.distill.distill_roi) == (0.5, 1.0, 3, False)
    assert json.loads(capsys.readouterr().out) == {"AP": 0.5}
    with pytest.raises(SystemExit):
        cli(["run", "--method", "glam"])
    with pytest.raises(SystemExit):
        cli(["run", "--distill-rpn", "maybe"])
