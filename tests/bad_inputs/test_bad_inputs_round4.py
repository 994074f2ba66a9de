"""Fourth round of bad inputs: each fails before anything trains with an error naming the file, row,
column or parameter -- or gives a documented, visible result."""

import json
import os
import sys
import types

import pandas as pd
import pytest

from glamd_core import consistency, costs
from glamd_core import reproduce as R
from glamd_core.__main__ import main as cli
from glamd_core.experiments import Experiment, is_finished, run, run_dir


# -- 1. a torn eval.json of a cached run ----------------------------------------------------------
def _torn(runs_dir, exp):
    where = run_dir(exp, runs_dir=runs_dir)
    where.mkdir(parents=True)
    (where / "config.json").write_text(json.dumps({"what": "detector"}))
    (where / "eval.json").write_text('{"metrics": ')
    return where


def test_a_torn_eval_json_is_named_and_never_counted_as_cached(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    teacher = Experiment("retinanet", "teacher", "smoke")  # 08_mask_visualization's one run
    where = _torn(runs_dir, teacher)
    named = rf"{where / 'eval.json'} is torn.*runs clear --pattern '{where.name}'"
    with pytest.raises(ValueError, match=named):
        run(teacher, runs_dir=runs_dir)
    with pytest.raises(ValueError, match=named):
        is_finished(teacher, runs_dir=runs_dir)
    with pytest.warns(UserWarning, match="torn"):  # its cost is left out, as before
        frame = R.plan("smoke", ["08_mask_visualization"], runs_dir=runs_dir)
    assert frame.status.tolist() == ["broken"] and frame.attrs["to_train"] == 1  # to train once cleared
    assert list(frame.attrs["broken"]) == [where.name]
    text = R.format_plan(frame)
    assert f"broken: {where / 'eval.json'} is torn" in text and f"runs clear --pattern '{where.name}'" in text
    trained = []
    monkeypatch.setattr("glamd_core.experiments.run_all", lambda *a, **k: trained.append(a) or [])
    with pytest.warns(UserWarning, match="torn"), pytest.raises(ValueError, match=named):
        R.train_pool("smoke", ["08_mask_visualization"], runs_dir=runs_dir)
    assert trained == []  # refused before the pool starts


# -- 2. a costs table with an empty count ----------------------------------------------------------
@pytest.mark.parametrize("row, column", [("cpu,retinanet,student,1,5.0,,x", "n"),
                                         ("cpu,retinanet,student,,5.0,3,x", "threads"),
                                         ("cpu,retinanet,student,1,5.0,2.5,x", "n")])
def test_an_empty_or_fractional_count_in_a_costs_table_names_file_column_and_row(tmp_path, row, column):
    path = tmp_path / "run_costs.csv"
    path.write_text("profile,kind,role,threads,minutes,n,source\ncpu,retinanet,student,1,4.0,2,x\n" + row + "\n")
    with pytest.raises(ValueError, match=rf"{path}: column '{column}' .* row 2 \(line 3\)"):
        costs.read_costs(path)


# -- 3. plan_accuracy with skewed file times -------------------------------------------------------
def test_plan_accuracy_with_skewed_file_times_gives_no_ratio_and_says_why(tmp_path, capsys):
    import benchmarks.plan_accuracy as B
    from glamd_core import plans

    runs_dir = tmp_path / "runs"
    earlier = {run_dir(e, runs_dir) for e in plans.notebook_experiments("00_calibration", "smoke")[0]}
    new = {run_dir(e, runs_dir): e for e in plans.notebook_experiments("02_patch_size", "smoke")[0]}
    new = {w: e for w, e in new.items() if w not in earlier}
    assert new
    for i, (where, e) in enumerate(new.items()):
        where.mkdir(parents=True)
        (where / "config.json").write_text(json.dumps({"what": "distilled" if e.method not in ("none", "teacher")
                                                       else "detector", "backbone": e.student_backbone}))
        (where / "eval.json").write_text(json.dumps({"profile": "smoke", "kind": e.kind, "threads": 1,
                                                     "train_seconds": 60.0, "eval_seconds": 1.0,
                                                     "setup_seconds": 0.0}))
        os.utime(where / "eval.json", (1e9 + i, 1e9 + i))  # copied without their times: each ends before it starts
        os.utime(where / "config.json", (1e9 + 600 + i, 1e9 + 600 + i))
    frame = B.main(["02_patch_size", "--profile", "smoke", "--runs-dir", str(runs_dir),
                    "--out", str(tmp_path / "accuracy.csv")])
    [row] = frame.to_dict("records")
    assert row["measured wall min"] == 0 and pd.isna(row["estimate / measured"])
    assert f"{len(new)} of {len(new)} runs end before they start" in row["note"]
    assert "end before they start" in capsys.readouterr().out


# -- 4. --executor submitit without SLURM ----------------------------------------------------------
def _fake_submitit(monkeypatch, cluster):
    made = []

    class AutoExecutor:
        def __init__(self, folder, cluster=None):
            self.cluster = cluster or _found
            self.parameters = {}
            made.append(self)

        def update_parameters(self, **kw):
            self.parameters.update(kw)

    _found = cluster
    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=AutoExecutor))
    ran = []
    monkeypatch.setattr(R, "reproduce", lambda *a, **k: ran.append(k["executor"]) or [])
    return made, ran


def test_submitit_without_slurm_refuses_instead_of_running_here(monkeypatch, capsys):
    made, ran = _fake_submitit(monkeypatch, "local")
    with pytest.raises(SystemExit):
        cli(["reproduce", "--profile", "smoke", "--executor", "submitit"])
    assert "no SLURM cluster was found" in capsys.readouterr().err and ran == []
    cli(["reproduce", "--profile", "smoke", "--executor", "submitit", "--slurm", "cluster=local"])  # asked for
    assert ran == [made[-1]] and made[-1].cluster == "local" and "cluster" not in made[-1].parameters
    made, ran = _fake_submitit(monkeypatch, "slurm")
    cli(["reproduce", "--profile", "smoke", "--executor", "submitit", "--slurm", "timeout_min=5"])
    assert ran == [made[-1]] and made[-1].parameters == {"timeout_min": 5}


# -- 5. a warm start from a run of another kind, profile or backbone -------------------------------
@pytest.mark.parametrize("source, named", [
    (Experiment("faster_rcnn", "none", "smoke"), "kind faster_rcnn, not retinanet"),
    (Experiment("retinanet", "none", "cpu"), "profile cpu, not smoke"),
    (Experiment("retinanet", "none", "smoke", student="resnet18"), "backbone resnet18, not resnet10t"),
    (Experiment("retinanet", "teacher", "smoke"), "backbone resnet18, not resnet10t"),
])
def test_a_warm_start_from_another_detector_is_refused_when_made(source, named):
    with pytest.raises(ValueError, match=f"init_from.*{named}"):
        Experiment("retinanet", "glamd", "smoke", init_from=source)
    Experiment("retinanet", "glamd", "smoke", init_from=Experiment("retinanet", "none", "smoke", seed=3))


# -- 6. a backbone timm does not know --------------------------------------------------------------
def test_an_unknown_backbone_is_named_with_close_matches_when_made(capsys):
    with pytest.raises(ValueError, match=r"student 'resnet99' is not a timm model; did you mean .*'resnet50'"):
        Experiment("retinanet", "none", "smoke", student="resnet99")
    with pytest.raises(ValueError, match=r"teacher 'resnet3' is not a timm model"):
        Experiment("retinanet", "glamd", "smoke", teacher="resnet3")
    with pytest.raises(SystemExit):
        cli(["run", "--profile", "smoke", "--student", "resnet99"])
    assert "'resnet99' is not a timm model" in capsys.readouterr().err
    for b in ("resnet34", "resnet18", "resnet10t", "regnetx_002", "resnet101", "resnet50", "resnext101_64x4d"):
        Experiment("retinanet", "none", "smoke", student=b, teacher=b)


# -- 7. consistency: nothing unread passes silently ------------------------------------------------
_CANONICAL = {"kernels": {"canonical": True}}
_RUN = "retinanet-regnetx_002-s0-bbbbbbbbbbbb"


def _notebook_folder(root, name="02_patch_size", rows=None, manifest=None):
    d = root / name
    d.mkdir(parents=True)
    rows = rows if rows is not None else [{"kind": "retinanet", "method": "none", "seed": 0, "AP": 15.1, "run": _RUN}]
    pd.DataFrame(rows).to_csv(d / "runs.csv", index=False)
    m = {"profile": "cpu", "notebook": f"{name}.ipynb", "teachers": {}} | _CANONICAL
    (d / "manifest.json").write_text(json.dumps(m if manifest is None else manifest))
    (d / "claims.csv").write_text("family,claim,verdict\n")  # its claims family's table and reading (#35)
    (d / "conclusion.md").write_text("computed\n")
    return d


@pytest.mark.parametrize("damage, named", [
    ("no manifest", "02_patch_size: a notebook's results folder without manifest.json"),
    ("no kernels", "02_patch_size: not made on the canonical kernels (its manifest records no kernels)"),
    ("non-canonical kernels", "02_patch_size: not made on the canonical kernels (canonical: false)"),
    ("garbage manifest", "02_patch_size/manifest.json: not a JSON object"),
    ("empty manifest", "02_patch_size/manifest.json: not a JSON object"),
    ("torn manifest", "02_patch_size/manifest.json: not a JSON object"),
    ("empty csv", "02_patch_size/runs.csv: unreadable table"),
    ("torn csv", "02_patch_size/runs.csv: unreadable table"),
    ("unparseable AP", "02_patch_size/runs.csv line 3: AP 'n/a' is not a number"),
    ("NaN AP", "02_patch_size/runs.csv line 3: AP '' is not a number"),
    ("two seeds", f"02_patch_size/runs.csv line 3: seed 1, but run {_RUN} is seed 0"),
])
def test_damaged_results_are_conflicts_naming_the_file(tmp_path, damage, named):
    d = _notebook_folder(tmp_path)
    row = {"kind": "retinanet", "method": "none", "seed": 0, "AP": 15.1, "run": _RUN}
    manifest = json.loads((d / "manifest.json").read_text())
    if damage == "no manifest":
        (d / "manifest.json").unlink()
    elif damage in ("no kernels", "non-canonical kernels"):
        manifest.pop("kernels") if damage == "no kernels" else manifest.update(kernels={"canonical": False})
        (d / "manifest.json").write_text(json.dumps(manifest))
    elif damage.endswith("manifest"):
        (d / "manifest.json").write_text({"garbage manifest": "\x00garbage", "empty manifest": "",
                                          "torn manifest": '{"profile": '}[damage])
    elif damage == "empty csv":
        (d / "runs.csv").write_text("")
    elif damage == "torn csv":
        (d / "runs.csv").write_text('kind,AP,run\nretinanet,"15.1\n')
    else:
        extra = row | ({"AP": "n/a"} if damage == "unparseable AP" else {"AP": None} if damage == "NaN AP"
                       else {"seed": 1})
        pd.DataFrame([row, extra]).to_csv(d / "runs.csv", index=False)
    found = consistency.conflicts(tmp_path)
    assert any(named in line for line in found), found


def test_tables_that_are_not_checked_are_listed_by_the_command(tmp_path, monkeypatch, capsys):
    d = _notebook_folder(tmp_path)
    pd.DataFrame([{"row": "GLAMD", "AP mean": 26.1}]).to_csv(d / "table.csv", index=False)
    pd.DataFrame([{"run": _RUN, "epoch": 1, "ratio": 0.5}]).to_csv(d / "gradient_balance.csv", index=False)
    assert consistency.conflicts(tmp_path) == []
    assert consistency.not_checked(tmp_path) == [
        "not checked: 02_patch_size/claims.csv (no run column)",
        "not checked: 02_patch_size/gradient_balance.csv (no AP column)",
        "not checked: 02_patch_size/table.csv (no run column)"]
    monkeypatch.setattr(consistency, "RESULTS", tmp_path)
    with pytest.raises(SystemExit) as done:
        consistency.main()
    assert done.value.code == 0
    assert "not checked: 02_patch_size/table.csv (no run column)" in capsys.readouterr().out
