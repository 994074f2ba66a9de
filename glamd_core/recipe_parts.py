"""Mask against mask (notebooks/09): which part of a recipe carries Table 3's result.

Table 3 compares recipes: DeFeat as released against GLAMD. They differ in their masks (ground-truth
boxes against teacher attention), their head terms (GLAMD has them, DeFeat's chosen setting none)
and their adapters. The rows of :func:`glamd_core.plans.mask_against_mask_experiments` change one
part at a time; each comparison here is a claim "row beats baseline", judged per seed in the 09 family
of :mod:`glamd_core.claims` (Table 3's own comparison in Table 3's family) and read by
:func:`glamd_core.readings.parts_lines`.

Table 3's gap splits exactly into two measured parts:
GLAMD - DeFeat = (GLAMD - GLAMD's feature term alone) + (GLAMD's feature term alone - DeFeat),
i.e. what GLAMD's head terms add, plus GLAMD's feature term (mask and adapter) against DeFeat's.
"""

from __future__ import annotations

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
