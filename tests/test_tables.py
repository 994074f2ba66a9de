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


def _patch_runs():
    """Two seeds of Table 2's rows, AP falling by 1 per cell of patch size from 16 at patch 2."""
    experiments = plans.patch_size_experiments("smoke", [0, 1], sizes=[2, 4], claim_seeds=[0, 1])
    ap = {"none": 10.0, "global": 8.0}
    frame = pd.DataFrame({"seed": [e.seed for e in experiments], "kind": "retinanet",
                          "method": [e.method for e in experiments],
                          "AP": [ap.get(e.method, 18.0 - e.distill.patch_size if e.distill else 0.0) for e in experiments]})
    return tables.label_patch_size(frame, experiments)


def test_table2_trend_counts_the_global_mask_as_a_patch_of_the_p3_side():
    frame = _patch_runs()
    trend = tables.patch_size_trend(frame, [0, 1], p3=8)
    assert trend.seed.tolist() == [0, 1]
    assert trend["slope over trained sizes"].tolist() == pytest.approx([-1.0, -1.0])  # 16 at 2, 14 at 4
    # with the global mask at x = 8 (AP 8): least squares over (2, 16), (4, 14), (8, 8)
    slope = np.polyfit([2, 4, 8], [16, 14, 8], 1)[0]
    assert trend.slope.tolist() == pytest.approx([slope, slope])
    assert (trend["rank correlation (incl. global = patch of P3 side)"] == -1).all()


def test_table2_descriptive_lines_name_each_seeds_best_patch():
    from glamd_core import readings
    frame = _patch_runs()
    table, paired = tables.patch_size(frame, {"P3": (8, 8), "P4": (4, 4)}, 64)
    stats = pd.DataFrame({"mean": {"student": 10.0, "global mask": 8.0}})
    glamd = frame[frame.method == "glamd"]
    lines = readings.patch_size_lines(paired.set_index("row"), stats, glamd, [2, 4], 4, p3=8)
    assert "smallest patch (2) - global mask +8.00 ± 0.00 AP" in lines[0]
    assert "default patch 4 - global mask +6.00 ± 0.00 AP" in lines[0]
    assert "seed 0: 2, seed 1: 2" in lines[0] and "student alone 10.00, global mask 8.00 AP" in lines[0]
    assert "patch 4 is 0.50 of the P3 side" in lines[1]


def test_defeat_screen_follow_up_reads_both_seeds():
    def screen(seed, defeat, glamd, variant_ap):
        return pd.DataFrame({"seed": seed, "variant": ["DeFeat (chosen)", "GLAMD (chosen)", "v"],
                             "side": ["defeat", "glamd", "glamd"], "AP": [defeat, glamd, variant_ap]})
    first, second = screen(0, 12.0, 10.0, 11.0), screen(1, 13.0, 11.0, 12.0)
    moves = tables.screen_moves(first, 0).set_index("variant")
    assert moves.loc["v", "change"] == pytest.approx(1.0) and moves.loc["v", "gap share"] == pytest.approx(0.5)
    both, table, read = tables.screen_follow_up(first, second, 0, 1, ["v"])
    assert set(both.seed) == {0, 1}
    assert table.loc["v", "gap share, seed 0"] == pytest.approx(0.5) == table.loc["v", "gap share, seed 1"]
    assert len(read) == 1


def test_setting_record_resolves_the_temperature():
    from glamd_core.distill import DistillConfig
    record = plans.setting_record(DistillConfig("glamd", alpha=2.0))
    assert record["alpha"] == 2.0 and record["temperature"] == DistillConfig("glamd").resolved(two_stage=False).temperature
    assert set(record) == {"loss_form", "alpha", "beta", "gamma", "temperature", "patch_size"}


def test_combine_keeps_each_parts_runs_once_and_sums_what_was_trained():
    from glamd_core import study
    main = study.Trained(pd.DataFrame({"run": ["a", "b"], "part": "table 3", "train_minutes": 1.0}), [{"r": "a"}, {"r": "b"}], 1, 5.0)
    screen = study.Trained(pd.DataFrame({"run": ["a", "c", "c"], "train_minutes": 1.0}), [{"r": "a"}, {"r": "c"}], 2)
    both = study.combine(main, screen=screen)
    assert both.frame[["run", "part"]].values.tolist() == [["a", "table 3"], ["b", "table 3"], ["a", "screen"], ["c", "screen"]]
    assert both.trained_now == 3 and both.started == 5.0 and len(both.results) == 4


def test_fig1_reading_measures_each_point_against_one_default_seed_std():
    from glamd_core import claims, readings
    points = plans.hyperparameter_experiments("smoke", [0, 1], weight_multipliers=[1.0, 2.0], temperature_multipliers=[2.0],
                                              claim_seeds=[0, 1])
    base = {"default": 20.0, "student": 15.0}
    frame = pd.DataFrame({"seed": [e.seed for *_, e in points], "kind": "retinanet",
                          "parameter": [p for p, *_ in points], "multiplier": [m for _, m, _ in points],
                          "AP": [base.get(p, 20.0 - (m == 2.0) * 3.0) + e.seed for p, m, e in points]})
    labelled = tables.label_sweep(frame, points)
    table, paired = tables.sweep(labelled)
    judged = claims.judge("Fig. 1", {"runs": labelled})
    summary, conclusion = readings.sweep_reading(labelled, paired, judged)
    assert set(summary.parameter) == set(plans.SWEPT)
    # every x2 point loses 3 AP at each seed; the default's seed-std is std(20, 21) = 0.71: the default only
    assert (summary["no worse than one default seed-std"] == "the default only").all()
    assert conclusion[:len(readings.family_lines(judged))] == readings.family_lines(judged)
    assert "its gain over the student +5.00 AP" in "\n".join(conclusion)


def test_table4_descriptive_lines_pair_each_row_with_its_baseline():
    from glamd_core import readings
    experiments = plans.ablation_experiments("smoke", [0, 1], single_terms_without_glam=True, claim_seeds=[0, 1])
    frame = pd.DataFrame({"seed": [e.seed for e in experiments], "kind": "retinanet", "method": [e.method for e in experiments],
                          "AP": [float(i % 7) + e.seed for i, e in enumerate(experiments)]})
    labelled = tables.label_ablation(frame, experiments)
    table, vs_student, vs_no_glam = tables.ablation(labelled)
    lines = readings.ablation_lines(labelled, vs_student, True)
    ap = labelled.set_index(["row", "seed"]).AP
    glam_vs_global = ap["GLAM: feat+cls+loc"] - ap["global: feat+cls+loc"]
    assert lines[0].startswith(f"- Beyond the paper (no verdict, 95 % CI): GLAM - the global mask, all terms on: "
                               f"{glam_vs_global.mean():+.2f}")
    assert "feat " in lines[1] and "cls " in lines[1] and "loc " in lines[1] and "all three" in lines[1]
    assert len(lines) == 3 and lines[2].startswith("- GLAM - no mask, each term alone")
    assert len(readings.ablation_lines(labelled, vs_student, False)) == 2


def test_table1_rows_and_lines_per_detector():
    from glamd_core import readings
    experiments = plans.small_models_experiments("smoke", [0, 1], ["retinanet"], claim_seeds=[0, 1])
    frame = pd.DataFrame({"seed": [e.seed for e in experiments], "kind": "retinanet", "method": [e.method for e in experiments],
                          "AP": [{"teacher": 30.0, "none": 10.0, "glamd": 12.0}[e.method] + e.seed for e in experiments],
                          "VOC07_mAP50": 50.0})
    labelled = tables.label_small_models(frame)
    table = tables.small_models(labelled)
    assert table.role.tolist() == ["student", "GLAMD student", "teacher"]
    assert table["AP mean"].tolist() == pytest.approx([10.5, 12.5, 30.0])
    assert table["paper AP (VOC, reference)"].tolist() == [75.57, 78.14, 79.63]
    assert readings.small_models_lines(table, 0) == [
        "- retinanet: teacher 30.00 (seed 0, one teacher: descriptive), GLAMD student 12.50, student 10.50 AP (means over seeds)."]
    assert plans.setting_record(plans.glamd_setting("cpu", "faster_rcnn"), "faster_rcnn")["temperature"] == \
        plans.glamd_setting("cpu", "faster_rcnn").resolved(two_stage=True).temperature
