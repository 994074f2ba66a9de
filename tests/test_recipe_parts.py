"""The mask-against-mask reading (notebooks/09) on hand-made runs whose answer is known."""

import pandas as pd
import pytest

from glamd_core import recipe_parts as R


def _frame(values: dict[str, list[float]], kind="retinanet") -> pd.DataFrame:
    return pd.DataFrame([{"kind": kind, "row": row, "seed": s, "AP": ap}
                         for row, aps in values.items() for s, ap in enumerate(aps)])


# DeFeat leads by ~5 AP; GLAMD's feature term alone trails DeFeat by ~7 (the part that carries the gap);
# its head terms add ~2; the box mask beats attention inside both recipes.
RETINA = {"GLAMD": [30.0, 31.0, 32.5], "DeFeat": [35.0, 36.5, 37.0], "GLAMD, feature term only": [28.0, 29.2, 30.1],
          "GLAMD, box mask": [33.0, 34.1, 35.6], "DeFeat, GLAM foreground": [31.0, 32.9, 33.0],
          R.HYBRID: [36.0, 36.6, 38.1], "GLAMD, patch 2": [30.2, 30.8, 32.9]}


def test_each_comparison_is_paired_and_holm_corrected_within_a_kind():
    claims = R.compare(_frame(RETINA)).set_index("claim")
    assert len(claims) == len(R.COMPARISONS)
    gap = claims.loc[R.TABLE3]
    assert gap["mean"] == pytest.approx(((30 - 35) + (31 - 36.5) + (32.5 - 37)) / 3)
    assert gap["verdict"] == "reversed" and gap["p_holm"] >= gap["p"]
    assert claims.loc[R.PARTS["GLAMD's head terms"], "verdict"] == "held"
    assert claims.loc[R.PARTS["the feature term (mask and adapter)"], "verdict"] == "reversed"
    assert claims.loc["patch 2 beats patch 7 in GLAMD", "verdict"] == "inconclusive"
    # the gap is the sum of its two parts, seed by seed
    parts = sum(claims.loc[c, "mean"] for c in R.PARTS.values())
    assert parts == pytest.approx(gap["mean"])


def test_the_reading_names_the_part_that_carries_the_gap_and_the_masks_verdict():
    text = "\n".join(R.reading(R.compare(_frame(RETINA))))
    assert "Carried (95 % CI on DeFeat's side of zero) by: the feature term (mask and adapter)." in text
    assert "labels beat teacher attention" in text
    attention_wins = dict(RETINA, **{"GLAMD, box mask": [27.0, 28.1, 29.4], "DeFeat, GLAM foreground": [37.0, 38.9, 39.2]})
    assert "GLAM beats the labels" in "\n".join(R.reading(R.compare(_frame(attention_wins))))
    noisy = dict(RETINA, **{"GLAMD, feature term only": [20.0, 35.0, 30.1]})  # the feature part's CI spans zero
    assert "by: no part detectably" in "\n".join(R.reading(R.compare(_frame(noisy))))


def test_a_kind_with_fewer_rows_gets_only_its_comparisons_and_kinds_are_separate_families():
    cascade = {k: RETINA[k] for k in ("GLAMD", "DeFeat", "GLAMD, feature term only", R.HYBRID)}
    both = pd.concat([_frame(RETINA), _frame({k: v[:2] for k, v in cascade.items()}, "cascade_rcnn")])
    claims = R.compare(both)
    assert set(claims[claims.kind == "cascade_rcnn"].claim) == {
        R.TABLE3, *R.PARTS.values(), "GLAMD's head terms add to DeFeat's feature term", "the hybrid beats GLAMD"}
    alone = R.compare(_frame(RETINA)).set_index("claim")
    assert (claims[claims.kind == "retinanet"].set_index("claim").p_holm == alone.p_holm).all()  # own family
    assert (claims[claims.kind == "cascade_rcnn"].n == 2).all()


def test_bad_frames_are_named():
    with pytest.raises(ValueError, match="no comparison"):
        R.compare(_frame({"GLAMD": [1.0, 2.0], "student": [0.5, 0.7]}))
    twice = pd.concat([_frame(RETINA), _frame({"GLAMD": [30.0]})])
    with pytest.raises(ValueError, match="more than one run"):
        R.compare(twice)
