"""The whole job as one plan: `reproduce --plan` trains nothing, its counts are what the notebooks
then train, the pool runs on any executor, and its cost model and wall-time simulation do what
they say."""

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from glamd_core import costs, plans, reproduce as R
from glamd_core.__main__ import main as cli
from glamd_core.experiments import Experiment, is_finished, run, run_dir


def _snapshot(folder: Path):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*")) if folder.exists() else []


def test_plan_trains_nothing_and_touches_no_cache(tmp_path, monkeypatch, capsys):
    runs_dir = tmp_path / "runs"
    run(Experiment("retinanet", "none", "smoke"), runs_dir=runs_dir)  # one cached run
    before = _snapshot(runs_dir)
    monkeypatch.setattr("glamd_core.experiments.run", lambda *a, **k: pytest.fail("a plan must not train"))
    monkeypatch.setattr("glamd_core.runs.train", lambda *a, **k: pytest.fail("a plan must not train"))
    frame = R.plan("smoke", ["02_patch_size", "05_glam_ablation"], workers=2, runs_dir=runs_dir)
    assert _snapshot(runs_dir) == before
    assert (frame.status == "cached").sum() == 2  # the student, listed by both notebooks
    first = frame[frame.notebook == "02_patch_size"]
    assert (first.status == "to train").sum() == len(first) - 1
    second = frame[frame.notebook == "05_glam_ablation"]
    assert second.status.str.startswith("planned by 02").sum() == 2  # the global mask and GLAMD: counted once
    assert frame.attrs["to_train"] == (frame.status == "to train").sum()
    monkeypatch.setenv("GLAMD_RUNS_DIR", str(runs_dir))
    cli(["reproduce", "--plan", "--profile", "smoke", "02_patch_size"])
    out = capsys.readouterr().out
    assert "02_patch_size: " in out and "nothing is trained" in out and "Total:" in out
    assert _snapshot(runs_dir) == before


def test_the_pool_trains_what_the_plan_says_and_the_notebook_finds_it_cached(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    frame = R.plan("smoke", ["02_patch_size"], runs_dir=runs_dir)
    planned = set(frame[frame.status == "to train"].run)
    R.train_pool("smoke", ["02_patch_size"], runs_dir=runs_dir)
    after_pool = {p.name for p in runs_dir.iterdir() if p.is_dir()}
    teachers = {r for r in after_pool if "-resnet18-s0-" in r}  # the smoke teacher, trained for its students
    assert after_pool - teachers == planned
    monkeypatch.setenv("GLAMD_RUNS_DIR", str(runs_dir))  # the notebook's kernel reads the same cache
    R.reproduce("smoke", ["02_patch_size"], pool=False)
    assert {p.name for p in runs_dir.iterdir() if p.is_dir()} == after_pool  # the notebook trained nothing new
    assert R.plan("smoke", ["02_patch_size"], runs_dir=runs_dir).attrs["to_train"] == 0


def test_the_pool_runs_on_a_dask_cluster(tmp_path):
    from distributed import Client, LocalCluster

    runs_dir = tmp_path / "runs"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        results = R.train_pool("smoke", ["07_feature_distance"], executor=client.get_executor(), runs_dir=runs_dir)
    planned = plans.notebook_experiments("07_feature_distance", "smoke")[0]
    distinct = {run_dir(e, runs_dir) for e in planned}  # a run two readings share is trained once
    assert len(results) == len(distinct) and all(is_finished(e, runs_dir) for e in planned)
    for r in results:  # each trained once: one summary line per epoch
        lines = (runs_dir / r["run_dir"] / "metrics.jsonl").read_text().splitlines()
        assert sum(json.loads(x).get("summary", False) for x in lines) == 1


def test_every_notebook_has_a_plan_that_its_notebook_calls():
    for path in R.notebook_paths():
        experiments, _ = plans.notebook_experiments(path.stem, "smoke")
        assert experiments, path.stem
        assert "plans." in path.read_text(), f"{path.name} must build its runs with glamd_core.plans"


# -- the cost model and the wall-time simulation --------------------------------------------------
def test_wall_time_simulation_matches_a_hand_schedule(tmp_path):
    teacher = Experiment("retinanet", "teacher", "smoke")
    students = [Experiment("retinanet", "glamd", "smoke", seed=s) for s in range(3)]
    alone = Experiment("retinanet", "none", "smoke")
    exps, minutes = [alone, *students, teacher], [4.0, 2.0, 2.0, 2.0, 10.0]
    order = costs.pool_order(exps, minutes)
    assert [exps[i].method for i in order] == ["teacher", "none", "glamd", "glamd", "glamd"]
    # worker A: teacher 0-10, then a student 10-12; worker B: alone 0-4, waits for the teacher, 10-12, 12-14
    assert costs.simulate_wall(exps, minutes, workers=2, runs_dir=tmp_path) == pytest.approx(14.0)
    assert costs.simulate_wall(exps, minutes, workers=1, runs_dir=tmp_path) == pytest.approx(20.0)
    assert costs.simulate_wall(exps, [4.0, 2.0, 2.0, 2.0, math.nan], workers=2, runs_dir=tmp_path) == pytest.approx(6.0)


def test_run_minutes_and_estimates_come_from_measurements(tmp_path):
    assert costs.run_minutes({"train_seconds": 600, "eval_seconds": 60, "setup_seconds": 30}) == pytest.approx(11.5)
    assert costs.run_minutes({"train_seconds": 600, "wall_seconds_this_call": 660}) == pytest.approx(11.0)
    runs_dir = tmp_path / "runs"
    result = run(Experiment("retinanet", "none", "smoke"), runs_dir=runs_dir)
    assert {"setup_seconds", "eval_seconds"} <= set(result)
    model = costs.CostModel.from_cache(runs_dir, tmp_path / "none.csv")
    minutes, source = model.estimate(Experiment("retinanet", "none", "smoke", seed=5))
    assert minutes == pytest.approx(costs.run_minutes(result)) and "run cache" in source
    assert math.isnan(model.estimate(Experiment("faster_rcnn", "none", "smoke"))[0])
    table = tmp_path / "costs.csv"
    table.write_text("profile,kind,role,threads,minutes,n\nsmoke,faster_rcnn,student,1,7.5,3\n")
    minutes, source = costs.CostModel.from_cache(runs_dir, table).estimate(Experiment("faster_rcnn", "none", "smoke"))
    assert minutes == 7.5 and "costs.csv" in source


def test_plan_accuracy_measures_busy_time_not_the_gaps_between_sessions():
    from benchmarks.plan_accuracy import busy_seconds

    spans = [(0.0, 4.0), (1.0, 3.0), (3.5, 6.0), (100.0, 110.0), (105.0, 120.0), (130.0, 130.0)]

    def slow(spans, step=0.25):  # count the sample points at which something runs
        ticks = [i * step for i in range(int(200 / step))]
        return step * sum(any(s <= t < e for s, e in spans) for t in ticks)

    assert busy_seconds(spans) == pytest.approx(slow(spans)) == pytest.approx(6.0 + 20.0)
    assert busy_seconds([]) == 0.0
    assert busy_seconds([(10.0, 5.0), (0.0, 1.0)]) == 1.0  # a span ending before it starts (skewed clocks) is empty


def test_the_pool_is_recorded_in_each_notebooks_manifest(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("GLAMD_RUNS_DIR", str(runs_dir))  # the notebook's kernel reads the same cache
    planned = R.plan("smoke", ["08_mask_visualization"], runs_dir=runs_dir)
    to_train = set(planned[planned.status == "to train"].run)
    assert to_train
    [executed] = R.reproduce("smoke", ["08_mask_visualization"], runs_dir=runs_dir)
    manifest = json.loads((executed.parent / "manifest.json").read_text())
    pool = manifest["pool"]  # the notebook found its runs cached: the pool says what it trained for it, and how long
    assert pool["notebooks"] == ["08_mask_visualization"] and pool["runs_trained_in_pool"] == len(to_train)
    seconds = sum(json.loads((runs_dir / r / "eval.json").read_text())["train_seconds"] for r in to_train)
    assert pool["wall_seconds"] > 0 and pool["train_minutes_of_those_runs"] == pytest.approx(seconds / 60, abs=0.051)
    [again] = R.reproduce("smoke", ["08_mask_visualization"], runs_dir=runs_dir)  # nothing to train: no pool entry
    assert "pool" not in json.loads((again.parent / "manifest.json").read_text())


def test_estimates_match_the_backbone_and_say_when_they_borrow_another(tmp_path):
    table = pd.DataFrame([
        {"profile": "cpu", "kind": "faster_rcnn", "role": "student", "threads": 1, "minutes": 5.6, "n": 3,
         "source": "cache", "backbone": "regnetx_002"},
        {"profile": "cpu", "kind": "faster_rcnn", "role": "student", "threads": 1, "minutes": 12.0, "n": 1,
         "source": "cache", "backbone": "resnet10t"}])
    model = costs.CostModel(table)
    assert model.estimate(Experiment("faster_rcnn", "none", "cpu"))[0] == 5.6
    minutes, source = model.estimate(Experiment("faster_rcnn", "none", "cpu", student="resnet10t"))
    assert minutes == 12.0 and "not measured" not in source
    minutes, source = model.estimate(Experiment("faster_rcnn", "none", "cpu", student="resnet18"))
    assert minutes == 5.6 and "resnet18 not measured" in source  # borrowed, and said
    assert costs.CostModel(costs.read_costs(costs.COSTS_FILE)).estimate(Experiment("faster_rcnn", "glamd", "cpu"))[0] > 0
    old = tmp_path / "old.csv"  # a table written before the backbone column: the profile's own backbones
    table.drop(columns="backbone").to_csv(old, index=False)
    assert set(costs.read_costs(old).backbone) == {"regnetx_002"}
    assert R.setting_label(Experiment("faster_rcnn", "none", "cpu", student="resnet10t",
                                      init_from=Experiment("faster_rcnn", "none", "cpu", student="resnet10t"))) == \
        "student=resnet10t, warm start from its none run, seed 0"


def test_notebook_lines_counts_code_and_leaves_out_the_cells_that_draw():
    from benchmarks.notebook_lines import count

    notebook = {"cells": [{"cell_type": "markdown", "source": ["# a title\n", "text"]},
                          {"cell_type": "code", "source": ["x = 1\n", "\n", "y = 2\n"]},
                          {"cell_type": "code", "source": ["fig, ax = plt.subplots()\n", "ax.plot(x, y)\n"]}]}
    assert count(notebook) == (4, 2)
