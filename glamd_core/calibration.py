"""The same tuning budget for every distillation method, chosen on val (``notebooks/00_calibration``).

Each compared method -- ``global`` (Zhang & Ma's masks), ``glamd`` and ``defeat`` -- is trained at
the same grid of (loss form, feature weight alpha) points, one seed each: the authors' reference
form at its published constants x1 / x3, and our normalised form at alpha 0.3 / 1. The head weights
beta / gamma stay at 1 (the published constants in the reference form). Per detector
kind, the point with the best **val** AP is each method's choice; the chosen points are then run
with every seed and reported on **test**. One diagnostic runs at GLAMD's chosen point: GLAMD with its
feature term alone (beta = gamma = 0), which made students worse before this calibration. (The
uniform mask, the paper's "w/o GLAM", belongs to the GLAM ablation of Table 4.)

Why alpha alone: it scales the term whose gradient the measurements showed out of balance (the
feature imitation term); searching beta / gamma as well would triple the budget.

Why these four points: measured at initialisation, the feature term's gradient on backbone + FPN is
0.1-0.6x the detection loss's in the reference form at x1, and 5-7x (GLAMD) / ~3x (DeFeat) in the
normalised form at alpha 1; the four points span that range (about 0.1x to 7x) in steps of about 3.
A six-point grid (adding reference x0.3 and normalised 0.1, each next to a point already in the
grid on that scale) would take about 2 h of runs at the cpu profile on 2 cores (from measured epoch
times), over the 90 min budget.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from .distill import DistillConfig
from .experiments import Experiment, run_all
from .profiles import get_profile
from .data.splits import splits

COMPARED_METHODS = ("global", "glamd", "defeat")
GRID: tuple[tuple[str, float], ...] = (
    ("reference", 1.0), ("reference", 3.0), ("normalised", 0.3), ("normalised", 1.0),
)


def grid_experiments(kinds, profile: str, seed: int = 0, methods=COMPARED_METHODS, grid=GRID) -> list[Experiment]:
    """Every (kind, method, grid point) at one seed; the same grid for every method."""
    if "val" not in splits(get_profile(profile)):
        raise ValueError(f"profile {profile!r} has no val split to choose settings on (real VOC / COCO: the "
                         "paper profiles distil with the published settings); calibrate on a profile with one")
    return [Experiment(kind, method, profile, seed=seed, distill=DistillConfig(method, loss_form=form, alpha=alpha))
            for kind in kinds for method in methods for form, alpha in grid]


def setting_of(config: DistillConfig) -> str:
    """A grid point's label, e.g. ``reference x3`` / ``normalised a=0.3``."""
    if config.loss_form == "reference":
        return f"reference x{config.alpha:g}"
    return f"normalised a={config.alpha:g}"


def choose(grid_frame: pd.DataFrame) -> pd.DataFrame:
    """Each (kind, method)'s best grid point by val AP: a frame with columns kind, method,
    loss_form, alpha, val AP. ``grid_frame``: ``results_frame(..., split="val")`` of the grid runs
    with ``loss_form`` and ``alpha`` columns added. Ties go to the earlier grid point."""
    if (grid_frame.split != "val").any():
        raise ValueError("settings are chosen on the val split only; pass results_frame(..., split='val')")
    best = grid_frame.loc[grid_frame.groupby(["kind", "method"], sort=False).AP.idxmax()]
    return best[["kind", "method", "loss_form", "alpha", "AP"]].rename(columns={"AP": "val AP"}).reset_index(drop=True)


def chosen_config(chosen: pd.DataFrame, kind: str, method: str) -> DistillConfig:
    row = chosen[(chosen.kind == kind) & (chosen.method == method)].iloc[0]
    return DistillConfig(method, loss_form=row.loss_form, alpha=float(row.alpha))


def diagnostic_experiments(chosen: pd.DataFrame, kinds, profile: str, seed: int = 0) -> list[Experiment]:
    """GLAMD with its feature term alone (beta = gamma = 0), at GLAMD's chosen point."""
    return [Experiment(kind, "glamd", profile, seed=seed, distill=replace(chosen_config(chosen, kind, "glamd"),
                                                                         beta=0.0, gamma=0.0))
            for kind in kinds]


def chosen_experiments(chosen: pd.DataFrame, kinds, profile: str, seeds, methods=COMPARED_METHODS) -> list[Experiment]:
    """Every compared method at its chosen point, plus the student alone, at every seed."""
    out = [Experiment(kind, "none", profile, seed=s) for kind in kinds for s in seeds]
    out += [Experiment(kind, m, profile, seed=s, distill=chosen_config(chosen, kind, m))
            for kind in kinds for m in methods for s in seeds]
    return out


def settings_frame(experiments, results, split: str) -> pd.DataFrame:
    """``results_frame`` of ``results`` on ``split`` with each run's loss form, alpha and label."""
    from .experiments import results_frame

    frame = results_frame(results, split=split)
    configs = [None if e.method in ("none", "teacher") else e.distill_config() for e in experiments]
    frame["loss_form"] = [c.loss_form if c else "-" for c in configs]
    frame["alpha"] = [c.alpha if c else float("nan") for c in configs]
    frame["setting"] = [setting_of(c) if c else "-" for c in configs]
    return frame


def gradient_balance(frame: pd.DataFrame, runs_dir=None) -> pd.DataFrame:
    """Per run and epoch, each distillation term's gradient norm on the student's backbone + FPN
    relative to the detection loss's (the ``grad_norm_*`` columns each run logs in ``metrics.csv``;
    epoch means of the probed iterations). Long format: run, kind, method, setting, epoch, term, ratio."""
    from .runs import RUNS_DIR

    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    rows = []
    for r in frame.itertuples():
        metrics = pd.read_csv(f"{runs_dir}/{r.run}/metrics.csv")
        if "grad_norm_detection" not in metrics:
            continue
        for col in (c for c in metrics if c.startswith("grad_norm_distill_")):
            ratio = metrics[col] / metrics["grad_norm_detection"]
            rows += [{"run": r.run, "kind": r.kind, "method": r.method, "setting": getattr(r, "setting", "-"),
                      "epoch": int(e), "term": col.removeprefix("grad_norm_distill_"), "ratio": float(v)}
                     for e, v in zip(metrics.epoch, ratio)]
    return pd.DataFrame(rows, columns=["run", "kind", "method", "setting", "epoch", "term", "ratio"])


def grid_settings(grid=GRID) -> list[str]:
    """The grid's labels, in grid order."""
    return [setting_of(DistillConfig(loss_form=form, alpha=alpha)) for form, alpha in grid]


def train_grid(experiments: list[Experiment], workers=None, data_root=None) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """00's first stage (:func:`plans.calibration_experiments`: teachers and students alone, then the
    grid), trained or fetched. Returns the baselines' results, the grid's runs on val
    (:func:`settings_frame`) and each method's choice (:func:`choose`)."""
    results = run_all(experiments, workers=workers, data_root=data_root)
    grid = [(e, r) for e, r in zip(experiments, results) if e.method in COMPARED_METHODS]
    grid_val = settings_frame([e for e, _ in grid], [r for _, r in grid], split="val")
    baselines = [r for e, r in zip(experiments, results) if e.method not in COMPARED_METHODS]
    return baselines, grid_val, choose(grid_val)


def _feature_term_alone(exp: Experiment) -> bool:
    return exp.method == "glamd" and exp.distill is not None and exp.distill.beta == 0 == exp.distill.gamma


def train_chosen(experiments: list[Experiment], workers=None, data_root=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """00's second stage (:func:`plans.calibration_chosen_experiments`), trained or fetched. Returns the
    chosen points and the students alone on test, and the diagnostic (GLAMD's feature term alone, from
    :func:`diagnostic_experiments`) on val and test, labelled ``variant``."""
    results = run_all(experiments, workers=workers, data_root=data_root)
    diagnostic = [_feature_term_alone(e) for e in experiments]

    def runs(of_diagnostic: bool):
        pairs = [(e, r) for e, r, d in zip(experiments, results, diagnostic) if d == of_diagnostic]
        return [e for e, _ in pairs], [r for _, r in pairs]

    test = settings_frame(*runs(False), split="test")
    diagnostics = pd.concat([settings_frame(*runs(True), split=s) for s in ("val", "test")])
    return test, diagnostics.assign(variant="GLAMD feature term only")


def train_minutes(*frames: pd.DataFrame) -> float:
    """Minutes of training of the runs in ``frames``, each run counted once."""
    return round(float(pd.concat(frames).drop_duplicates("run").train_minutes.sum()), 1)
