import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glamd_core import files, runs
from glamd_core.__main__ import main as cli
from glamd_core.profiles import PROFILES, get_profile
from glamd_core.reproduce import run_baselines

SMOKE = get_profile("smoke")


def test_a_run_is_cached_by_its_config_and_reused(tmp_path, monkeypatch):
    first = runs.train_detector("retinanet", "resnet10t", SMOKE, 0, tmp_path / "runs", data_dir=tmp_path / "data")
    assert set(first["metrics"]) == {"val", "test"}  # settings are chosen on val, tables report test
    for split in ("val", "test"):
        assert set(first["metrics"][split]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07_mAP50"}
        assert (tmp_path / "runs" / first["run_dir"] / f"detections_{split}.json").is_file()
    assert first["train_seconds"] > 0
    assert first["code_commit"] == files.git_commit() != ""  # the code that trained it, not in the key
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
    assert files.config_key(a) == files.config_key(json.loads(json.dumps(a)))
    assert files.config_key(a) != files.config_key(b)


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
    assert (tmp_path / "out" / "table.csv").read_text().startswith("kind,role,backbone,seed,AP val,")


def test_profiles_are_data_and_unknown_names_fail():
    assert {"smoke", "cpu", "paper_voc", "paper_coco"} <= set(PROFILES)
    assert PROFILES["cpu"].data.num_train > PROFILES["smoke"].data.num_train
    assert {PROFILES["paper_voc"].data.layout, PROFILES["paper_coco"].data.layout} == {"voc", "coco"}
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
    assert 0.0 <= r["metrics"]["test"]["AP"] <= 1.0
    config = json.loads((tmp_path / "runs" / r["run_dir"] / "config.json").read_text())
    assert config["distill"]["method"] == "glamd" and config["teacher_run"] == teacher["run_dir"]
    dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(dirs) == 2  # one teacher, one distilled student: the teacher was not trained twice
    other = runs.train_distilled("retinanet", "resnet10t", "resnet10t", profile, DistillConfig(method="global"), 1, **kw)
    assert other["run_dir"] != r["run_dir"]


def test_reproduce_cli_runs_every_notebook_with_the_profile_parameter(monkeypatch, capsys):
    import papermill

    from glamd_core.reproduce import NOTEBOOK_DIR

    calls = []

    def fake_execute(src, out, parameters, **kw):
        calls.append((src, out, parameters, kw["cwd"]))
        Path(out).write_text("executed")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    from glamd_core import reproduce as R
    pooled = []  # the pool of every notebook's runs is tested in tests/test_plan.py; here only what it is given
    monkeypatch.setattr(R, "train_pool", lambda profile, names, workers, data_root, executor, runs_dir:
                        pooled.append((profile, [Path(n).stem for n in names], data_root)))
    cli(["reproduce", "--profile", "smoke"])
    assert pooled == [("smoke", [], None)]  # no names: every notebook
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    assert notebooks and [c[0] for c in calls] == [str(p) for p in notebooks]
    printed = capsys.readouterr().out
    for (src, out, params, cwd), nb in zip(calls, notebooks):
        assert params == {"profile": "smoke"} and cwd == str(runs.REPO_ROOT)
        # executed beside the results folder, moved in when finished; smoke never touches committed results
        assert out.endswith(f"results/_smoke/.{nb.stem}.partial.ipynb") and not Path(out).exists()
        final = runs.RESULTS_DIR / "_smoke" / nb.stem / nb.name
        assert final.read_text() == "executed" and f"executed {final}" in printed
    assert printed.count("executed") == len(notebooks)
    calls.clear()
    cli(["reproduce", "--profile", "smoke", "01_voc_small_models", "--workers", "3", "--force"])  # 3 > 2 cores: --force
    assert len(calls) == 1 and calls[0][2] == {"profile": "smoke", "workers": 3}
    with pytest.raises(SystemExit):
        cli(["reproduce", "--workers", "0"])
    with pytest.raises(FileNotFoundError, match="no notebook 'nope'"):
        cli(["reproduce", "--profile", "smoke", "nope"])
    # real data: the data root reaches the pool and the notebooks; calibration (nothing to choose on) is skipped unless named
    asked = []
    monkeypatch.setattr(R, "_run_notebooks", lambda names, profile, workers, data_root, **kw: asked.append((names, data_root)) or [])
    cli(["reproduce", "--profile", "paper_voc", "--data-root", "/data/VOCdevkit"])
    names, data_root = asked[-1]
    assert data_root == "/data/VOCdevkit" and [p.name for p in names] == [p.name for p in notebooks[1:]]
    assert pooled[-1] == ("paper_voc", [p.stem for p in notebooks[1:]], "/data/VOCdevkit")
    assert notebooks[0].stem == "00_calibration"


def test_run_cli_builds_the_experiment_it_is_given(monkeypatch, capsys):
    from glamd_core import experiments

    seen = []
    monkeypatch.setattr(experiments, "run", lambda exp, data_root=None: seen.append((exp, data_root)) or {"AP": 0.5})
    cli(["run", "--profile", "smoke", "--kind", "faster_rcnn", "--method", "glamd", "--seed", "2",
         "--student", "resnet10t", "--alpha", "0.5", "--patch-size", "3", "--distill-roi", "false"])
    (exp, data_root), = seen
    assert (exp.kind, exp.method, exp.profile, exp.seed, exp.student, exp.teacher) == \
        ("faster_rcnn", "glamd", "smoke", 2, "resnet10t", None)
    assert (exp.distill.alpha, exp.distill.beta, exp.distill.patch_size, exp.distill.distill_roi) == (0.5, 1.0, 3, False)
    assert json.loads(capsys.readouterr().out) == {"AP": 0.5}
    with pytest.raises(SystemExit):
        cli(["run", "--method", "glam"])
    with pytest.raises(SystemExit):
        cli(["run", "--distill-rpn", "maybe"])


def _epoch_summaries(run_dir):
    return sum(1 for line in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line).get("summary"))


def test_where_a_run_lives_is_known_before_training(tmp_path):
    from glamd_core.experiments import Experiment, is_finished, run

    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    exp = Experiment("retinanet", "glamd", "smoke", seed=1)
    assert not is_finished(exp, **kw)
    assert not (tmp_path / "runs").exists()  # asking trained nothing (the dataset is generated: keys name its content)
    r = run(exp, **kw)
    assert is_finished(exp, **kw) and is_finished(Experiment("retinanet", "teacher", "smoke"), **kw)
    assert not is_finished(Experiment("retinanet", "glamd", "smoke", seed=1, epochs=2), **kw)  # a new key
    profile = exp.resolved_profile()
    assert runs.run_dir_of("retinanet", profile.student_backbone, profile, 1, distill=exp.distill_config(),
                           teacher_backbone=profile.teacher_backbone, **kw) == tmp_path / "runs" / r["run_dir"]
    assert runs.run_dir_of("retinanet", profile.teacher_backbone, profile, 0, **kw).name == r["teacher_run"]


def test_parallel_workers_train_each_run_once(tmp_path):
    """Two workers asking for the same run at once, and a distilled student started while its
    teacher is training: the run locks make every run train exactly once."""
    import os

    from glamd_core.experiments import Experiment, run_all

    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    student = Experiment("retinanet", "none", "smoke", seed=0)
    twice = run_all([student, student], workers=2, **kw)
    assert twice[0] == twice[1]  # the second read what the first wrote
    assert twice[0]["threads"] == 1  # the canonical count, whatever the worker's share of the cores
    assert _epoch_summaries(tmp_path / "runs" / twice[0]["run_dir"]) == SMOKE.train.epochs

    pair = run_all([Experiment("retinanet", "teacher", "smoke"), Experiment("retinanet", "glamd", "smoke")],
                   workers=2, **kw)
    assert pair[1]["teacher_run"] == pair[0]["run_dir"] and pair[1]["method"] == "glamd"
    dirs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert dirs == sorted([twice[0]["run_dir"], pair[0]["run_dir"], pair[1]["run_dir"]])
    for d in dirs:
        assert _epoch_summaries(tmp_path / "runs" / d) == SMOKE.train.epochs
    # in order, and read from the cache in-process the second time
    again = run_all([Experiment("retinanet", "glamd", "smoke"), student], workers=2, **kw)
    assert again == [pair[1], twice[0]]


def test_default_workers_and_bad_worker_counts():
    import os

    from glamd_core.experiments import Experiment, default_workers, run_all

    assert default_workers([Experiment("retinanet", "none", "smoke")]) == 1
    assert default_workers([Experiment("retinanet", "none", "cpu")]) == max(1, min(4, os.cpu_count() or 1))
    assert default_workers([Experiment("retinanet", "none", "paper_coco")]) == 1  # GPU profile
    with pytest.raises(ValueError, match="workers must be at least 1"):
        run_all([], workers=0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        Experiment("retinanet", "none", "cpu", epochs=0)


def test_git_commit_is_dirty_for_code_changes_not_for_results(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr("glamd_core.files.REPO_ROOT", tmp_path)
    clean = files.git_commit()
    assert len(clean) >= 7 and not clean.endswith("-dirty")
    (tmp_path / "results" / "table.md").write_text("new\n")  # the main job rewriting committed results
    assert files.git_commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert files.git_commit() == clean + "-dirty"


def test_a_failing_run_in_a_worker_fails_run_all(tmp_path):
    from glamd_core.experiments import Experiment, run_all

    def bad(seed):  # Experiment refuses an unknown backbone itself: slip one past it, as a stale pickle might
        exp = Experiment("retinanet", "none", "smoke", seed=seed)
        object.__setattr__(exp, "student", "no_such_backbone")
        return exp

    with pytest.raises(Exception, match="no_such_backbone"):
        run_all([bad(0), bad(3)], workers=2, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")


def test_an_unguarded_script_gets_a_clear_error(tmp_path):
    """Spawned workers re-import the calling script; without a __main__ guard that must say so."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text("from glamd_core.experiments import Experiment, run_all\n"
                      f"run_all([Experiment('retinanet', 'none', 'smoke', seed=s) for s in (0, 1)], workers=2, "
                      f"runs_dir=r'{tmp_path / 'runs'}', data_dir=r'{tmp_path / 'data'}')\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr and "worker process died" in done.stderr


def test_workers_end_when_their_driver_is_killed_alone(tmp_path):
    """SIGKILL to the driver's pid only (not its process group): its pool worker must not train on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "driver.py"
    script.write_text("import multiprocessing, os, time\n"
                      "from concurrent.futures import ProcessPoolExecutor\n"
                      "from glamd_core.experiments import _init_worker\n"
                      "if __name__ == '__main__':\n"
                      "    ex = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
                      "                             initializer=_init_worker, initargs=(1, 0.2))\n"
                      "    print(ex.submit(os.getpid).result(), flush=True)\n"
                      "    ex.submit(time.sleep, 120)\n"
                      "    time.sleep(120)\n")
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        worker = int(driver.stdout.readline())
        os.kill(worker, 0)  # alive while its driver is
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its killed driver")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


def test_teachers_train_on_their_own_schedule(tmp_path, monkeypatch):
    """``Profile.teacher_epochs``: a distilled run's teacher and the "teacher" experiment are one run,
    trained longer than the students; ``Experiment.epochs`` shortens both."""
    from glamd_core import profiles
    from glamd_core.experiments import Experiment, run

    smoke = replace(SMOKE, teacher_backbone="resnet10t", teacher_epochs=2)
    monkeypatch.setitem(profiles.PROFILES, "smoke", smoke)
    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    student = run(Experiment("retinanet", "glamd", "smoke"), **kw)
    teacher = run(Experiment("retinanet", "teacher", "smoke"), **kw)
    assert student["teacher_run"] == teacher["run_dir"]
    assert _epoch_summaries(tmp_path / "runs" / teacher["run_dir"]) == 2
    assert _epoch_summaries(tmp_path / "runs" / student["run_dir"]) == 1
    short = run(Experiment("retinanet", "glamd", "smoke", epochs=1), **kw)
    assert short["teacher_run"] != teacher["run_dir"]
    assert _epoch_summaries(tmp_path / "runs" / short["teacher_run"]) == 1


def test_a_sweep_on_a_dask_cluster_trains_each_run_once_and_matches_the_local_path(tmp_path):
    """run_all(executor=...): a dask.distributed LocalCluster of 2 worker processes (one torch
    thread each) against local workers (one thread each) -- the same runs, trained once, equal results."""
    import torch
    from distributed import Client, LocalCluster

    from glamd_core.experiments import Experiment, run_all

    # a teacher, a student alone and a distilled student: every kind of run a sweep holds, each trained twice
    sweep = [Experiment("retinanet", "teacher", "smoke"), Experiment("retinanet", "none", "smoke"),
             Experiment("retinanet", "glamd", "smoke")]
    local = run_all(sweep, workers=2, runs_dir=tmp_path / "local", data_dir=tmp_path / "data")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(torch.set_num_threads, 1)
        remote = run_all(sweep, executor=client.get_executor(), runs_dir=tmp_path / "dask", data_dir=tmp_path / "data")
    assert [r["run_dir"] for r in remote] == [r["run_dir"] for r in local]
    for r, l in zip(remote, local):
        assert _epoch_summaries(tmp_path / "dask" / r["run_dir"]) == SMOKE.train.epochs  # trained once
        assert r["metrics"] == l["metrics"] and r["final_loss"] == l["final_loss"]
    assert sorted(p.name for p in (tmp_path / "dask").iterdir() if p.is_dir()) == sorted(r["run_dir"] for r in local)
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        run_all(sweep, executor=object())


def test_a_teacher_trained_elsewhere_is_imported_not_trained(tmp_path):
    """Experiment(teacher_checkpoint=...): the file's weights become a run of the cache (evaluated,
    keyed by content), and distilled students name that run as their teacher."""
    import shutil

    from glamd_core.analysis import load_run
    from glamd_core.experiments import Experiment, is_finished, run

    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    trained = run(Experiment("retinanet", "teacher", "smoke"), **kw)
    elsewhere = tmp_path / "teacher.pt"
    shutil.copy(tmp_path / "runs" / trained["run_dir"] / "last.pt", elsewhere)
    shutil.rmtree(tmp_path / "runs")  # nothing of the original run is left
    teacher = Experiment("retinanet", "teacher", "smoke", teacher_checkpoint=str(elsewhere))
    assert not is_finished(teacher, **kw)
    imported = run(teacher, **kw)
    assert is_finished(teacher, **kw) and imported["train_seconds"] == 0.0
    assert imported["metrics"] == trained["metrics"]  # the same weights, the same evaluation
    assert not (tmp_path / "runs" / imported["run_dir"] / "metrics.jsonl").exists()  # nothing was trained
    student = Experiment("retinanet", "glamd", "smoke", teacher_checkpoint=str(elsewhere))
    r = run(student, **kw)
    assert r["teacher_run"] == imported["run_dir"] and is_finished(student, **kw)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([imported["run_dir"], r["run_dir"]])
    assert load_run(teacher, **kw).model.training is False
    other = tmp_path / "other.pt"  # other weights, another teacher
    state = torch.load(elsewhere, weights_only=False)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, other)
    assert not is_finished(Experiment("retinanet", "glamd", "smoke", teacher_checkpoint=str(other)), **kw)
    with pytest.raises(FileNotFoundError, match="teacher checkpoint .*missing.pt not found"):
        run(Experiment("retinanet", "glamd", "smoke", teacher_checkpoint=str(tmp_path / "missing.pt")), **kw)


def test_cached_cpu_runs_keep_their_keys(canonical_keys):
    """Settings added since these runs were trained must not move them: the cpu results point at these
    names (canonical kernels, the cpu dataset's content fingerprint; issue #34 moved every key once)."""
    from glamd_core.distill import DistillConfig

    cpu = get_profile("cpu")
    assert runs.run_dir_of("retinanet", "resnet34", cpu.for_teacher(), 0).name == "retinanet-resnet34-s0-3a24cb5abce8"
    assert runs.run_dir_of("faster_rcnn", "resnet34", cpu.for_teacher(), 0).name == "faster_rcnn-resnet34-s0-89cd5757ff11"
    student = runs.run_dir_of("retinanet", "regnetx_002", cpu, 0, distill=DistillConfig("global", loss_form="reference"),
                              teacher_backbone="resnet34")
    assert student.name == "retinanet-regnetx_002-global-s0-be76ad02df54"
