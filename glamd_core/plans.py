"""Each experiment notebook's runs, as data: one function per notebook returns its ``Experiment`` list.

The notebooks call these functions, so what a notebook trains and what a plan of the whole job
lists cannot disagree. Every run is the profile's chosen setting with the named fields changed
(``Profile.distill_for``): rows shared between notebooks -- the student, GLAMD, the global mask --
are then the same runs under the same run keys, trained once.
"""

from __future__ import annotations

from dataclasses import replace

from .claims import CASCADE_09_SEEDS
from .detectors import TWO_STAGE_KINDS
from .experiments import Experiment
from .profiles import get_profile

# Table 2's patch sizes at the cpu profile. The paper sweeps 7 / 9 / 11 / 20 / 30 on an 800-px P3
# of about 100 x 150 cells; at 128 px P3 is 16 x 16 and every patch of 16 or more *is* the global
# mask (tests/test_plans.py proves it), so 20 and 30 are not trained: the global-mask runs stand for
# them. The smaller sizes keep the patch-to-map ratio of the paper's sweep within reach (7 / 100
# there is about 1 / 16 here).
PATCH_SIZES = (2, 3, 4, 5, 7, 9, 11)
SMOKE_PATCH_SIZES = (2, 7)  # CI: one size that splits the smoke P3 (8 x 8) finely, and the default

# Table 4: (feature, cls head, loc head) switched on or off; off sets that weight (alpha, beta,
# gamma) to 0, on keeps the chosen value.
TERMS = ("feat", "cls", "loc")
TERM_WEIGHT = {"feat": "alpha", "cls": "beta", "loc": "gamma"}


def _with_terms(base, terms: tuple[bool, bool, bool]):
    return replace(base, **{TERM_WEIGHT[t]: (getattr(base, TERM_WEIGHT[t]) if on else 0.0)
                            for t, on in zip(TERMS, terms)})


def glamd_setting(profile: str, kind: str = "retinanet"):
    """GLAMD's chosen ``DistillConfig`` for ``kind`` at ``profile`` (what every variant starts from)."""
    return get_profile(profile).distill_for(kind, "glamd")


CLAIM_PATCH = 7  # Table 2's claim: the paper's smallest patch against the global mask


def setting_record(config, kind: str = "retinanet") -> dict:
    """A distillation setting as a results manifest records it (the temperature as it resolves for ``kind``)."""
    resolved = config.resolved(two_stage=kind in TWO_STAGE_KINDS)
    return {"loss_form": resolved.loss_form, "alpha": resolved.alpha, "beta": resolved.beta, "gamma": resolved.gamma,
            "temperature": resolved.temperature, "patch_size": resolved.patch_size}


def claim_seeds_of(profile: str, seeds, claim_seeds=None) -> list[int]:
    """The seeds of the rows a verdict claim pairs: ``claim_seeds`` when given, else the profile's
    (``Profile.verdict_seeds``), never fewer than ``seeds`` (every row of a table has its seeds)."""
    chosen = list(claim_seeds) if claim_seeds else list(get_profile(profile).verdict_seeds)
    return chosen + [s for s in seeds if s not in chosen]


def patch_size_experiments(profile: str, seeds, sizes=None, kind: str = "retinanet",
                           claim_seeds=None) -> list[Experiment]:
    """Notebook 02 (Table 2): the student, the global mask, and GLAMD at each patch size, every row at
    :func:`claim_seeds_of` (both claims read them: patch :data:`CLAIM_PATCH` against the global mask, and
    the per-seed slope over every size). ``sizes`` None: :data:`PATCH_SIZES` (``smoke``:
    :data:`SMOKE_PATCH_SIZES`)."""
    sizes = tuple(sizes or (SMOKE_PATCH_SIZES if profile == "smoke" else PATCH_SIZES))
    claimed = claim_seeds_of(profile, seeds, claim_seeds)
    base = glamd_setting(profile, kind)
    out = [Experiment(kind, m, profile, seed=s) for m in ("none", "global") for s in claimed]
    out += [Experiment(kind, "glamd", profile, seed=s, distill=replace(base, patch_size=int(p)))
            for p in sizes for s in claimed]
    return out


# Table 4's rows in the paper's order: no term (the student), each alone, each pair, all three.
TERM_COMBINATIONS = ((False, False, False), (True, False, False), (False, True, False), (False, False, True),
                     (True, True, False), (False, True, True), (True, False, True), (True, True, True))


# Table 4's claims pair these rows: each term alone with GLAM, and all three, against all three without.
CLAIM_TERM_COMBINATIONS = ((True, False, False), (False, True, False), (False, False, True), (True, True, True))


def ablation_experiments(profile: str, seeds, single_terms_without_glam: bool = False,
                         kind: str = "retinanet", claim_seeds=None) -> list[Experiment]:
    """Notebook 05 (Table 4), in the paper's row order: all three terms without GLAM (``uniform``:
    every mask 1); with GLAM every combination of the three terms (none of them = the student
    alone); then, beyond the paper, all three with the global mask, and with
    ``single_terms_without_glam`` each term alone without GLAM. The rows Table 4's claims pair (and
    the student) at :func:`claim_seeds_of`, the others at ``seeds``."""
    claimed = claim_seeds_of(profile, seeds, claim_seeds)
    base = glamd_setting(profile, kind)
    out = [Experiment(kind, "uniform", profile, seed=s) for s in claimed]
    for terms in TERM_COMBINATIONS:
        if not any(terms):
            out += [Experiment(kind, "none", profile, seed=s) for s in claimed]
        else:
            out += [Experiment(kind, "glamd", profile, seed=s, distill=_with_terms(base, terms))
                    for s in (claimed if terms in CLAIM_TERM_COMBINATIONS else seeds)]
    out += [Experiment(kind, "global", profile, seed=s) for s in seeds]
    if single_terms_without_glam:
        uniform = get_profile(profile).distill_for(kind, "uniform")
        out += [Experiment(kind, "uniform", profile, seed=s, distill=_with_terms(uniform, terms))
                for terms in TERM_COMBINATIONS[1:4] for s in seeds]
    return out


def terms_of(exp: Experiment) -> dict[str, bool]:
    """Which of the three terms ``exp`` trains with (the student alone: none)."""
    if exp.method in ("none", "teacher"):
        return {t: False for t in TERMS}
    config = exp.distill_config()
    return {t: bool(getattr(config, TERM_WEIGHT[t])) for t in TERMS}


def mask_of(exp: Experiment) -> str:
    """Table 4's mask column: ``GLAM``, ``global`` or ``none`` (uniform masks); the student: ``-``."""
    return {"glamd": "GLAM", "global": "global", "uniform": "none (uniform)"}.get(exp.method, "-")


# Fig. 1's sweep: each of alpha, beta, gamma multiplied around the chosen value (one at a time), and
# the mask temperature (the reference's 0.1 for one-stage detectors), which the paper fixes. The
# value 0 of alpha / beta / gamma is a Table 4 row (notebook 05), the same run under the same key.
WEIGHT_MULTIPLIERS = (0.0, 0.25, 0.5, 2.0, 4.0)
TEMPERATURE_MULTIPLIERS = (0.5, 2.0, 5.0, 20.0)
SMOKE_MULTIPLIERS = ((0.0, 2.0), (2.0,))  # CI: the zero point and one multiplier; one temperature
SWEPT = ("alpha", "beta", "gamma", "temperature")
# The paper's "hardly sensitive" band: points within x0.5-2 carry the verdict, so they train at every
# seed of the default row (paired against it); points outside it at the sweep's seeds only.
VERDICT_BAND = (0.5, 2.0)


def swept_value(exp: Experiment, parameter: str) -> float:
    """``exp``'s value of a swept ``parameter`` as it trains (the loss form's temperature resolved)."""
    return float(getattr(exp.distill_config().resolved(two_stage=False), parameter))


def sweep_multipliers(profile: str, weight_multipliers=None, temperature_multipliers=None) -> tuple[tuple, tuple]:
    """Notebook 03's multipliers: those given, else :data:`WEIGHT_MULTIPLIERS` and
    :data:`TEMPERATURE_MULTIPLIERS` (``smoke``: :data:`SMOKE_MULTIPLIERS`)."""
    weights, temperatures = SMOKE_MULTIPLIERS if profile == "smoke" else (WEIGHT_MULTIPLIERS, TEMPERATURE_MULTIPLIERS)
    return tuple(weight_multipliers or weights), tuple(temperature_multipliers or temperatures)


def hyperparameter_experiments(profile: str, seeds, sweep_seeds=None, weight_multipliers=None,
                               temperature_multipliers=None, kind: str = "retinanet",
                               band=VERDICT_BAND, claim_seeds=None) -> list[tuple[str, float, Experiment]]:
    """Notebook 03 (Fig. 1) as ``(parameter, multiplier, experiment)``: the chosen GLAMD setting
    (``"default"``, multiplier 1) and the student (``"student"``) at :func:`claim_seeds_of`; every
    other point with one parameter multiplied by each of :func:`sweep_multipliers`, at those seeds
    when its multiplier lies in ``band`` (the verdict's range; None: no such band) and at
    ``sweep_seeds`` (default: the first two of ``seeds``) otherwise."""
    weight_multipliers, temperature_multipliers = sweep_multipliers(profile, weight_multipliers,
                                                                    temperature_multipliers)
    sweep_seeds = list(seeds[:2] if sweep_seeds is None else sweep_seeds)
    seeds = claim_seeds_of(profile, seeds, claim_seeds)
    base = glamd_setting(profile, kind)
    out = [("default", 1.0, Experiment(kind, "glamd", profile, seed=s)) for s in seeds]
    out += [("student", float("nan"), Experiment(kind, "none", profile, seed=s)) for s in seeds]
    for parameter in SWEPT:
        start = swept_value(out[0][2], parameter)
        for m in (temperature_multipliers if parameter == "temperature" else weight_multipliers):
            distill = replace(base, **{parameter: start * m})
            in_band = band is not None and band[0] <= m <= band[1]
            out += [(parameter, float(m), Experiment(kind, "glamd", profile, seed=s, distill=distill))
                    for s in (seeds if in_band else sweep_seeds)]
    return out


# Table 3: every detector kind; Cascade R-CNN takes Faster R-CNN's chosen settings (the profile says so).
DEFEAT_KINDS = ("faster_rcnn", "retinanet", "cascade_rcnn")


def defeat_comparison_experiments(profile: str, seeds, kinds=DEFEAT_KINDS, claim_seeds=None) -> list[Experiment]:
    """Notebook 04 (Table 3): per kind the teacher (first seed), the student alone, DeFeat, GLAMD and
    the global mask at :func:`claim_seeds_of` (the rows Table 3's claims pair)."""
    out = []
    for kind in kinds:
        ks = claim_seeds_of(profile, seeds, claim_seeds)
        out.append(Experiment(kind, "teacher", profile, seed=ks[0]))
        out += [Experiment(kind, m, profile, seed=s) for m in ("none", "defeat", "glamd", "global") for s in ks]
    return out


# Mask against mask (issue #30): the masks swapped with each recipe held fixed, and the recipes' parts.
MASK_KINDS = ("faster_rcnn", "retinanet", "cascade_rcnn")
HYBRID_ROW = "hybrid: DeFeat's feature term + GLAMD's head terms"
CASCADE_MASK_ROWS = ("GLAMD", "DeFeat", "GLAMD, feature term only", HYBRID_ROW)  # the rows that split the recipes


def mask_against_mask_experiments(profile: str, seeds, kinds=MASK_KINDS) -> list[tuple[str, str, Experiment]]:
    """The runs of the mask-against-mask comparison as ``(row, recipe, experiment)``, every row at the
    chosen setting of its recipe with the named part changed: GLAMD and DeFeat as chosen (Table 3's
    runs, same keys); GLAMD with its feature term on ground-truth-box weights (``glamd_feature_mask=
    "boxes"``); DeFeat with a GLAM foreground (``defeat_foreground="glam"``); GLAMD's feature term alone
    (beta = gamma = 0: feature distiller against feature distiller); the hybrid, DeFeat's feature term
    plus GLAMD's head terms in GLAMD's chosen loss form (``glamd_heads``); and GLAMD at patch 2 (02's
    best region on RetinaNet; the same run as 02's there). Cascade R-CNN, the costliest, at the first two
    seeds and only the rows that split the recipes (feature term only, hybrid), as the budget allows."""
    out = []
    for kind in kinds:
        glamd, defeat = glamd_setting(profile, kind), get_profile(profile).distill_for(kind, "defeat")
        rows = [("GLAMD", "glamd", None), ("DeFeat", "defeat", None),
                ("GLAMD, box mask", "glamd", replace(glamd, glamd_feature_mask="boxes")),
                ("DeFeat, GLAM foreground", "defeat", replace(defeat, defeat_foreground="glam")),
                ("GLAMD, feature term only", "glamd", replace(glamd, beta=0.0, gamma=0.0)),
                (HYBRID_ROW, "defeat", replace(defeat, glamd_heads=glamd.loss_form)),
                ("GLAMD, patch 2", "glamd", replace(glamd, patch_size=2))]
        if kind == "cascade_rcnn":
            rows = [r for r in rows if r[0] in CASCADE_MASK_ROWS]
        for s in (seeds[:CASCADE_09_SEEDS] if kind == "cascade_rcnn" else seeds):
            out += [(row, recipe, Experiment(kind, recipe, profile, seed=s, distill=distill))
                    for row, recipe, distill in rows]
    return out


def defeat_screen_experiments(profile: str, seed: int, glamd_alpha: float | None = None,
                              kind: str = "faster_rcnn") -> list[tuple[str, str, str, Experiment]]:
    """Notebook 04's diagnosis as ``(variant, side, component, experiment)``: one component of
    DeFeat's or GLAMD's feature term swapped at a time, each against its own method at its chosen
    setting (``side`` is the method it starts from). ``component`` names the difference between the
    two methods that the swap tests, so a reading can say which one carries the gap.
    ``glamd_alpha``: GLAMD's alpha at which its feature term's gradient matches DeFeat's (None
    leaves that variant out; see :func:`alpha_matching_defeat`)."""
    P = get_profile(profile)
    defeat, glamd = P.distill_for(kind, "defeat"), P.distill_for(kind, "glamd")
    temperature = glamd.resolved(two_stage=kind in TWO_STAGE_KINDS).temperature

    def variant(name, side, component, config=None, method=None):
        return name, side, component, Experiment(kind, method or side, profile, seed=seed, distill=config)

    out = [variant("DeFeat (chosen)", "defeat", "baseline"), variant("GLAMD (chosen)", "glamd", "baseline"),
           variant("DeFeat, 1x1 adapter", "defeat", "DeFeat's 3x3 adapter (GLAMD's is 1x1)",
                   replace(defeat, defeat_adapter="1x1")),
           variant("DeFeat, every level marked", "defeat", "DeFeat marking each box on one FPN level",
                   replace(defeat, defeat_levels="all")),
           variant("DeFeat, foreground only", "defeat", "DeFeat's background term", replace(defeat, defeat_bg_weight=0.0)),
           variant("DeFeat, background only", "defeat", "DeFeat's foreground term", replace(defeat, defeat_fg_weight=0.0)),
           variant("GLAMD, feature term only", "glamd", "GLAMD's head terms (DeFeat's setting has none)",
                   replace(glamd, beta=0.0, gamma=0.0)),
           variant("GLAMD, no masks (uniform)", "glamd", "GLAMD's attention masks", method="uniform"),
           variant(f"GLAMD, temperature x10 ({10 * temperature:g})", "glamd", "how peaked GLAMD's masks are",
                   replace(glamd, temperature=10 * temperature)),
           variant("GLAMD, DeFeat's 3x3 adapter", "glamd", "DeFeat's 3x3 adapter (GLAMD's is 1x1)",
                   replace(glamd, glamd_adapter="3x3"))]
    if glamd_alpha is not None:
        out.append(variant(f"GLAMD, alpha {glamd_alpha:g} (DeFeat's gradient ratio)", "glamd",
                           "the feature term's gradient strength", replace(glamd, alpha=float(glamd_alpha))))
    return out


def alpha_matching_defeat(balance, kind: str = "faster_rcnn", defeat_setting: str = "reference x1",
                          glamd_setting: str = "normalised a=0.3") -> float:
    """GLAMD's alpha whose feature-term gradient (relative to the detection loss's, mean over the
    logged epochs of seed-0 runs) matches DeFeat's at their chosen settings, from the gradient
    balance notebook 00 records (``results/00_calibration/gradient_balance.csv``). The ratio grows
    in proportion to alpha (0.3 -> 1 multiplied it by about 3 there), so alpha scales by the
    ratio of ratios; rounded to two digits, so the run key stays put."""
    rows = balance[(balance.kind == kind) & (balance.term == "feat")]
    ratio = {m: rows[(rows.method == m) & (rows.setting == s)].ratio.mean()
             for m, s in (("defeat", defeat_setting), ("glamd", glamd_setting))}
    if any(v != v for v in ratio.values()):  # NaN: the settings are not in the file
        raise ValueError(f"no gradient balance for {kind} DeFeat '{defeat_setting}' / GLAMD '{glamd_setting}'")
    alpha = float(glamd_setting.split("=")[-1]) if "=" in glamd_setting else float(glamd_setting.split("x")[-1])
    return round(alpha * ratio["defeat"] / ratio["glamd"], 2)


# The teacher-student gap (issue #31): students from far behind the teacher to level with it.
GAP_KINDS = ("faster_rcnn", "retinanet")
GAP_BACKBONES = ("resnet10t", "resnet18")  # nearer the teacher than the profile's student, in that order
GAP_ROWS = {"none": "student alone", "defeat": "DeFeat", "glamd": "GLAMD", "global": "global mask"}


def teacher_student_gap_experiments(profile: str, seeds, kinds=GAP_KINDS, claim_seeds=None,
                                    backbones=GAP_BACKBONES) -> list[tuple[str, str, Experiment]]:
    """Notebook 10's runs as ``(point, row, experiment)``, at the profile's chosen settings (not re-tuned).
    Faster R-CNN: the profile's student (Table 3's runs), the same student warm-started from its own
    student-alone run at the same seed and trained one more schedule with each method (the student alone
    too, so every row has two schedules), ResNet10t (plus the global mask) and ResNet18 at the first seed
    only (level with the teacher: nothing left to give; no headline reads it). Each point: student
    alone, DeFeat and GLAMD. RetinaNet: ResNet10t only. ResNet10t, the key point (near the paper's gap),
    at :func:`claim_seeds_of` for both kinds, decided before training. ``backbones``: the points nearer
    the teacher, the first one the key point (default :data:`GAP_BACKBONES`)."""
    unknown = [k for k in kinds if k not in GAP_KINDS]
    if unknown:
        raise ValueError(f"the teacher-student gap is planned for {GAP_KINDS}, not {unknown} (Cascade R-CNN shares "
                         "Faster R-CNN's student; its points were never planned)")
    backbones = tuple(backbones)
    if not backbones:
        raise ValueError("backbones: give at least one student backbone nearer the teacher, e.g. ['resnet10t']")
    key_seeds = claim_seeds_of(profile, seeds, claim_seeds)
    out = []
    for kind in kinds:
        student = get_profile(profile).for_kind(kind).student_backbone
        out.append(("teacher", "teacher", Experiment(kind, "teacher", profile, seed=seeds[0])))
        three = ("none", "defeat", "glamd")
        points = [(student, None, False, seeds, three), (f"{student}, warm start", None, True, seeds, three)]
        points += [(b, b, False, key_seeds if b == backbones[0] else seeds[:1],
                    three + (("global",) if b == backbones[0] else ())) for b in backbones if b != student]
        if kind == "retinanet":  # the key point only (the profile's student, where that is it)
            points = [p[:4] + (three,) for p in points if p[0] == backbones[0]]
        for point, backbone, warm, point_seeds, methods in points:
            for s in point_seeds:
                init = Experiment(kind, "none", profile, seed=s) if warm else None
                out += [(point, GAP_ROWS[m], Experiment(kind, m, profile, seed=s, student=backbone, init_from=init))
                        for m in methods]
    return out


# -- the other notebooks' runs ----------------------------------------------------------------------
BOTH_KINDS = ("faster_rcnn", "retinanet")


def calibration_grid(profile: str, grid=None) -> list[tuple[str, float]]:
    """Notebook 00's grid: the one given, else ``calibration.GRID`` (``smoke``: its first and fourth points)."""
    from . import calibration as C

    return [tuple(p) for p in grid] if grid else list(C.GRID[::3] if profile == "smoke" else C.GRID)


def calibration_experiments(profile: str, seeds, kinds=BOTH_KINDS, grid=None) -> list[Experiment]:
    """Notebook 00, first stage: teacher and student at the first seed, and every method at every
    point of :func:`calibration_grid` at the first seed."""
    from . import calibration as C

    grid = calibration_grid(profile, grid)
    baselines = [Experiment(kind, role, profile, seed=seeds[0]) for kind in kinds for role in ("teacher", "none")]
    return baselines + C.grid_experiments(kinds, profile, seed=seeds[0], grid=grid)


def calibration_chosen_experiments(profile: str, seeds, kinds=BOTH_KINDS, chosen=None) -> list[Experiment]:
    """Notebook 00, second stage: each method at its point chosen on val (``chosen``: the first
    stage's choice; None: the choice the profile records, which is what a plan can list before the
    first stage has run) at every seed, the student, and GLAMD's feature term alone at the first seed."""
    import pandas as pd

    from . import calibration as C

    if chosen is None:
        P = get_profile(profile)
        chosen = pd.DataFrame([{"kind": k, "method": m, "loss_form": P.distill_for(k, m).loss_form,
                                "alpha": P.distill_for(k, m).alpha} for k in kinds for m in C.COMPARED_METHODS])
    return (C.chosen_experiments(chosen, kinds, profile, seeds)
            + C.diagnostic_experiments(chosen, kinds, profile, seed=seeds[0]))


def small_models_experiments(profile: str, seeds, kinds=BOTH_KINDS, claim_seeds=None) -> list[Experiment]:
    """Notebook 01 (Table 1): teacher (first seed), student and GLAMD at :func:`claim_seeds_of`, per kind."""
    claimed = claim_seeds_of(profile, seeds, claim_seeds)
    return [Experiment(kind, "teacher", profile, seed=claimed[0]) for kind in kinds] + [
        Experiment(kind, method, profile, seed=s) for kind in kinds for method in ("none", "glamd") for s in claimed]


def error_analysis_experiments(profile: str, seeds, kinds=("retinanet", "faster_rcnn")) -> list[Experiment]:
    """Notebook 06 (Fig. 2): student and GLAMD at every seed, per kind."""
    return [Experiment(kind, method, profile, seed=s) for kind in kinds for method in ("none", "glamd") for s in seeds]


def feature_distance_experiments(profile: str, seed: int = 0, kind: str = "retinanet") -> list[Experiment]:
    """Notebook 07 (Figs. 3-4): the teacher and three students (alone, global mask, GLAMD) at one seed."""
    return [Experiment(kind, "teacher", profile, seed=seed)] + [Experiment(kind, m, profile, seed=seed)
                                                                 for m in ("none", "global", "glamd")]


def feature_distance_seeds_experiments(profile: str, seeds, patch_size: int = 2,
                                       kind: str = "retinanet") -> list[tuple[str, Experiment]]:
    """Notebook 07's second reading as ``(student, experiment)``: GLAMD at ``patch_size`` (02's runs at
    patch 2, where GLAM and the global mask differ at P3-P5 on 128-px images) and the global mask, at
    every seed (inference only, where the runs are cached)."""
    glamd = replace(glamd_setting(profile, kind), patch_size=patch_size)
    return [(name, e) for s in seeds for name, e in (("GLAMD", Experiment(kind, "glamd", profile, seed=s, distill=glamd)),
                                                     ("global mask", Experiment(kind, "global", profile, seed=s)))]


def mask_visualization_experiments(profile: str, kind: str = "retinanet") -> list[Experiment]:
    """Notebook 08 (Fig. 5): the teacher, whose masks it draws."""
    return [Experiment(kind, "teacher", profile)]


# Each notebook's runs at its default parameters, and what a plan cannot list before it runs.
# notebook name -> (function of (profile, seeds) -> experiments, note or "")
def _experiments_of(experiments_with_labels):
    return [e for *_, e in experiments_with_labels]


NOTEBOOK_PLANS = {
    "00_calibration": (lambda p, s: calibration_experiments(p, s) + calibration_chosen_experiments(p, s),
                       "its second stage trains each method at the point chosen on val: listed at the choice the "
                       "profile records; a different choice trains other runs"),
    "01_voc_small_models": (lambda p, s: small_models_experiments(p, s), ""),
    "02_patch_size": (lambda p, s: patch_size_experiments(p, s), ""),
    "03_hyperparameters": (lambda p, s: _experiments_of(hyperparameter_experiments(p, s)), ""),
    "04_defeat_comparison": (lambda p, s: defeat_comparison_experiments(p, s) + _experiments_of(
        defeat_screen_experiments(p, s[0], recorded_glamd_alpha(p))),
        "after the screen, its top variants are confirmed on a second seed: 3 more Faster R-CNN runs, "
        "chosen by the screen's numbers"),
    "05_glam_ablation": (lambda p, s: ablation_experiments(p, s), ""),
    "06_error_analysis": (lambda p, s: error_analysis_experiments(p, claim_seeds_of(p, s)), ""),
    "07_feature_distance": (lambda p, s: feature_distance_experiments(p, s[0])
                            + _experiments_of(feature_distance_seeds_experiments(p, claim_seeds_of(p, s))), ""),
    "08_mask_visualization": (lambda p, s: mask_visualization_experiments(p), ""),
    "09_mask_against_mask": (lambda p, s: [Experiment(k, "teacher", p, seed=s[0]) for k in MASK_KINDS]
                             + _experiments_of(mask_against_mask_experiments(p, claim_seeds_of(p, s))), ""),
    "10_teacher_student_gap": (lambda p, s: _experiments_of(teacher_student_gap_experiments(p, s)), ""),
}


def recorded_glamd_alpha(profile: str, kind: str = "faster_rcnn") -> float | None:
    """Notebook 04's GLAMD alpha at DeFeat's gradient ratio, from notebook 00's committed gradient
    balance (:func:`alpha_matching_defeat`); None where there is none (only the cpu profile is calibrated)."""
    import pandas as pd

    from .runs import RESULTS_DIR

    path = RESULTS_DIR / "00_calibration" / "gradient_balance.csv"
    if profile != "cpu" or not path.exists():
        return None
    return alpha_matching_defeat(pd.read_csv(path), kind)


def notebook_experiments(name: str, profile: str, seeds=None) -> tuple[list[Experiment], str]:
    """The runs notebook ``name`` trains at its default parameters.

    Args:
        name: the notebook (``02_patch_size``, ...; :data:`NOTEBOOK_PLANS` names them).
        profile: the profile's name; ``seeds``: None takes the profile's.

    Returns:
        The experiments, and a note on what the list cannot know before the notebook runs (00's choice
        on val, 04's screen).
    """
    if name not in NOTEBOOK_PLANS:
        raise ValueError(f"no plan for notebook {name!r}; plans exist for {sorted(NOTEBOOK_PLANS)}")
    make, note = NOTEBOOK_PLANS[name]
    return make(profile, list(seeds or get_profile(profile).seeds)), note
