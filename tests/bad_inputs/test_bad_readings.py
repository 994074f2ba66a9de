"""Issue #37: the code that states the findings refuses what it cannot judge -- stats, claims,
verdicts, gap, analysis -- naming the value, claim or file; and issue #35's edges."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from glamd_core import claims as C
from glamd_core import stats
from glamd_core.profiles import get_profile

NAN = float("nan")


# -- stats: values outside their domain are named --------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: stats.verdict(NAN, 0.01, +1), "mean"),
    (lambda: stats.verdict(1.0, 0.01, +1, against=NAN), "against"),
    (lambda: stats.verdict(1.0, 1.5, +1), "p_adjusted"),
    (lambda: stats.verdict(1.0, -0.1, +1), "p_adjusted"),
    (lambda: stats.verdict(1.0, 0.01, +1, alpha=0.0), "alpha"),
    (lambda: stats.verdict(1.0, 0.01, +1, alpha=1.2), "alpha"),
    (lambda: stats.verdict(1.0, 0.01, 0), "direction"),
    (lambda: stats.paired_p([1.0, 2.0], against=NAN), "against"),
    (lambda: stats.holm([0.1, float("inf")]), r"\[0, 1\]"),
    (lambda: stats.holm([0.1, 0.2], m=1), "m"),
    (lambda: stats.holm(["a"]), "numbers"),
    (lambda: stats.check_alpha("0.05"), "alpha"),
])
def test_a_value_outside_its_domain_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_nan_mean_is_never_reversed():
    """Before: a NaN mean could come out 'reversed'."""
    with pytest.raises(ValueError, match="mean"):
        stats.verdict(NAN, 0.001, -1)


def test_identical_differences_give_no_test_not_p_zero():
    """Before: paired_p gave p = 0 for identical differences, so two seeds could be 'held'."""
    assert np.isnan(stats.paired_p([1.5, 1.5]))
    paired = stats.paired_differences(pd.DataFrame({"row": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                                                    "AP": [2.0, 3.0, 3.5, 4.5]}), "a")
    out = stats.claim_verdicts(paired, +1)
    assert out.verdict.iloc[0] == "inconclusive" and np.isnan(out.p_holm.iloc[0])


def test_claim_verdicts_names_a_missing_or_doubled_claim():
    paired = stats.paired_differences(pd.DataFrame({"row": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                                                    "AP": [2.0, 3.0, 3.5, 4.9]}), "a")
    with pytest.raises(ValueError, match=r"\['c'\] named in direction have no row"):
        stats.claim_verdicts(paired, {"b": +1, "c": +1})
    with pytest.raises(ValueError, match="given twice"):
        stats.claim_verdicts(pd.concat([paired, paired]), +1)
    with pytest.raises(ValueError, match="edge of claim 'b'"):
        stats.claim_verdicts(paired, +1, against={"b": NAN})


def test_sweep_sensitivity_takes_any_index_and_names_a_point_given_twice():
    """Before: a duplicated index gave TypeError: float() argument must be ... not 'Series'."""
    points = pd.DataFrame({"parameter": ["alpha", "alpha"], "multiplier": [0.5, 2.0], "row": ["alpha x0.5", "alpha x2"],
                           "mean": [-0.3, -0.1], "std": [0.2, 0.2]}, index=[7, 7])
    out = stats.sweep_sensitivity(points, 0.5, {"x0.5-2": (0.5, 2.0)}).set_index("parameter")
    assert out.loc["alpha", "worst x0.5-2"] == "alpha x0.5"
    with pytest.raises(ValueError, match="given twice"):
        stats.sweep_sensitivity(pd.concat([points, points]), 0.5, {"x0.5-2": (0.5, 2.0)})


def test_gap_shares_read_no_share_of_a_lead_below_min_gap():
    """Before: a 0.1-AP lead turned a 0.5-AP change into a share of 5."""
    frame = pd.DataFrame({"variant": ["DeFeat (chosen)", "GLAMD (chosen)", "x"], "side": ["defeat", "glamd", "defeat"],
                          "seed": [0, 0, 0], "AP": [30.1, 30.0, 29.6]})
    out = stats.gap_shares(frame, 0, ("defeat", "DeFeat (chosen)"), ("glamd", "GLAMD (chosen)"))
    assert out["gap share"].isna().all() and out["gap"].iloc[0] == pytest.approx(0.1)
    wide = frame.assign(AP=[33.0, 30.0, 31.5])
    assert stats.gap_shares(wide, 0, ("defeat", "DeFeat (chosen)"), ("glamd", "GLAMD (chosen)"))["gap share"].iloc[0] \
        == pytest.approx(0.5)
    with pytest.raises(ValueError, match="min_gap"):
        stats.gap_shares(frame, 0, ("defeat", "DeFeat (chosen)"), ("glamd", "GLAMD (chosen)"), min_gap=NAN)


# -- claims and verdicts: families keep their shape ------------------------------------------------
def _t3(n_faster):
    rows = []
    for kind, g, n in (("faster_rcnn", 2.0, n_faster), ("retinanet", -3.0, 5), ("cascade_rcnn", 0.1, 5)):
        for s in range(n):
            base = 30.0 + s
            rows += [{"kind": kind, "part": "table 3", "row": "DeFeat", "seed": s, "split": "test", "AP": base},
                     {"kind": kind, "part": "table 3", "row": "GLAMD", "seed": s, "split": "test",
                      "AP": base + g + 0.1 * (s % 2) * (1 if kind != "cascade_rcnn" else 10)}]
    return pd.DataFrame(rows)


def test_a_claim_losing_seeds_says_so_and_keeps_its_familys_m():
    """Before: cutting 04 to one seed shrank the README's family from 11 to 8 and flipped another claim."""
    cpu = get_profile("cpu")
    judged = C.judge("Table 3", {"runs": _t3(1)}, cpu).set_index("claim")
    assert (judged.m == 3).all()
    assert "n = 1 of 5 planned" in judged.loc["GLAMD > DeFeat, faster_rcnn", "note"]
    full = C.judge("Table 3", {"runs": _t3(5)}, cpu).set_index("claim")
    other = "GLAMD > DeFeat, retinanet"
    assert judged.loc[other, "p_holm"] >= full.loc[other, "p_holm"]  # never loosened by a neighbour's loss


def test_verdicts_names_a_garbage_table_or_manifest(tmp_path):
    from glamd_core import verdicts

    folder = tmp_path / "04_defeat_comparison"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"kernels": {"canonical": True}}))
    (folder / "runs.csv").write_bytes(b"\x00\xff garbage \x01")
    with pytest.raises(ValueError, match="runs.csv"):
        verdicts.verdict_table(tmp_path)
    _t3(5).assign(AP=np.nan).to_csv(folder / "runs.csv", index=False)
    with pytest.raises(ValueError, match="GLAMD > DeFeat, faster_rcnn.*not a finite number"):
        verdicts.verdict_table(tmp_path)
    pd.concat([_t3(5), _t3(1)]).to_csv(folder / "runs.csv", index=False)
    with pytest.raises(ValueError, match="more than one value per"):
        verdicts.verdict_table(tmp_path)
    (folder / "manifest.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="manifest.json: not JSON"):
        verdicts.verdict_table(tmp_path)


def test_judge_names_an_unknown_family_and_a_bad_alpha():
    with pytest.raises(ValueError, match="unknown family 'Table 5'"):
        C.judge("Table 5", {})
    with pytest.raises(ValueError, match="alpha"):
        C.judge("Table 3", {"runs": _t3(5)}, alpha=2.0)


# -- analysis ---------------------------------------------------------------------------------------
def test_error_losses_names_a_duplicated_run():
    """Before: aggfunc='first' hid a run given twice."""
    from glamd_core.analysis import error_losses
    from glamd_core.evaluation import BANDS

    one = [{"kind": "retinanet", "model": "student", "seed": 0, "band": b, "AP": 10.0 * i} for i, b in enumerate(BANDS)]
    with pytest.raises(ValueError, match="band given twice"):
        error_losses(pd.DataFrame(one + one[:1]))


# -- notebook 10's parameters -----------------------------------------------------------------------
def test_notebook_10s_kinds_and_backbones_are_checked():
    from glamd_core.parameters import ParameterError, check_parameters

    with pytest.raises(ParameterError, match=r"gap_kinds\[0\]"):
        check_parameters(gap_kinds=["cascade_rcnn"])
    with pytest.raises(ParameterError, match=r"gap_backbones\[1\].*resnet99"):
        check_parameters(gap_backbones=["resnet10t", "resnet99"])
    assert check_parameters(gap_kinds=["retinanet"], gap_backbones=None)["gap_kinds"] == ["retinanet"]


def test_every_notebook_is_stored_with_cell_ids():
    """Before: nbformat warned MissingIDFieldWarning ("will become a hard error")."""
    import warnings
    from pathlib import Path

    import nbformat

    for path in sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb")):
        raw = json.loads(path.read_text())
        assert all("id" in c for c in raw["cells"]), path.name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            nbformat.validate(nbformat.read(path, as_version=4))
