"""The experiment runner's tabulation and provenance, on hand-made results (no training)."""

import json
import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glamd_core import experiments  # noqa: E402
from glamd_core.experiments import Experiment, results_frame, summarize, write_results  # noqa: E402
from glamd_core.profiles import get_profile  # noqa: E402


def _result(kind, method, seed, ap, commit=None):
    r = {"kind": kind, "method": method, "seed": seed,
         "metrics": {"val": {"AP": ap + 0.5, "AP50": ap + 0.6}, "test": {"AP": ap, "AP50": ap + 0.1}},
         "train_seconds": 120.0, "run_dir": f"{kind}-{method}-s{seed}"}
    return r | ({"code_commit": commit} if commit else {})


def test_results_frame_and_summary():
    results = [_result("retinanet", "none", s, ap) for s, ap in enumerate([0.20, 0.22, 0.27])]
    results += [_result("retinanet", "glamd", 0, 0.30, commit="abc1234")]
    frame = results_frame(results)
    assert list(frame.AP) == pytest.approx([20.0, 22.0, 27.0, 30.0])  # percent, on the test split by default
    assert set(frame.split) == {"test"}
    assert list(results_frame(results, split="val").AP) == pytest.approx([70.0, 72.0, 77.0, 80.0])
    with pytest.raises(ValueError, match="not evaluated on 'train'"):
        results_frame(results, split="train")
    assert list(frame.train_minutes) == [2.0] * 4
    assert list(frame.code_commit) == ["unrecorded"] * 3 + ["abc1234"]
    table = summarize(frame, metric="AP").set_index("method")
    assert table.loc["none", "mean"] == pytest.approx(23.0)
    assert table.loc["none", "std"] == pytest.approx(math.sqrt(((20 - 23) ** 2 + (22 - 23) ** 2 + (27 - 23) ** 2) / 2))
    assert table.loc["none", "n"] == 3 and table.loc["glamd", "n"] == 1 and math.isnan(table.loc["glamd", "std"])


def test_write_results_carries_profile_seeds_and_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS_DIR", tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    table = pd.DataFrame({"kind": ["retinanet"], "AP mean": [21.5]})
    out = write_results("99_demo", get_profile("cpu"), [0, 1, 2], 12.5, tables={"table": table},
                        figures={"figure": fig}, notebook="99_demo.ipynb")
    assert out == tmp_path / "99_demo"
    md = (out / "table.md").read_text()
    assert md.startswith(f"Profile `cpu`, seeds [0, 1, 2], commit `{experiments.git_commit()}`.")
    assert "21.50" in md
    assert pd.read_csv(out / "table.csv").equals(table)
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "cpu" and manifest["seeds"] == [0, 1, 2] and manifest["wall_seconds"] == 12.5
    assert manifest["notebook"] == "99_demo.ipynb" and {"torch", "torchvision", "timm", "commit"} <= set(manifest)
    # smoke results never land next to committed ones
    smoke = write_results("99_demo", get_profile("smoke"), [0], 1.0, tables={"table": table})
    assert smoke == tmp_path / "_smoke" / "99_demo"


def test_experiment_rejects_unknown_choices_before_training():
    with pytest.raises(ValueError, match="unknown method 'glam'"):
        Experiment("retinanet", "glam")
    with pytest.raises(ValueError, match="unknown detector kind 'yolo'"):
        Experiment("yolo", "none")
    with pytest.raises(ValueError, match="unknown profile"):
        Experiment("retinanet", "none", profile="gpu")
    exp = Experiment("faster_rcnn", "glamd", "cpu", seed=2)
    assert exp.student_backbone == get_profile("cpu").student_backbone
    assert exp.teacher_backbone == get_profile("cpu").teacher_backbone
