"""The teacher-student gap reading (notebooks/10) on hand-made runs, and its plan."""

import pandas as pd
import pytest

from glamd_core import gap, plans
from glamd_core.experiments import run_dir


def _runs(kind, point, rows: dict[str, list[float]]) -> list[dict]:
    return [{"kind": kind, "point": point, "row": row, "seed": s, "AP": ap} for row, aps in rows.items()
            for s, ap in enumerate(aps)]


# far behind: DeFeat leads by ~7; near the paper's gap (teacher 70, student ~66): GLAMD leads by ~1
FAR = {"student alone": [28.0, 30.0, 29.0], "DeFeat": [45.0, 46.5, 45.8], "GLAMD": [38.0, 39.9, 38.6]}
NEAR = {"student alone": [66.0, 66.4, 65.8], "DeFeat": [66.5, 67.0, 66.1], "GLAMD": [67.6, 67.9, 67.3]}
FRAME = pd.DataFrame(_runs("faster_rcnn", "regnetx_002", FAR) + _runs("faster_rcnn", "resnet10t", NEAR)
                     + _runs("faster_rcnn", "resnet18", {k: v[:1] for k, v in NEAR.items()}))


def test_gaps_and_paired_gains_per_point():
    table = gap.gains(FRAME, {"faster_rcnn": 70.0})
    far = table[(table.point == "regnetx_002")].set_index("effect")
    assert far.gap.iloc[0] == pytest.approx(70 - 29.0)
    assert far.loc["gain of DeFeat", "mean"] == pytest.approx((17 + 16.5 + 16.8) / 3)
    assert far.loc["GLAMD - DeFeat", "mean"] == pytest.approx((-7 - 6.6 - 7.2) / 3)
    assert far.loc["GLAMD - DeFeat", "ci_high"] < 0
    assert list(dict.fromkeys(table.point)) == ["regnetx_002", "resnet18", "resnet10t"]  # largest gap first


def test_every_point_is_summarised_on_both_scales_and_read_without_a_verdict():
    from glamd_core import readings

    table = gap.gains(FRAME, {"faster_rcnn": 70.0})
    table50 = gap.gains(FRAME.assign(AP=FRAME.AP + 20), {"faster_rcnn": 95.0})  # mAP50: 20 higher, teacher 95
    points = gap.point_summary(table, table50).set_index("point")
    assert points.loc["resnet10t", "gap_AP"] == pytest.approx(70 - 66.0666, abs=1e-3)
    assert points.loc["resnet10t", "gap_mAP50"] == pytest.approx(95 - 86.0666, abs=1e-3)
    assert points.loc["resnet10t", "mean"] == pytest.approx(1.0666, abs=1e-3) and points.loc["resnet18", "n"] == 1
    lines = "\n".join(readings.gap_lines(pd.DataFrame(columns=["family"]), points.reset_index().assign(kind="faster_rcnn")))
    assert "resnet10t: gap 3.9 AP / 8.9 VOC07 mAP50, GLAMD - DeFeat +1.07 AP [+0.69, +1.45], n = 3" in lines
    assert "does not say which metric" in lines and "held" not in lines
    assert "RetinaNet: the paper" not in lines  # no RetinaNet rows, no RetinaNet comparison
    # RetinaNet: the paper's gap 79.63 - 75.57 = 4.06 (mAP50) against ours; the nearest point is named
    retina = points.reset_index().assign(kind="retinanet")
    lines = "\n".join(readings.gap_lines(pd.DataFrame(columns=["family"]), retina))
    gaps50 = dict(zip(retina.point, retina.gap_mAP50))
    nearest = min(gaps50, key=lambda p: abs(gaps50[p] - 4.06))
    assert f"gap 4.06 (reference)" in lines
    assert f"(nearest: {nearest}, {gaps50[nearest] - 4.06:+.1f} from the paper's)" in lines


def test_a_point_without_its_student_alone_or_a_kind_without_a_teacher_is_named():
    with pytest.raises(ValueError, match="no 'student alone' row"):
        gap.gains(FRAME[FRAME.row != "student alone"], {"faster_rcnn": 70.0})
    with pytest.raises(ValueError, match="no teacher AP for 'faster_rcnn'"):
        gap.gains(FRAME, {"retinanet": 50.0})


def test_the_plan_spans_the_gap_with_warm_starts_from_each_seeds_own_student(tmp_path):
    rows = plans.teacher_student_gap_experiments("cpu", [0, 1, 2], claim_seeds=[0, 1, 2])
    by = {(e.kind, p, r, e.seed): e for p, r, e in rows}
    warm = by[("faster_rcnn", "regnetx_002, warm start", "GLAMD", 1)]
    assert warm.init_from == by[("faster_rcnn", "regnetx_002", "student alone", 1)]  # its own seed's 12-epoch run
    assert by[("faster_rcnn", "regnetx_002, warm start", "student alone", 2)].init_from.seed == 2
    table3 = {run_dir(e, runs_dir=tmp_path) for e in plans.defeat_comparison_experiments("cpu", [0, 1, 2], claim_seeds=[0, 1, 2])}
    assert {run_dir(by[("faster_rcnn", "regnetx_002", r, s)], runs_dir=tmp_path)
            for r in ("student alone", "DeFeat", "GLAMD") for s in (0, 1, 2)} <= table3  # Table 3's runs
    assert {s for (k, p, _, s) in by if p == "resnet18"} == {0}
    assert {(k, p) for (k, p, _, _) in by if k == "retinanet"} == {("retinanet", "teacher"), ("retinanet", "resnet10t")}
    assert ("faster_rcnn", "resnet10t", "global mask", 2) in by
    assert all(e.distill is None for _, _, e in rows)  # the profile's chosen settings, not re-tuned
    fixed = plans.teacher_student_gap_experiments("cpu", [0, 1, 2])  # the profile's claim seeds at the key point
    key = {(e.kind, e.seed) for p, r, e in fixed if p == "resnet10t" and r == "GLAMD"}
    assert key == {(k, s) for k in ("faster_rcnn", "retinanet") for s in range(5)}
    with pytest.raises(ValueError, match="not \\['cascade_rcnn'\\]"):
        plans.teacher_student_gap_experiments("cpu", [0], kinds=("cascade_rcnn",))
