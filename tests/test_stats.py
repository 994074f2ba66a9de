import math

import numpy as np
import pandas as pd
import pytest

from glamd_core.stats import effect_text, paired_differences, per_seed_trend


def _frame():
    rng = np.random.default_rng(0)
    rows = [{"row": r, "seed": s, "AP": float(rng.normal(20, 3))} for r in ("base", "a", "b") for s in (0, 1, 2, 3)]
    rows = [x for x in rows if not (x["row"] == "b" and x["seed"] == 3)]  # b lacks a seed
    rows.append({"row": "c", "seed": 9, "AP": 1.0})  # no seed in common with the baseline
    return pd.DataFrame(rows)


def test_paired_differences_match_a_loop_over_seeds():
    frame = _frame()
    out = paired_differences(frame, "base").set_index("row")
    assert list(out.index) == ["a", "b", "c"]
    for name in ("a", "b"):
        diffs = []
        for s in range(4):
            mine = frame[(frame.row == name) & (frame.seed == s)].AP
            base = frame[(frame.row == "base") & (frame.seed == s)].AP
            if len(mine) and len(base):
                diffs.append(mine.iloc[0] - base.iloc[0])
        mean = sum(diffs) / len(diffs)
        std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
        assert out.loc[name, "n"] == len(diffs)
        assert out.loc[name, "mean"] == pytest.approx(mean)
        assert out.loc[name, "std"] == pytest.approx(std)
        assert out.loc[name, "agree"] == sum((d > 0) == (mean > 0) for d in diffs)
        assert list(out.loc[name, "per_seed"].values()) == [round(d, 2) for d in diffs]
    assert out.loc["c", "n"] == 0 and math.isnan(out.loc["c", "mean"]) and out.loc["c", "agree"] == 0


def test_one_seed_has_no_spread_and_signs_are_counted():
    frame = pd.DataFrame({"row": ["x", "y", "x", "y", "x", "y"], "seed": [0, 0, 1, 1, 2, 2],
                          "AP": [10.0, 12.0, 10.0, 9.0, 10.0, 13.0]})
    y = paired_differences(frame, "x").iloc[0]
    assert y["mean"] == pytest.approx(4 / 3) and y["agree"] == 2 and y["n"] == 3
    one = paired_differences(frame[frame.seed == 0], "x").iloc[0]
    assert one["n"] == 1 and math.isnan(one["std"])
    assert effect_text(one["mean"], one["std"], one["n"], one["agree"]) == "+2.00 AP (1/1 seeds agree in sign)"
    assert effect_text(1.234, 0.5, 3, 2) == "+1.23 ± 0.50 AP (2/3 seeds agree in sign)"


def test_paired_differences_refuse_ambiguous_input():
    frame = _frame()
    with pytest.raises(ValueError, match="baseline row 'nope'"):
        paired_differences(frame, "nope")
    with pytest.raises(ValueError, match="more than one run"):
        paired_differences(pd.concat([frame, frame.iloc[:1]]), "base")
    with pytest.raises(KeyError, match="'seed'"):
        paired_differences(frame.drop(columns="seed"), "base")


def test_per_seed_trend_slope_and_rank_correlation():
    frame = pd.DataFrame({"seed": [0] * 4 + [1] * 4, "x": [1, 2, 3, 4] * 2,
                          "AP": [10.0, 8.0, 6.0, 4.0] + [1.0, 3.0, 2.0, 4.0]})
    t = per_seed_trend(frame, "x").set_index("seed")
    assert t.loc[0, "slope"] == pytest.approx(-2.0) and t.loc[0, "rank_correlation"] == pytest.approx(-1.0)
    assert t.loc[1, "rank_correlation"] == pytest.approx(0.8)  # ranks 1,3,2,4 against 1,2,3,4
    assert t.loc[1, "slope"] == pytest.approx(np.polyfit([1, 2, 3, 4], [1, 3, 2, 4], 1)[0])
    flat = per_seed_trend(frame.assign(AP=5.0), "x")
    assert flat.rank_correlation.isna().all() and flat.slope.abs().max() < 1e-9


def test_gap_shares_read_a_screen_against_each_sides_baseline():
    from glamd_core.stats import gap_shares

    frame = pd.DataFrame({"variant": ["A", "B", "A: no x", "B: with x", "A", "B"], "side": ["a", "b", "a", "b", "a", "b"],
                          "seed": [0, 0, 0, 0, 1, 1], "AP": [40.0, 32.0, 36.0, 34.0, 30.0, 30.0]})
    out = gap_shares(frame, 0, leader=("a", "A"), trailer=("b", "B")).set_index("variant")
    assert list(out.index) == ["A: no x", "B: with x"]
    assert out.loc["A: no x", "change"] == -4.0 and out.loc["A: no x", "gap share"] == pytest.approx(0.5)
    assert out.loc["B: with x", "change"] == 2.0 and out.loc["B: with x", "gap share"] == pytest.approx(0.25)
    assert (out.gap == 8.0).all()
    assert gap_shares(frame, 1, leader=("a", "A"), trailer=("b", "B")).empty  # no variants there


def test_tolerated_range_is_the_widest_safe_interval_around_the_default():
    from itertools import product

    from glamd_core.stats import tolerated_range

    m = [0.0, 0.25, 0.5, 2.0, 4.0]
    assert tolerated_range(m, [-4.35, -0.11, 0.81, -1.10, -3.40], 0.44) == (0.25, 1.0)
    assert tolerated_range(m, [-9.0, -1.9, -0.5, -1.4, -3.5], 0.44) == (1.0, 1.0)
    assert tolerated_range(m, [-0.5, -0.87, 0.03, 0.49, 0.51], 0.44) == (0.5, 4.0)
    assert tolerated_range([4.0, 0.5, 2.0], [0.0, 5.0, -0.1], 0.44) == (0.5, 4.0)  # order does not matter

    def slow(ms, ds, tol):  # every interval of points holding 1, the widest whose points are all safe
        pts = sorted(list(zip(ms, ds)) + [(1.0, 0.0)])
        best = None
        for i, j in product(range(len(pts)), repeat=2):
            inside = pts[i:j + 1]
            if i <= j and any(p == 1.0 for p, _ in inside) and all(d >= -tol for _, d in inside):
                if best is None or j - i > best[1] - best[0]:
                    best = (i, j)
        return pts[best[0]][0], pts[best[1]][0]

    rng = np.random.default_rng(0)
    for _ in range(200):
        ds = rng.normal(0, 1, len(m)).round(1).tolist()
        assert tolerated_range(m, ds, 0.5) == slow(m, ds, 0.5)


def test_sweep_sensitivity_reads_worst_points_safe_ranges_and_gains_per_parameter():
    from glamd_core.stats import sweep_sensitivity

    m = [0.0, 0.25, 0.5, 2.0, 4.0]
    points = pd.DataFrame({
        "parameter": ["alpha"] * 5 + ["beta"] * 5 + ["temperature"] * 2,
        "multiplier": m + m + [2.0, 20.0],
        "row": [f"alpha x{x:g}" for x in m] + [f"beta x{x:g}" for x in m] + ["temperature x2", "temperature x20"],
        "mean": [-4.35, -0.11, 0.81, -1.10, -3.40] + [-9.57, -1.88, np.nan, -1.45, -3.53] + [1.09, np.nan],
        "std": [0.07, 0.35, 0.20, 0.89, 0.27] + [1.57, 1.24, np.nan, 0.36, 0.22] + [0.09, np.nan]})
    bands = {"x0.5-2": (0.5, 2.0), "every point": (0.0, float("inf"))}
    out = sweep_sensitivity(points, 0.44, bands).set_index("parameter")
    assert list(out.index) == ["alpha", "beta", "temperature"]
    assert out.loc["alpha", "worst x0.5-2"] == "alpha x2" and out.loc["alpha", "worst x0.5-2 mean"] == -1.10
    assert out.loc["alpha", "worst every point"] == "alpha x0" and out.loc["alpha", "worst every point std"] == 0.07
    assert (out.loc["alpha", "safe from"], out.loc["alpha", "safe to"]) == (0.25, 1.0)
    assert out.loc["alpha", "better"] == [(0.5, 0.81)]
    # an unpaired point (NaN) is never the worst but ends the safe range
    assert out.loc["beta", "worst x0.5-2"] == "beta x2"
    assert (out.loc["beta", "safe from"], out.loc["beta", "safe to"]) == (1.0, 1.0)
    assert out.loc["beta", "better"] == []
    assert out.loc["temperature", "worst every point"] == "temperature x2"
    assert (out.loc["temperature", "safe from"], out.loc["temperature", "safe to"]) == (1.0, 2.0)
    # one default seed: no spread, so no safe range and nothing counts as better
    lone = sweep_sensitivity(points, float("nan"), bands).set_index("parameter")
    assert lone[["safe from", "safe to"]].isna().all().all() and (lone.better.map(len) == 0).all()
    assert lone.loc["alpha", "worst every point"] == "alpha x0"  # the worst points do not need a spread
    empty_band = sweep_sensitivity(points, 0.44, {"x8-16": (8.0, 16.0)}).set_index("parameter")
    assert empty_band["worst x8-16"].isna().all() and empty_band["worst x8-16 mean"].isna().all()
    with pytest.raises(KeyError, match="multiplier"):
        sweep_sensitivity(points.drop(columns="multiplier"), 0.44, bands)


def test_confirmed_shares_give_a_verdict_only_when_every_seed_agrees():
    from glamd_core.stats import confirmed_shares

    moves = pd.DataFrame({"variant": ["a", "a", "b", "b", "c", "c", "d", "e", "e"],
                          "seed": [0, 1, 0, 1, 0, 1, 0, 0, 1],
                          "gap share": [1.09, 1.05, -0.88, -0.94, 0.82, 0.40, 0.9, 0.6, -0.7]})
    out = confirmed_shares(moves, ["a", "b", "c", "d", "e"]).set_index("variant")
    assert list(out.verdict) == ["carries", "narrows", "", "", ""]  # c: one seed under 0.5; d: one seed only; e: mixed
    assert out.loc["a", "mean_share"] == pytest.approx(1.07) and out.loc["a", "per_seed"] == {0: 1.09, 1: 1.05}
    assert out.loc["d", "n"] == 1
    assert confirmed_shares(moves, ["c"], threshold=0.3).verdict.tolist() == ["carries"]
    assert confirmed_shares(moves, ["missing"]).n.tolist() == [0]


# --- confidence intervals, Holm, verdicts (issue #29) ---------------------------------------------

from itertools import combinations

from scipy import stats as scipy_stats

from glamd_core.stats import ci_text, claim_verdicts, holm, paired_ci, paired_p, row_ci_text, verdict


def test_paired_ci_and_p_against_hand_computed_numbers_and_scipy():
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3); t(0.975, 2) = 4.302653 -> half-width 2.484138
    mean, lo, hi = paired_ci([1.0, 2.0, 3.0])
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 2.484138, 2.0 + 2.484138), abs=1e-6)
    assert paired_p([1.0, 2.0, 3.0]) == pytest.approx(0.074180, abs=1e-6)  # t = 3.4641, 2 df
    # Table 1's Faster R-CNN row as the referee read it: +2.31 / +5.70 / -1.84 is +2.06 with a CI over zero
    mean, lo, hi = paired_ci([2.31, 5.70, -1.84])
    assert mean == pytest.approx(2.0567, abs=1e-4) and lo < 0 < hi
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 8):
        d = rng.normal(0.5, 2.0, n)
        ref = scipy_stats.ttest_1samp(d, 0.0)
        lo_ref, hi_ref = ref.confidence_interval(0.95)
        assert paired_ci(d)[1:] == pytest.approx((lo_ref, hi_ref))
        assert paired_p(d) == pytest.approx(ref.pvalue)
        assert paired_p(d, against=-1.0) == pytest.approx(scipy_stats.ttest_1samp(d, -1.0).pvalue)
    assert np.isnan(paired_ci([1.5])[1]) and np.isnan(paired_p([1.5]))
    assert np.isnan(paired_p([1.0, 1.0, 1.0])) and np.isnan(paired_p([0.0, 0.0]))  # no spread: no test
    assert ci_text(2.0567, -6.34, 10.45, 3) == "+2.06 AP [-6.34, +10.45], n = 3"
    assert ci_text(1.0, float("nan"), float("nan"), 1) == "+1.00 AP, n = 1"


def test_row_ci_text_reads_every_row_kind():
    """A Series, a dict and an itertuples row of one summary give the same text as ci_text."""
    frame = pd.DataFrame({"row": ["a"], "mean": [2.0567], "ci_low": [-6.34], "ci_high": [10.45], "n": [3]})
    expected = ci_text(2.0567, -6.34, 10.45, 3, "AP50")
    assert row_ci_text(frame.iloc[0], "AP50") == expected
    assert row_ci_text(frame.iloc[0].to_dict(), "AP50") == expected
    assert row_ci_text(next(frame.itertuples()), "AP50") == expected
    with pytest.raises(KeyError):
        row_ci_text({"mean": 1.0, "n": 1})


def _holm_brute_force(p, alpha):
    """Holm's step-down procedure as written: walk the sorted p values, reject while p_(i) <= alpha /
    (m - i), stop at the first that fails."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for step, i in enumerate(order):
        if p[i] > alpha / (len(p) - step):
            break
        rejected.add(i)
    return rejected


def test_holm_matches_the_step_down_procedure():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, rng.integers(1, 7)))
        adjusted = holm(p)
        for alpha in (0.01, 0.03, 0.05, 0.08):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == _holm_brute_force(p, alpha)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3 x 0.01; 2 x 0.03; max(0.06, 0.04)
    assert holm([0.5, float("nan")])[0] == 0.5 and np.isnan(holm([0.5, float("nan")])[1])  # NaN: not a test
    with pytest.raises(ValueError, match="p values"):
        holm([1.5])


def test_verdicts_held_reversed_inconclusive():
    assert verdict(+2.0, 0.01, +1) == "held"
    assert verdict(-2.0, 0.01, +1) == "reversed"
    assert verdict(+2.0, 0.20, +1) == "inconclusive"
    assert verdict(-2.0, 0.01, -1) == "held"
    assert verdict(+2.0, float("nan"), +1) == "inconclusive"  # one seed: no interval, no verdict
    with pytest.raises(ValueError, match="direction"):
        verdict(1.0, 0.01, 0)
    # a family: held, reversed and inconclusive rows, and a tolerance claim ("drops less than 0.5")
    rows = {"held": [3.0, 3.2, 2.9, 3.1, 3.0], "reversed": [-2.0, -2.2, -1.9, -2.1, -2.0],
            "inconclusive": [2.31, 5.70, -1.84], "tolerated": [-0.1, 0.05, -0.05, 0.0, -0.02]}
    frame = pd.DataFrame([{"row": "base", "seed": s, "AP": 10.0} for s in range(5)] +
                         [{"row": r, "seed": s, "AP": 10.0 + d} for r, ds in rows.items() for s, d in enumerate(ds)])
    paired = paired_differences(frame, "base")
    out = claim_verdicts(paired, {"held": 1, "reversed": 1, "inconclusive": 1, "tolerated": 1},
                         against={"tolerated": -0.5}).set_index("row")
    assert out.verdict.to_dict() == {"held": "held", "reversed": "reversed", "inconclusive": "inconclusive",
                                     "tolerated": "held"}
    assert (out.p_holm >= out.p).all()
    assert out.loc["inconclusive", "ci_low"] < 0 < out.loc["inconclusive", "ci_high"]
    # Holm can turn a lone "held" into "inconclusive" once the family grows
    lone = claim_verdicts(paired_differences(frame[frame.row.isin(["base", "tolerated"])], "base"), 1,
                          against=-0.5).iloc[0]
    assert lone.p_holm == pytest.approx(lone.p)


def test_paired_by_is_paired_differences_within_each_group():
    import pandas as pd

    from glamd_core.stats import paired_by, paired_differences

    frame = pd.DataFrame([{"kind": k, "row": r, "seed": s, "AP": ap}
                          for k, base in (("b", 10.0), ("a", 20.0)) for s in range(3)
                          for r, ap in (("student", base + s), ("GLAMD", base + 2 * s + 1))])
    got = paired_by(frame, "kind", "student")
    assert list(got.kind) == ["b", "a"]  # groups in order of first appearance
    for kind in ("a", "b"):
        alone = paired_differences(frame[frame.kind == kind], "student").iloc[0]
        row = got[got.kind == kind].iloc[0]
        assert row["mean"] == alone["mean"] and row["ci_low"] == alone["ci_low"] and row["per_seed"] == alone["per_seed"]
