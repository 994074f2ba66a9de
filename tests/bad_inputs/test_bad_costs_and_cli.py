"""Cost tables, the plan and the reproduce CLI refuse what would mislead (issue #28)."""

import json
import os

import pandas as pd
import pytest

from glamd_core import costs
from glamd_core.__main__ import main as cli
from glamd_core.experiments import Experiment, run_dir


def _committed(tmp_path, text):
    path = tmp_path / "run_costs.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, named", [
    ("", "not a costs table"),
    ("\x00\x01garbage,\n\"unclosed", "not a costs table"),
    ("profile,kind,role\ncpu,retinanet,student\n", "missing ['threads', 'minutes', 'n']"),
    ("profile,kind,role,threads,minutes,n,source\ncpu,retinanet,student,1,-88,1,x\n", "minutes must be finite and >= 0"),
    ("profile,kind,role,threads,minutes,n,source\ncpu,retinanet,student,1,inf,1,x\n", "minutes must be finite and >= 0"),
    ("profile,kind,role,threads,minutes,n,source\ncpu,retinanet,student,1,abc,1,x\n", "minutes must be finite and >= 0"),
])
def test_a_bad_costs_table_is_named(tmp_path, text, named):
    path = _committed(tmp_path, text)
    with pytest.raises(ValueError, match="run_costs.csv") as error:
        costs.CostModel.from_cache(tmp_path / "runs", path)
    assert named in str(error.value)


def test_cost_tables_refuse_negative_minutes():
    measured = pd.DataFrame([{"profile": "cpu", "kind": "retinanet", "role": "student", "threads": 1,
                              "minutes": -88.0, "run": "retinanet-x-s0-aaaaaaaaaaaa"}])
    with pytest.raises(ValueError, match="retinanet-x-s0-aaaaaaaaaaaa"):
        costs.cost_table(measured)


@pytest.mark.parametrize("content", ["[1, 2]", '{"metrics": ', "null"])
def test_a_torn_or_non_object_eval_json_is_named_and_left_out_of_costs(tmp_path, content):
    runs_dir = tmp_path / "runs"
    where = run_dir(Experiment("retinanet", "none", "smoke"), runs_dir=runs_dir)
    where.mkdir(parents=True)
    (where / "config.json").write_text(json.dumps({"what": "detector"}))
    (where / "eval.json").write_text(content)
    with pytest.warns(UserWarning, match=f"{where.name}.*torn or not a JSON object"):
        assert costs.measured_costs(runs_dir).empty


def test_plan_accuracy_at_a_scratch_profile_leaves_the_committed_table_alone(tmp_path, monkeypatch):
    import benchmarks.plan_accuracy as B
    from glamd_core import experiments

    monkeypatch.setattr(experiments, "RESULTS_DIR", tmp_path / "results")
    with pytest.raises(SystemExit):  # nothing trained in this empty cache: it stops, having written nothing
        B.main(["02_patch_size", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")])
    with pytest.raises(SystemExit, match="left as it was"):  # 08's one run is an earlier notebook's: nothing to write
        B.main(["08_mask_visualization", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "results" / "benchmarks").exists()
    with pytest.raises(SystemExit):
        B.main(["08_mask_visualization", "--profile", "nope"])


def test_the_reproduce_cli_refuses_mismatched_or_excessive_options(capsys):
    cores = os.cpu_count() or 1
    with pytest.raises(SystemExit):
        cli(["reproduce", "--profile", "smoke", "--workers", str(cores + 998), "--plan"])
    assert f"more than this machine's {cores} cores" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["reproduce", "--profile", "smoke", "--executor", "dask", "--slurm", "timeout_min=5"])
    assert "--slurm sets SLURM parameters for --executor submitit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["reproduce", "--profile", "smoke", "--executor", "submitit", "--scheduler", "tcp://x:1"])
    assert "it goes with --executor dask" in capsys.readouterr().err


def test_a_dask_scheduler_that_is_not_listening_is_named(capsys):
    pytest.importorskip("distributed")
    with pytest.raises(SystemExit):
        cli(["reproduce", "--profile", "smoke", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"])
    assert "--scheduler tcp://127.0.0.1:9: no dask scheduler answers there" in capsys.readouterr().err
