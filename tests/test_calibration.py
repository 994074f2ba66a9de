"""The calibration's bookkeeping: an equal grid per method, choice on val only, the profile's
chosen settings reaching every way a run is asked for."""

from dataclasses import replace

import pandas as pd
import pytest

from glamd_core import calibration as C
from glamd_core.__main__ import main as cli
from glamd_core.distill import DistillConfig
from glamd_core.experiments import Experiment
from glamd_core.profiles import get_profile


def test_every_method_gets_the_same_grid():
    exps = C.grid_experiments(["retinanet", "faster_rcnn"], "smoke")
    points = {}
    for e in exps:
        points.setdefault((e.kind, e.method), []).append((e.distill.loss_form, e.distill.alpha, e.distill.beta,
                                                          e.distill.gamma))
    assert set(points) == {(k, m) for k in ("retinanet", "faster_rcnn") for m in C.COMPARED_METHODS}
    assert len({tuple(v) for v in points.values()}) == 1  # identical lists
    assert len(next(iter(points.values()))) == len(C.GRID) == len(set(C.GRID))
    assert all(e.distill_config().method == e.method for e in exps)
    with pytest.raises(ValueError, match="no val split"):  # real VOC / COCO: nothing to choose on
        C.grid_experiments(["retinanet"], "paper_coco")


def _grid_frame(split="val"):
    rows = []
    for kind in ("retinanet", "faster_rcnn"):
        for method, aps in (("glamd", [10, 30, 30, 5]), ("defeat", [1, 2, 3, 4])):
            for (form, alpha), ap in zip(C.GRID, aps):
                rows.append(dict(kind=kind, method=method, split=split, loss_form=form, alpha=alpha,
                                 AP=ap + (kind == "faster_rcnn")))
    return pd.DataFrame(rows)


def test_choice_is_the_best_val_point_and_refuses_test():
    chosen = C.choose(_grid_frame())
    got = {(r.kind, r.method): (r.loss_form, r.alpha, r["val AP"]) for _, r in chosen.iterrows()}
    assert got[("retinanet", "glamd")] == ("reference", 3.0, 30)  # the earlier of two equal points
    assert got[("faster_rcnn", "glamd")] == ("reference", 3.0, 31)
    assert got[("retinanet", "defeat")] == ("normalised", 1.0, 4)
    with pytest.raises(ValueError, match="val split only"):
        C.choose(_grid_frame("test"))


def test_diagnostics_sit_at_glamds_chosen_point():
    chosen = C.choose(_grid_frame())
    feat_only, = C.diagnostic_experiments(chosen, ["retinanet"], "smoke")
    assert (feat_only.distill.loss_form, feat_only.distill.alpha) == ("reference", 3.0)
    assert (feat_only.method, feat_only.distill.beta, feat_only.distill.gamma) == ("glamd", 0.0, 0.0)
    final = C.chosen_experiments(chosen, ["retinanet"], "smoke", seeds=(0, 1), methods=("glamd", "defeat"))
    assert sorted((e.method, e.seed) for e in final) == sorted((m, s) for m in ("none", "glamd", "defeat")
                                                                for s in (0, 1))
    assert {(e.distill.loss_form, e.distill.alpha) for e in final if e.method == "defeat"} == {("normalised", 1.0)}


def test_profile_settings_reach_experiments_and_the_cli(monkeypatch):
    from glamd_core import experiments, profiles

    smoke = get_profile("smoke")
    chosen = {("retinanet", "glamd"): {"loss_form": "reference", "alpha": 3.0},
              ("retinanet", "defeat"): {"alpha": 0.3}}
    monkeypatch.setitem(profiles.PROFILES, "smoke", replace(smoke, distill_settings=chosen))
    assert Experiment("retinanet", "glamd", "smoke").distill_config() == DistillConfig("glamd", loss_form="reference",
                                                                                      alpha=3.0)
    # GLAMD's mask ablations take its settings; other kinds and methods without an entry, the defaults
    assert Experiment("retinanet", "uniform", "smoke").distill_config() == DistillConfig("uniform", loss_form="reference",
                                                                                        alpha=3.0)
    assert Experiment("faster_rcnn", "glamd", "smoke").distill_config() == DistillConfig("glamd")
    assert Experiment("retinanet", "global", "smoke").distill_config() == DistillConfig("global")
    explicit = Experiment("retinanet", "glamd", "smoke", distill=DistillConfig(alpha=0.5))
    assert explicit.distill_config() == DistillConfig("glamd", alpha=0.5)  # given settings win whole

    seen = []
    monkeypatch.setattr(experiments, "run", lambda exp, data_root=None: seen.append(exp) or {})
    cli(["run", "--profile", "smoke", "--method", "glamd", "--patch-size", "3"])
    cli(["run", "--profile", "smoke", "--method", "defeat", "--alpha", "2"])
    assert seen[0].distill_config() == DistillConfig("glamd", loss_form="reference", alpha=3.0, patch_size=3)
    assert seen[1].distill_config() == DistillConfig("defeat", alpha=2.0)


def test_gradient_balance_reads_each_runs_log(tmp_path):
    (tmp_path / "a").mkdir()
    pd.DataFrame({"epoch": [0, 1], "grad_norm_detection": [2.0, 4.0], "grad_norm_distill_feat": [1.0, 1.0],
                  "grad_norm_distill_cls": [4.0, 2.0]}).to_csv(tmp_path / "a" / "metrics.csv", index=False)
    (tmp_path / "b").mkdir()  # a run logged without probes is skipped
    pd.DataFrame({"epoch": [0], "loss": [1.0]}).to_csv(tmp_path / "b" / "metrics.csv", index=False)
    frame = pd.DataFrame({"run": ["a", "b"], "kind": "retinanet", "method": "glamd", "setting": "x"})
    got = C.gradient_balance(frame, tmp_path).set_index(["epoch", "term"]).ratio.to_dict()
    assert got == {(0, "feat"): 0.5, (1, "feat"): 0.25, (0, "cls"): 2.0, (1, "cls"): 0.5}


def test_the_second_stage_tells_the_diagnostic_from_the_chosen_runs_and_counts_each_run_once():
    from glamd_core import plans

    chosen = pd.DataFrame([{"kind": "retinanet", "method": m, "loss_form": "reference", "alpha": 1.0}
                           for m in C.COMPARED_METHODS])
    second = plans.calibration_chosen_experiments("smoke", [0, 1], ["retinanet"], chosen)
    assert [C._feature_term_alone(e) for e in second] == [False] * (len(second) - 1) + [True]
    a = pd.DataFrame({"run": ["x", "y"], "train_minutes": [1.0, 2.0]})
    assert C.train_minutes(a, a.iloc[:1]) == 3.0
