"""The notebooks' experiment lists (glamd_core.plans): shared rows are the same runs, and the
patch-size premise of notebook 02 -- from 16 cells on, GLAMD at 128 px *is* the global mask."""

from dataclasses import replace

import pandas as pd

import pytest
import torch

from glamd_core import calibration as C, plans
from glamd_core.analysis import fpn_map_sides
from glamd_core.detectors import build_detector
from glamd_core.distill import Distiller
from glamd_core.experiments import Experiment, run_dir
from glamd_core.profiles import get_profile


def _chosen_frame(profile="cpu", kind="retinanet"):
    """Notebook 00's ``chosen`` frame as the profile records it."""
    import pandas as pd

    P = get_profile(profile)
    return pd.DataFrame([{"kind": kind, "method": m, "loss_form": P.distill_for(kind, m).loss_form,
                          "alpha": P.distill_for(kind, m).alpha} for m in C.COMPARED_METHODS])


def test_shared_rows_are_notebook_00s_runs(tmp_path):
    chosen = _chosen_frame()
    calibration = C.chosen_experiments(chosen, ["retinanet"], "cpu", [0, 1, 2])
    calibration += C.diagnostic_experiments(chosen, ["retinanet"], "cpu", seed=0)
    dirs_00 = {run_dir(e, runs_dir=tmp_path) for e in calibration}
    sweep = {run_dir(e, runs_dir=tmp_path) for e in plans.patch_size_experiments("cpu", [0, 1, 2], claim_seeds=[0, 1, 2])}
    ablation = {run_dir(e, runs_dir=tmp_path) for e in plans.ablation_experiments("cpu", [0, 1, 2], claim_seeds=[0, 1, 2])}
    student, glamd, global_ = ({run_dir(Experiment("retinanet", m, "cpu", seed=s), runs_dir=tmp_path) for s in (0, 1, 2)}
                               for m in ("none", "glamd", "global"))
    feature_only = run_dir(C.diagnostic_experiments(chosen, ["retinanet"], "cpu")[0], runs_dir=tmp_path)
    assert student | glamd | global_ <= dirs_00
    assert student | glamd | global_ <= sweep  # patch 7 is the chosen GLAMD run
    assert student | glamd | global_ | {feature_only} <= ablation
    assert len(sweep) == 3 * (2 + len(plans.PATCH_SIZES))  # every patch size its own run
    assert len(ablation) == 3 * (8 + 2)
    with_uniform_singles = {run_dir(e, runs_dir=tmp_path) for e in plans.ablation_experiments("cpu", [0], True,
                                                                                               claim_seeds=[0])}
    assert len(with_uniform_singles) == 8 + 2 + 3
    # at the profile's claim seeds (0-4): every row, since the per-seed slope reads every patch size
    five = plans.patch_size_experiments("cpu", [0, 1, 2])
    for size in plans.PATCH_SIZES:
        assert {e.seed for e in five if e.method == "glamd" and e.distill.patch_size == size} == set(range(5)), size
    assert {e.seed for e in five if e.method == "global"} == set(range(5)) == {e.seed for e in five if e.method == "none"}
    claimed = plans.ablation_experiments("cpu", [0, 1, 2])  # Table 4's claim rows at five seeds, the pairs at three
    by_terms = {}
    for e in claimed:
        by_terms.setdefault((plans.mask_of(e), tuple(plans.terms_of(e).values())), set()).add(e.seed)
    assert by_terms[("GLAM", (True, False, False))] == set(range(5)) == by_terms[("none (uniform)", (True, True, True))]
    assert by_terms[("GLAM", (True, True, False))] == {0, 1, 2}


def test_ablation_rows_switch_exactly_their_terms_off():
    experiments = plans.ablation_experiments("cpu", [0], claim_seeds=[0])
    with_glam = experiments[1:9]
    assert [tuple(plans.terms_of(e).values()) for e in with_glam] == list(plans.TERM_COMBINATIONS)
    assert len(set(plans.TERM_COMBINATIONS)) == 8
    base = plans.glamd_setting("cpu")
    for e in with_glam:
        if e.method == "none":
            assert not any(plans.terms_of(e).values())
            continue
        c = e.distill_config()
        assert replace(c, alpha=base.alpha, beta=base.beta, gamma=base.gamma) == base  # nothing else changed
    assert [plans.mask_of(e) for e in (experiments[0], experiments[9])] == ["none (uniform)", "global"]
    assert all(plans.terms_of(e) == {"feat": True, "cls": True, "loc": True} for e in (experiments[0], experiments[9]))
    singles = plans.ablation_experiments("cpu", [0], single_terms_without_glam=True, claim_seeds=[0])[10:]
    assert [plans.mask_of(e) for e in singles] == ["none (uniform)"] * 3
    assert [sum(plans.terms_of(e).values()) for e in singles] == [1, 1, 1]


def _distill_losses(config, images):
    torch.manual_seed(0)  # the same teacher, student and adapters for every config
    P = get_profile("cpu")
    teacher = build_detector("retinanet", P.teacher_backbone, 5, **P.detector)
    student = build_detector("retinanet", P.student_backbone, 5, **P.detector)
    d = Distiller(teacher, student, config).train()
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])}] * len(images)
    losses = {k: v for k, v in d(images, targets).items() if k.startswith("distill_")}
    sum(losses.values()).backward()
    grads = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def test_patches_as_large_as_p3_are_the_global_mask_at_128px():
    """Why notebook 02 does not train the paper's patch sizes 20 and 30 at the cpu profile."""
    sides = fpn_map_sides("cpu")
    assert max(max(hw) for hw in sides.values()) == 16  # P3 at 128 px
    torch.manual_seed(1)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    global_losses, global_grads = _distill_losses(get_profile("cpu").distill_for("retinanet", "global"), images)
    assert set(global_losses) == {"distill_feat", "distill_cls", "distill_loc"}
    for patch in (16, 20, 30):
        losses, grads = _distill_losses(replace(plans.glamd_setting("cpu"), patch_size=patch), images)
        assert losses == pytest.approx(global_losses, rel=1e-5), patch
        torch.testing.assert_close(grads, global_grads, rtol=1e-4, atol=1e-7)
    local_losses, _ = _distill_losses(replace(plans.glamd_setting("cpu"), patch_size=7), images)
    assert local_losses["distill_feat"] != pytest.approx(global_losses["distill_feat"], rel=1e-3)  # a real patch differs


def test_hyperparameter_sweep_reuses_the_ablations_zero_points_and_moves_one_parameter(tmp_path):
    points = plans.hyperparameter_experiments("cpu", [0, 1, 2])  # the band and the default at claim seeds 0-4
    where = {(p, m, e.seed): run_dir(e, runs_dir=tmp_path) for p, m, e in points}
    ablation = {run_dir(e, runs_dir=tmp_path) for e in plans.ablation_experiments("cpu", [0, 1, 2])}
    for parameter in ("alpha", "beta", "gamma"):  # the value 0 is a Table 4 row: one run, one key
        assert {where[(parameter, 0.0, s)] for s in (0, 1)} <= ablation
    assert {where[("default", 1.0, s)] for s in range(5)} == {run_dir(Experiment("retinanet", "glamd", "cpu", seed=s),
                                                                     runs_dir=tmp_path) for s in range(5)}
    assert len(set(where.values())) == len(where)  # every point its own run
    base = plans.glamd_setting("cpu").resolved(two_stage=False)
    for parameter, m, e in points:
        if parameter not in plans.SWEPT:
            continue
        c = e.distill_config().resolved(two_stage=False)
        assert getattr(c, parameter) == pytest.approx(getattr(base, parameter) * m)
        assert replace(c, **{parameter: getattr(base, parameter)}) == replace(base, method=c.method)
        in_band = plans.VERDICT_BAND[0] <= m <= plans.VERDICT_BAND[1]
        assert e.seed in (range(5) if in_band else (0, 1)), (parameter, m)  # the verdict band at every claim seed
    band_points = {(p, m) for p, m, e in points if p in plans.SWEPT and e.seed == 4}
    assert band_points == {(p, m) for p in plans.SWEPT for m in (0.5, 2.0)}  # 8 points, as issue #27 asks
    assert plans.swept_value(points[0][2], "temperature") == 0.1  # the reference's one-stage temperature


def test_table3_and_the_screen_reuse_notebook_00s_runs_and_change_one_component(tmp_path):
    chosen = pd.concat([_chosen_frame("cpu", k) for k in ("retinanet", "faster_rcnn")])
    dirs_00 = {run_dir(e, runs_dir=tmp_path) for e in C.chosen_experiments(chosen, ["retinanet", "faster_rcnn"], "cpu",
                                                                            [0, 1, 2])}
    table3 = plans.defeat_comparison_experiments("cpu", [0, 1, 2], claim_seeds=[0, 1, 2])
    two_kinds = {run_dir(e, runs_dir=tmp_path) for e in table3 if e.kind != "cascade_rcnn" and e.method != "teacher"}
    assert two_kinds == dirs_00
    dirs_00 |= {run_dir(e, runs_dir=tmp_path) for e in C.diagnostic_experiments(chosen, ["faster_rcnn"], "cpu")}
    assert sum(e.kind == "cascade_rcnn" and e.method == "global" for e in table3) == 3  # every seed now
    # every claim at five seeds (issue #34): the profile's claim seeds, every detector
    five = plans.defeat_comparison_experiments("cpu", [0, 1, 2])
    assert {(e.kind, e.seed) for e in five if e.method == "glamd"} == {
        (k, s) for k in ("faster_rcnn", "cascade_rcnn", "retinanet") for s in range(5)}
    assert {run_dir(e, runs_dir=tmp_path) for e in table3} <= {run_dir(e, runs_dir=tmp_path) for e in five}
    listed = plans.notebook_experiments("04_defeat_comparison", "cpu")[0]
    assert {(e.kind, e.method, e.seed) for e in five} <= {(e.kind, e.method, e.seed) for e in listed}
    table1 = plans.notebook_experiments("01_voc_small_models", "cpu")[0]
    assert {(e.kind, e.seed) for e in table1 if e.method == "none"} == {
        (k, s) for k in ("faster_rcnn", "retinanet") for s in range(5)}
    screen = plans.defeat_screen_experiments("cpu", 0, glamd_alpha=0.5)
    assert len({run_dir(e, runs_dir=tmp_path) for *_, e in screen}) == len(screen)
    starts = {"defeat": get_profile("cpu").distill_for("faster_rcnn", "defeat"),
              "glamd": get_profile("cpu").distill_for("faster_rcnn", "glamd")}
    for name, side, component, e in screen[2:]:
        assert component != "baseline", name
        changed = {k for k, v in vars(e.distill_config()).items() if getattr(starts[side], k) != v}
        assert 1 <= len(changed) <= 2, name  # one component: a field, the method (masks), or beta and gamma together
    feature_only = next(e for n, *_, e in screen if n == "GLAMD, feature term only")
    assert run_dir(feature_only, runs_dir=tmp_path) in dirs_00  # 00's diagnostic run


def test_glamd_adapter_option_keeps_earlier_keys_and_starts_near_zero(tmp_path):
    from glamd_core.methods.adapters import feature_adapters

    default = Experiment("faster_rcnn", "glamd", "cpu")
    spelled = Experiment("faster_rcnn", "glamd", "cpu", distill=replace(default.distill_config(), glamd_adapter="1x1"))
    three = Experiment("faster_rcnn", "glamd", "cpu", distill=replace(default.distill_config(), glamd_adapter="3x3"))
    assert run_dir(default, runs_dir=tmp_path) == run_dir(spelled, runs_dir=tmp_path) != run_dir(three, runs_dir=tmp_path)
    adapters = feature_adapters("3x3", 8, 16, 2)
    assert all(a.kernel_size == (3, 3) and a.weight.abs().max() <= 2e-4 for a in adapters)
    with pytest.raises(ValueError, match="glamd_adapter"):
        replace(default.distill_config(), glamd_adapter="5x5")


def test_mask_against_mask_reuses_table3_and_02_and_changes_one_part(tmp_path):
    rows = plans.mask_against_mask_experiments("cpu", [0, 1, 2])
    where = {(row, e.kind, e.seed): run_dir(e, runs_dir=tmp_path) for row, _, e in rows}
    assert len(set(where.values())) == len(where)  # every row its own run
    table3 = {run_dir(e, runs_dir=tmp_path) for e in plans.defeat_comparison_experiments("cpu", [0, 1, 2])}
    assert {where[(r, k, s)] for r in ("GLAMD", "DeFeat") for k in ("faster_rcnn", "retinanet") for s in (0, 1, 2)} <= table3
    patch2 = {run_dir(e, runs_dir=tmp_path) for e in plans.patch_size_experiments("cpu", [0, 1, 2], sizes=[2])}
    assert {where[("GLAMD, patch 2", "retinanet", s)] for s in (0, 1, 2)} <= patch2
    assert {s for (_, k, s) in where if k == "cascade_rcnn"} == {0, 1}
    assert {r for (r, k, _) in where if k == "cascade_rcnn"} == set(plans.CASCADE_MASK_ROWS)
    hybrid = "hybrid: DeFeat's feature term + GLAMD's head terms"
    for kind in ("retinanet", "faster_rcnn", "cascade_rcnn"):  # GLAMD's head terms in GLAMD's chosen form
        e = next(e for r, _, e in rows if r == hybrid and e.kind == kind)
        assert e.distill_config().glamd_heads == get_profile("cpu").distill_for(kind, "glamd").loss_form
    for row, recipe, e in rows:  # one part changed against the recipe's chosen setting
        chosen = get_profile("cpu").distill_for(e.kind, recipe)
        changed = {k for k, v in vars(e.distill_config()).items() if getattr(chosen, k) != v and k != "method"}
        assert changed == {"GLAMD": set(), "DeFeat": set(), "GLAMD, box mask": {"glamd_feature_mask"},
                           "DeFeat, GLAM foreground": {"defeat_foreground"}, "GLAMD, feature term only": {"beta", "gamma"},
                           "GLAMD, patch 2": {"patch_size"}, hybrid: {"glamd_heads"}}[row], (row, changed)


def test_the_readings_name_the_rows_the_plans_make():
    """recipe_parts and gap pair rows by name: a row renamed in a plan must not drop a claim silently."""
    from glamd_core import gap, recipe_parts

    made = {row for row, _, _ in plans.mask_against_mask_experiments("cpu", [0, 1, 2])}
    assert {name for _, a, b in recipe_parts.COMPARISONS for name in (a, b)} == made
    assert recipe_parts.HYBRID == plans.HYBRID_ROW
    rows = {row for _, row, _ in plans.teacher_student_gap_experiments("cpu", [0, 1, 2])}
    assert {gap.STUDENT, gap.GLAMD, gap.DEFEAT} <= rows
