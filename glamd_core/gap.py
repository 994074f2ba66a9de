"""The teacher-student gap (notebooks/10): how each method's gain, and GLAMD - DeFeat, move as the
student nears its teacher.

The paper's students sit 3.5-4.1 AP below their teachers (Table 1: ResNet34 -> ResNet18 on VOC); the
cpu profile's RegNetX-200MF students, trained from scratch for 12 epochs against 24-epoch teachers, sit
tens of AP below. Far behind, imitating the teacher's features inside the boxes can work as plain
representation learning, so Table 3's two-stage verdict may be the testbed's rather than GLAMD's. The
points of :func:`glamd_core.plans.teacher_student_gap_experiments` span the gap: the profile's student,
the same student warm-started from its own finished student-alone run (24 epochs in all), ResNet10t
and ResNet18. Every point keeps the profile's chosen distillation settings (not re-tuned).

A point's gap is the teacher's test AP minus its student-alone AP (mean over seeds); a method's gain
is its AP minus the student alone at the same point and seed (paired), and GLAMD - DeFeat is paired
too; each with its 95 % CI (:mod:`glamd_core.stats`). The claims -- GLAMD beats DeFeat at the key
point, ResNet10t, at fixed seeds -- are judged in the 10 family (:mod:`glamd_core.claims`); the other
points are descriptive. The paper's gap (3.5-4.1, Table 1) is on an unstated metric: the reading
(:func:`glamd_core.readings.gap_lines`) gives every gap in COCO AP and in AP50.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import paired_differences

STUDENT, GLAMD, DEFEAT = "student alone", "GLAMD", "DeFeat"


def gains(frame: pd.DataFrame, teacher_ap: dict) -> pd.DataFrame:
    """Per (kind, point): the gap (``teacher_ap[kind]`` minus the student alone's mean AP), and each
    method's paired gain over the student alone plus GLAMD - DeFeat, each with n, mean and 95 % CI.
    ``frame``: one run per (kind, point, row, seed) with columns kind, point, row (``student alone`` /
    ``DeFeat`` / ``GLAMD`` / others), seed, AP. One row per (kind, point, effect), points by gap."""
    out = []
    for (kind, point), runs in frame.groupby(["kind", "point"], sort=False):
        if kind not in teacher_ap:
            raise ValueError(f"no teacher AP for {kind!r} (teacher_ap has {sorted(teacher_ap)})")
        alone = runs[runs.row == STUDENT]
        if alone.empty:
            raise ValueError(f"{kind} point {point!r} has no {STUDENT!r} row: its gap and gains need it")
        gap = float(teacher_ap[kind] - alone.AP.mean())
        effects = paired_differences(runs, STUDENT).assign(effect=lambda d: "gain of " + d.row)
        if {GLAMD, DEFEAT} <= set(runs.row):
            head = paired_differences(runs[runs.row.isin([GLAMD, DEFEAT])], DEFEAT)
            effects = pd.concat([effects, head.assign(effect=f"{GLAMD} - {DEFEAT}")], ignore_index=True)
        out.append(effects.assign(kind=kind, point=point, gap=gap, student_AP=float(alone.AP.mean()),
                                  teacher_AP=float(teacher_ap[kind])))
    table = pd.concat(out, ignore_index=True)
    cols = ["kind", "point", "gap", "teacher_AP", "student_AP", "effect"]
    table = table[cols + [c for c in table.columns if c not in cols + ["row", "baseline"]]]
    return table.sort_values(["kind", "gap"], ascending=[True, False], kind="stable").reset_index(drop=True)


def point_summary(table: pd.DataFrame, table_map50: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, point): the gap in COCO AP (``table``, :func:`gains` on AP) and in VOC07
    mAP@0.5 (``table_map50``, the same on ``VOC07_mAP50``: the paper's Table 1 is VOC), and GLAMD -
    DeFeat in AP with its 95 % CI and n (descriptive: the claims are judged in the 10 family,
    :mod:`glamd_core.claims`)."""
    head = f"{GLAMD} - {DEFEAT}"
    at50 = table_map50.drop_duplicates(["kind", "point"]).set_index(["kind", "point"]).gap
    rows = []
    for (kind, point), part in table.groupby(["kind", "point"], sort=False):
        effect = part[part.effect == head]
        e = effect.iloc[0] if len(effect) else None
        rows.append({"kind": kind, "point": point, "gap_AP": float(part.gap.iloc[0]),
                     "gap_mAP50": float(at50.get((kind, point), float("nan"))),
                     "n": 0 if e is None else int(e["n"]), "mean": np.nan if e is None else float(e["mean"]),
                     "ci_low": np.nan if e is None else float(e["ci_low"]),
                     "ci_high": np.nan if e is None else float(e["ci_high"])})
    return pd.DataFrame(rows)
