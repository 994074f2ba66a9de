"""Mask against mask (notebooks/09): which part of a recipe carries Table 3's result.

Table 3 compares recipes: DeFeat as released against GLAMD. They differ in their masks (ground-truth
boxes against teacher attention), their head terms (GLAMD has them, DeFeat's chosen setting none)
and their adapters. The rows of :func:`glamd_core.plans.mask_against_mask_experiments` change one part
at a time; here each comparison is a claim "row beats baseline", paired per seed, with its 95 % CI
and a Holm-corrected verdict within one detector's family (:func:`glamd_core.stats.claim_verdicts`).

Table 3's gap splits exactly into two measured parts:
GLAMD - DeFeat = (GLAMD - GLAMD's feature term alone) + (GLAMD's feature term alone - DeFeat),
i.e. what GLAMD's head terms add, plus GLAMD's feature term (mask and adapter) against DeFeat's.
"""

from __future__ import annotations

import pandas as pd

from .stats import claim_verdicts, paired_differences, verdict_text

HYBRID = "hybrid: DeFeat's feature term + GLAMD's head terms"

# (claim, row, baseline): each claim reads "row beats baseline" (direction +1).
COMPARISONS = (
    ("Table 3: GLAMD beats DeFeat (recipe against recipe)", "GLAMD", "DeFeat"),
    ("in GLAMD's recipe, attention masks beat box masks", "GLAMD", "GLAMD, box mask"),
    ("in DeFeat's recipe, a GLAM foreground beats the boxes", "DeFeat, GLAM foreground", "DeFeat"),
    ("GLAMD's feature term beats DeFeat's (both feature-only: mask and adapter)", "GLAMD, feature term only", "DeFeat"),
    ("GLAMD's head terms add to GLAMD's feature term", "GLAMD", "GLAMD, feature term only"),
    ("GLAMD's head terms add to DeFeat's feature term", HYBRID, "DeFeat"),
    ("the hybrid beats GLAMD", HYBRID, "GLAMD"),
    ("patch 2 beats patch 7 in GLAMD", "GLAMD, patch 2", "GLAMD"),
)
TABLE3 = COMPARISONS[0][0]
MASK_CLAIMS = (COMPARISONS[1][0], COMPARISONS[2][0])
PARTS = {"GLAMD's head terms": COMPARISONS[4][0], "the feature term (mask and adapter)": COMPARISONS[3][0]}


def compare(frame: pd.DataFrame, row: str = "row", metric: str = "AP") -> pd.DataFrame:
    """Every comparison of :data:`COMPARISONS` whose two rows ``frame`` holds, per ``kind``: paired
    per seed (one run per row, kind and seed), with its 95 % CI and its verdict after Holm within the
    kind's family. One row per (kind, claim)."""
    out = []
    for kind, runs in frame.groupby("kind", sort=False):
        present = set(runs[row])
        paired = []
        for claim, a, b in COMPARISONS:
            if {a, b} <= present:
                d = paired_differences(runs[runs[row].isin([a, b])], b, row=row, metric=metric)
                paired.append(d.assign(claim=claim))
        if paired:
            verdicts = claim_verdicts(pd.concat(paired, ignore_index=True), +1, row="claim")
            out.append(verdicts.assign(kind=kind))
    if not out:
        raise ValueError(f"no comparison of glamd_core.recipe_parts.COMPARISONS has both its rows in the frame "
                         f"(rows: {sorted(set(frame[row]))})")
    cols = ["kind", "claim", row, "baseline"]
    table = pd.concat(out, ignore_index=True)
    return table[cols + [c for c in table.columns if c not in cols]]


def reading(claims: pd.DataFrame) -> list[str]:
    """Per kind, what carries Table 3's result, stated only where a CI excludes zero: the parts of
    the gap (head terms, feature term) whose interval lies on the gap's side, and whether labels or
    attention win as masks inside both recipes. ``claims``: the output of :func:`compare`."""
    lines = []
    for kind, c in claims.groupby("kind", sort=False):
        c = c.set_index("claim")
        said = []
        if TABLE3 in c.index:
            gap = c.loc[TABLE3]
            said.append(f"Table 3 (GLAMD - DeFeat): {verdict_text(gap)}.")
            sign = 1 if gap["mean"] >= 0 else -1
            carriers = [name for name, claim in PARTS.items() if claim in c.index
                        and (c.loc[claim, "ci_low"] > 0 if sign > 0 else c.loc[claim, "ci_high"] < 0)]
            parts = "; ".join(f"{name}: {verdict_text(c.loc[claim])}" for name, claim in PARTS.items() if claim in c.index)
            if parts:
                side = "GLAMD's" if sign > 0 else "DeFeat's"
                said.append(f"Its parts -- {parts}. Carried (95 % CI on {side} side of zero) by: "
                            + (", ".join(carriers) if carriers else "no part detectably") + ".")
        masks = [c.loc[m, "verdict"] for m in MASK_CLAIMS if m in c.index]
        if len(masks) == 2:
            if masks == ["reversed", "reversed"]:
                said.append("Masks: the box mask wins inside both recipes -- labels beat teacher attention on this data.")
            elif masks == ["held", "held"]:
                said.append("Masks: attention wins inside both recipes -- GLAM beats the labels on this data.")
            else:
                said.append(f"Masks: no consistent winner (inside GLAMD: {masks[0]}; inside DeFeat: {masks[1]}).")
        lines.append(f"- **{kind}**: " + " ".join(said))
    return lines
