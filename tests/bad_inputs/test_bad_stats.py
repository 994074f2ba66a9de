"""The functions that state the project's findings refuse input that would make them state a wrong
one (issue #28's probe: every case here returned a silent wrong result before)."""

import math

import numpy as np
import pandas as pd
import pytest

from glamd_core.stats import (confirmed_shares, gap_shares, paired_ci, paired_differences, per_seed_trend,
                              tolerated_range)


def _screen(seeds=(0, 1), gaps=(10.0, 10.0)):
    rows = []
    for s, gap in zip(seeds, gaps):
        rows += [{"variant": "lead", "side": "a", "seed": s, "AP": 20.0 + gap},
                 {"variant": "trail", "side": "b", "seed": s, "AP": 20.0},
                 {"variant": "a minus x", "side": "a", "seed": s, "AP": 20.0 + gap - 8.0}]
    return pd.DataFrame(rows)


def _moves(frame, seeds):
    return pd.concat([gap_shares(frame, s, leader=("a", "lead"), trailer=("b", "trail")) for s in seeds])


def test_a_seed_listed_twice_cannot_confirm_itself():
    moves = _moves(_screen(seeds=(0,), gaps=(10.0,)), [0])
    with pytest.raises(ValueError, match="a seed cannot confirm itself"):
        confirmed_shares(pd.concat([moves, moves]), ["a minus x"])


def test_a_lead_that_changes_sign_gets_no_verdict():
    frame = _screen(gaps=(10.0, -3.0))
    moves = _moves(frame, [0, 1])
    assert moves[moves.seed == 1]["gap share"].isna().all() and (moves[moves.seed == 1]["gap"] == -3.0).all()
    read = confirmed_shares(moves, ["a minus x"]).iloc[0]
    assert read.verdict == "" and "changes sign" in read.note
    ok = confirmed_shares(_moves(_screen(), [0, 1]), ["a minus x"]).iloc[0]
    assert ok.verdict == "carries" and ok.note == ""


def test_a_leader_behind_gives_no_share():
    moves = gap_shares(_screen(seeds=(0,), gaps=(-1.0,)), 0, leader=("a", "lead"), trailer=("b", "trail"))
    assert moves["gap share"].isna().all() and (moves["gap"] == -1.0).all()  # not a share of -10, and the gap says why


def test_a_duplicated_baseline_row_is_an_error():
    frame = _screen(seeds=(0,), gaps=(10.0,))
    with pytest.raises(ValueError, match="more than one run per"):
        gap_shares(pd.concat([frame, frame.iloc[:1].assign(AP=5.0)]), 0, leader=("a", "lead"), trailer=("b", "trail"))
    with pytest.raises(ValueError, match="baseline row 'nope'"):
        gap_shares(frame, 0, leader=("a", "nope"), trailer=("b", "trail"))


def test_per_seed_trend_refuses_a_duplicated_point():
    frame = pd.DataFrame({"x": [1, 2, 3, 3], "seed": [0, 0, 0, 0], "AP": [3.0, 2.0, 1.0, 5.0]})
    with pytest.raises(ValueError, match=r"more than one point per \(x, seed\)"):
        per_seed_trend(frame, "x")
    assert per_seed_trend(frame.iloc[:3], "x").iloc[0][["slope", "rank_correlation"]].tolist() == pytest.approx([-1.0, -1.0])


def test_tolerated_range_refuses_unequal_lengths_and_nan_multipliers():
    with pytest.raises(ValueError, match="3 multipliers for 2 differences"):
        tolerated_range([0.5, 2.0, 4.0], [0.1, -0.2], 0.5)
    with pytest.raises(ValueError, match="multipliers must be finite"):
        tolerated_range([0.5, float("nan"), 2.0], [0.1, -0.2, 0.0], 0.5)


def test_paired_differences_refuse_seeds_of_mixed_types_and_non_finite_values():
    frame = pd.DataFrame({"row": ["a", "b"], "seed": ["0", 0], "AP": [1.0, 2.0]})
    with pytest.raises(ValueError, match="mixes types"):
        paired_differences(frame, "a")
    inf = pd.DataFrame({"row": ["a", "b"], "seed": [0, 0], "AP": [1.0, np.inf]})
    with pytest.raises(ValueError, match="finite"):
        paired_differences(inf, "a")
    with pytest.raises(ValueError, match="finite"):
        paired_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        paired_ci([1.0, 2.0], confidence=95)
