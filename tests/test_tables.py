"""The notebooks' summary tables on hand-made runs."""

import numpy as np
import pandas as pd
import pytest

from glamd_core import plans, tables


def test_table4_labels_each_run_and_pairs_against_both_baselines():
    experiments = plans.ablation_experiments("smoke", [0, 1], claim_seeds=[0, 1])
    frame = pd.DataFrame({"seed": [e.seed for e in experiments], "AP": np.arange(len(experiments), dtype=float),
                          "kind": "retinanet", "method": [e.method for e in experiments]})
    labelled = tables.label_ablation(frame, experiments)
    assert labelled.row.iloc[0] == tables.ALL_NO_GLAM and tables.STUDENT in set(labelled.row)
    assert set(labelled[labelled.row == "GLAM: feat"][["feat", "cls", "loc"]].itertuples(index=False)) == {(True, False, False)}
    table, vs_student, vs_no_glam = tables.ablation(labelled)
    assert table.row.tolist() == list(dict.fromkeys(labelled.row))
    feat = labelled[labelled.row == "GLAM: feat"].set_index("seed").AP
    student = labelled[labelled.row == tables.STUDENT].set_index("seed").AP
    assert vs_student.loc["GLAM: feat", "mean"] == pytest.approx((feat - student).mean())
    assert table.set_index("row").loc[tables.ALL_NO_GLAM, "paired vs all terms w/o GLAM"] == "-"
    assert table.set_index("row").loc["GLAM: feat+cls+loc", "paper AP (COCO, reference)"] == 40.0


def test_table2_lists_untrained_paper_sizes_as_the_global_mask():
    experiments = plans.patch_size_experiments("smoke", [0], sizes=[2, 7], claim_seeds=[0])
    frame = pd.DataFrame({"seed": [e.seed for e in experiments], "AP": [10.0, 12.0, 15.0, 13.0],
                          "kind": "retinanet", "method": [e.method for e in experiments]})
    labelled = tables.label_patch_size(frame, experiments)
    assert labelled.row.tolist() == ["student", "global mask", "patch 2", "patch 7"]
    table, paired = tables.patch_size(labelled, {"P3": (8, 8), "P4": (4, 4)}, 64)
    rows = table.set_index("row")
    assert rows.loc["patch 2", "paired vs global mask"].startswith("+3.00 AP")
    assert rows.loc["patch 2", "levels split"] == 2 and rows.loc["patch 7", "levels split"] == 1
    assert "global mask (= patch 30 at 64 px)" in rows.index  # the paper's 30 is a P3-sized patch here


def test_fig1_rows_count_a_point_listed_twice_once():
    points = plans.hyperparameter_experiments("smoke", [0], weight_multipliers=[1.0, 2.0], temperature_multipliers=[2.0],
                                              claim_seeds=[0])
    frame = pd.DataFrame({"seed": [e.seed for *_, e in points], "AP": np.linspace(10, 20, len(points)),
                          "kind": "retinanet", "parameter": [p for p, *_ in points], "multiplier": [m for _, m, _ in points]})
    labelled = tables.label_sweep(frame, points)
    assert labelled.row.is_unique and {"default", "student", "beta x2", "alpha x1"} <= set(labelled.row)
    table, paired = tables.sweep(labelled)
    assert table.set_index("row").loc["default", "paired vs default"] == "-"
    assert paired.loc["beta x2", "mean"] == pytest.approx(labelled.set_index("row").loc["beta x2", "AP"] - 10.0)


def test_table3_cells_and_references():
    experiments = plans.defeat_comparison_experiments("smoke", [0, 1], kinds=("retinanet",), claim_seeds=[0, 1])
    frame = pd.DataFrame({"seed": [e.seed for e in experiments], "AP": np.arange(len(experiments), dtype=float),
                          "kind": "retinanet", "method": [e.method for e in experiments]})
    table = tables.table3(tables.label_table3(frame), ["retinanet"]).set_index("row")
    assert table.index.tolist() == list(tables.TABLE3_ROWS)
    assert table.loc["teacher", "retinanet"] == "0.00 (n=1)" and table.loc["GLAMD", "retinanet"].endswith("(n=2)")
    assert table.loc["GLAMD", "retinanet: paper (COCO, reference)"] == 40.0
