"""Mask against mask (notebooks/09): the comparisons, and how Table 3's gap splits into them."""

import pandas as pd
import pytest

from glamd_core import claims as C
from glamd_core import recipe_parts as R


def _frame(values: dict[str, list[float]], kind="retinanet") -> pd.DataFrame:
    return pd.DataFrame([{"kind": kind, "row": row, "seed": s, "AP": ap}
                         for row, aps in values.items() for s, ap in enumerate(aps)])


RETINA = {"GLAMD": [30.0, 31.0, 32.5], "DeFeat": [35.0, 36.5, 37.0], "GLAMD, feature term only": [28.0, 29.2, 30.1],
          "GLAMD, box mask": [33.0, 34.1, 35.6], "DeFeat, GLAM foreground": [31.0, 32.9, 33.0],
          R.HYBRID: [36.0, 36.6, 38.1], "GLAMD, patch 2": [30.2, 30.8, 32.9]}


def test_table3s_gap_is_the_sum_of_its_two_parts_seed_by_seed():
    tables = {"runs": _frame(RETINA)}
    label = {c.label.split(": ", 1)[1]: c for c in C.family("09") if c.label.startswith("retinanet")}
    heads = C.differences(label[R.PARTS["GLAMD's head terms"]], tables)
    feature = C.differences(label[R.PARTS["the feature term (mask and adapter)"]], tables)
    gap = _frame(RETINA).pivot(index="seed", columns="row", values="AP")
    assert (heads + feature).tolist() == pytest.approx((gap["GLAMD"] - gap["DeFeat"]).tolist())


def test_the_09_family_reads_table3_from_its_own_family_and_cascade_only_where_it_trains():
    labels = [c.label for c in C.family("09")]
    assert not any(R.TABLE3 in label for label in labels)  # Table 3 is judged once, in Table 3's family
    cascade = {label.split(": ", 1)[1] for label in labels if label.startswith("cascade_rcnn")}
    assert cascade == {R.PARTS["GLAMD's head terms"], R.PARTS["the feature term (mask and adapter)"],
                       "GLAMD's head terms add to DeFeat's feature term", "the hybrid beats GLAMD"}
    assert len(labels) == 2 * (len(R.COMPARISONS) - 1) + 4
