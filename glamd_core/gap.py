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
too; each with its 95 % CI (:mod:`glamd_core.stats`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import claim_verdicts, paired_differences, verdict_text

PAPER_GAP = (3.5, 4.1)  # Table 1: teacher - student AP of the paper's VOC students (reference, not ours)
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


def nearest_paper_point(table: pd.DataFrame, kind: str) -> str:
    """The point of ``kind`` whose gap lies nearest the paper's (the middle of :data:`PAPER_GAP`)."""
    points = table[table.kind == kind].drop_duplicates("point")
    return points.loc[(points.gap - np.mean(PAPER_GAP)).abs().idxmin(), "point"]


def head_to_head(table: pd.DataFrame) -> pd.DataFrame:
    """GLAMD - DeFeat at every point, as claims "GLAMD beats DeFeat" with Holm over each kind's points."""
    rows = table[table.effect == f"{GLAMD} - {DEFEAT}"]
    out = [claim_verdicts(r.reset_index(drop=True), +1, row="point") for _, r in rows.groupby("kind", sort=False)]
    return pd.concat(out, ignore_index=True) if out else rows.assign(verdict=[])


def reading(table: pd.DataFrame) -> list[str]:
    """Per kind: GLAMD - DeFeat along the gap (largest gap first), where its sign changes, and the
    verdict at the point nearest the paper's gap."""
    claims = head_to_head(table)
    lines = []
    for kind, c in claims.groupby("kind", sort=False):
        c = c.sort_values("gap", ascending=False)
        along = "; ".join(f"gap {g:.1f} ({p}): {m:+.2f}" for p, g, m in zip(c.point, c.gap, c["mean"]))
        signs = np.sign(c["mean"].to_numpy())
        flips = [f"between gaps {a:.1f} and {b:.1f}" for a, b, s0, s1 in zip(c.gap, c.gap[1:], signs, signs[1:])
                 if s0 and s1 and s0 != s1]
        near = nearest_paper_point(table, kind)
        at = c.set_index("point").loc[near]
        lines.append(f"- **{kind}**: GLAMD - DeFeat along the gap: {along} AP. Its mean changes sign "
                     + (", ".join(flips) if flips else "nowhere") + f". At the point nearest the paper's gap "
                     f"({PAPER_GAP[0]}-{PAPER_GAP[1]} AP), {near} (gap {at['gap']:.1f}): GLAMD beats DeFeat "
                     f"{verdict_text(at)}.")
    return lines
