"""Every claim this repository judges, in one list, each in its family -- fixed before the numbers.

A family is one table or figure of the paper (Table 1, Table 2, Table 3, Table 4, Fig. 1, Fig. 2,
Figs. 3-4, Fig. 5) or one of our notebooks (09, 10). A claim's verdict -- **held** / **reversed** /
**inconclusive** -- comes from its paired per-seed difference after Holm within its family, and the
same function computes it for the notebook's claims table and for the README's verdict table, so
one claim has one verdict everywhere.

Holm's m is the number of claims the family lists here, never the number that happen to have data:
a claim short of runs (fewer seeds than planned, a missing row) still counts in m, says so in its
row, and so cannot reshape its neighbours' correction. A claim with one seed is a screen: no
interval, no verdict.

Each claim names the table of its notebook's results folder it reads (``runs.csv`` unless said),
the rows it pairs and the value compared. A *composite* reads several claims of one family as one
statement that holds only if every member holds (Fig. 1's "hardly sensitive" over its band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats

# family -> the notebook (results folder) that states it
FAMILIES = {
    "Table 1": "01_voc_small_models",
    "Table 2": "02_patch_size",
    "Table 3": "04_defeat_comparison",
    "Table 4": "05_glam_ablation",
    "Fig. 1": "03_hyperparameters",
    "Fig. 2": "06_error_analysis",
    "Figs. 3-4": "07_feature_distance",
    "Fig. 5": "08_mask_visualization",
    "09": "09_mask_against_mask",
    "10": "10_teacher_student_gap",
}
# Why a family holds no claim: said wherever the family is listed.
NO_CLAIM = {"Fig. 5": "Fig. 5 shows masks; it states no effect that paired runs could test (notebook 08 draws "
                      "them, notebook 09 measures where they put their weight)"}
ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    """One claim: ``row`` beats ``baseline`` (``direction`` +1; -1: lies below it), paired per seed on
    ``value`` within the rows of ``table`` that ``select`` picks. ``baseline`` None: a one-sample
    claim on the per-seed ``value`` itself (a per-seed slope). ``tolerance_share``: the claim is
    "loses less than this share of the gain of ``baseline`` over ``gain_of``", so its edge is
    ``-share x gain`` (no gain: untestable). ``seeds``: ``"claim"`` (planned at the profile's claim
    seeds) or an int N (the first N of them: a budget's cut, as 09's Cascade R-CNN rows)."""

    family: str
    label: str
    row: str
    baseline: str | None
    direction: int = +1
    paper: str = ""  # the paper's numbers (a reference, never ours)
    paper_delta: float | None = None  # the paper's effect on this claim's scale (a reference), for the plot
    select: tuple[tuple[str, str], ...] = ()
    table: str = "runs"
    column: str = "row"
    value: str = "AP"
    unit: str = "AP"
    tolerance_share: float | None = None
    gain_of: str | None = None
    seeds: str | int = "claim"
    undefined: str = ""  # why a value may be NaN (left out of the pairing, counted in a note); "": NaN is an error
    headline: bool = True  # a line of the README's verdict table (else only in its notebook's claims table)

    @property
    def notebook(self) -> str:
        return FAMILIES[self.family]


@dataclass(frozen=True)
class Composite:
    """A statement over every claim of ``family`` whose label starts with ``prefix``: held if all
    are, reversed if any is (:func:`stats.family_verdict`)."""

    family: str
    label: str
    prefix: str
    paper: str = ""
    paper_delta: float | None = None


def _delta(paper: str) -> float:
    """``"55.76 vs 53.81 (VOC)"`` -> 1.95: the paper's effect from its two numbers."""
    a, b = (float(x.split()[0]) for x in paper.split(" vs "))
    return round(a - b, 4)


def _t1(kind, paper):
    return Claim("Table 1", f"GLAMD student > student, {kind}", "GLAMD student", "student", paper=paper,
                 paper_delta=_delta(paper), select=(("kind", kind),), column="role")


def _t3(kind, paper):
    return Claim("Table 3", f"GLAMD > DeFeat, {kind}", "GLAMD", "DeFeat", paper=paper, paper_delta=_delta(paper),
                 select=(("kind", kind), ("part", "table 3")))


def _t4(label, row, paper):
    return Claim("Table 4", label, row, "none (uniform): feat+cls+loc", paper=paper, paper_delta=_delta(paper))


# Fig. 1's band: the weights' points within x0.5-2 (plans.VERDICT_BAND), each against the default.
FIG1_POINTS = tuple(f"{p} x{m:g}" for p in ("alpha", "beta", "gamma") for m in (0.5, 2.0))
FIG1_SHARE = 0.1  # "hardly sensitive": no point loses more than 10 % of the default's distillation gain

# Fig. 2: the AP each error type costs (adjacent cocoapi bands) and the share of AP kept across it.
ERROR_TYPES = ("C50 - C75", "Loc - C50", "Sim - Loc", "Oth - Sim", "BG - Oth", "FN - BG")
FIG2_KINDS = ("faster_rcnn", "retinanet")

# Figs. 3-4: the FPN levels where notebook 02's patch-2 GLAM splits the map (128 px: P3 16, P4 8, P5 4
# cells; P6 and P7 fit one patch, where GLAM is the global mask by construction: untestable here).
DISTANCE_LEVELS = ("P3", "P4", "P5")

# 09: the mask-against-mask comparisons (recipe_parts.COMPARISONS without Table 3's own, which is read
# from Table 3's family), per detector; Cascade R-CNN trains only the rows that split the recipes.
CASCADE_09_SEEDS = 2  # Cascade R-CNN in 09, the costliest detector: the first two of the profile's claim seeds
_CASCADE_09 = ("GLAMD's feature term beats DeFeat's", "GLAMD's head terms add to GLAMD's feature term",
               "GLAMD's head terms add to DeFeat's feature term", "the hybrid beats GLAMD")


def _09():
    from .recipe_parts import COMPARISONS, TABLE3

    out = []
    for kind in ("faster_rcnn", "retinanet", "cascade_rcnn"):
        for label, row, baseline in COMPARISONS:
            if label == TABLE3 or (kind == "cascade_rcnn" and not label.startswith(_CASCADE_09)):
                continue
            seeds = CASCADE_09_SEEDS if kind == "cascade_rcnn" else "claim"
            out.append(Claim("09", f"{kind}: {label}", row, baseline, select=(("kind", kind),), seeds=seeds,
                             headline=False))
    return tuple(out)


CLAIMS: tuple[Claim, ...] = (
    _t1("faster_rcnn", "55.76 vs 53.81 (VOC)"),
    _t1("retinanet", "78.14 vs 75.57 (VOC)"),
    Claim("Table 2", "patch 7 > global mask", "patch 7", "global mask", paper="40.0 vs 39.3 (patch 30)",
          paper_delta=0.7),
    Claim("Table 2", "AP falls as the patch grows (per-seed slope, global mask = a P3-sized patch)", "slope", None,
          direction=-1, paper="40.0 (7) -> 39.3 (30)", paper_delta=round(-0.7 / 23, 4), table="trend", value="slope",
          unit="AP / cell"),
    _t3("faster_rcnn", "40.8 vs 40.6"),
    _t3("retinanet", "40.0 vs 39.4"),
    _t3("cascade_rcnn", "43.0 vs 42.8"),
    _t4("(a) feature term with GLAM > all terms without", "GLAM: feat", "39.5 vs 38.7"),
    _t4("(a) cls term with GLAM > all terms without", "GLAM: cls", "39.0 vs 38.7"),
    _t4("(a) loc term with GLAM > all terms without", "GLAM: loc", "38.9 vs 38.7"),
    _t4("(b) GLAM > no mask, all terms", "GLAM: feat+cls+loc", "40.0 vs 38.7"),
    *(Claim("Fig. 1", f"hardly sensitive: {p} within -10 % of the gain", p, "default", tolerance_share=FIG1_SHARE,
            gain_of="student", headline=False) for p in FIG1_POINTS),
    *(Claim("Fig. 2", f"{k}: GLAMD loses less AP to {e}", "GLAMD student", "student", direction=-1,
            select=(("kind", k), ("error", e)), table="losses", column="model", value="AP lost",
            headline=False) for k in FIG2_KINDS for e in ERROR_TYPES),
    *(Claim("Fig. 2", f"{k}: GLAMD keeps a larger share of its AP across {e}", "GLAMD student", "student",
            select=(("kind", k), ("error", e)), table="losses", column="model", value="share kept", unit="",
            undefined="the looser band's AP is 0", headline=False) for k in FIG2_KINDS for e in ERROR_TYPES),
    *(Claim("Figs. 3-4", f"{level}: GLAMD (patch 2) is nearer the teacher than the global mask", "GLAMD",
            "global mask", direction=-1, select=(("level", level),), table="distances", column="student",
            value="L1", unit="L1") for level in DISTANCE_LEVELS),
    *_09(),
    *(Claim("10", f"GLAMD > DeFeat at ResNet10t (the key point), {k}", "GLAMD", "DeFeat",
            select=(("kind", k), ("point", "resnet10t"))) for k in ("faster_rcnn", "retinanet")),
)

COMPOSITES: tuple[Composite, ...] = (
    Composite("Fig. 1", "hardly sensitive: every point of alpha, beta, gamma x0.5-2 within -10 % of the gain",
              "hardly sensitive", paper="worst -0.2 AP", paper_delta=-0.2),
    *(Composite("Fig. 2", f"{k}: GLAMD loses less AP to every error type", f"{k}: GLAMD loses less",
                paper="fewer errors of each type (Fig. 2)") for k in FIG2_KINDS),
    *(Composite("Fig. 2", f"{k}: GLAMD keeps a larger share of its AP across every error type", f"{k}: GLAMD keeps",
                paper="") for k in FIG2_KINDS),
)


def family(name: str) -> list[Claim]:
    """The claims of family ``name`` in their fixed order."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; the families are {list(FAMILIES)}")
    return [c for c in CLAIMS if c.family == name]


def _check_unique():
    seen = set()
    for c in CLAIMS:
        if (c.family, c.label) in seen:
            raise ValueError(f"claim {c.family}: {c.label!r} is listed twice")
        seen.add((c.family, c.label))


_check_unique()


def planned_seeds(claim: Claim, profile) -> int:
    """How many seeds ``claim`` was planned at, decided before training (``profile``: a Profile)."""
    claimed = len(profile.verdict_seeds)
    return min(claim.seeds, claimed) if isinstance(claim.seeds, int) else claimed


def _pick(claim: Claim, tables: dict) -> pd.DataFrame:
    """The rows of the claim's table it reads (test split only, where the table has splits)."""
    if claim.table not in tables:
        raise KeyError(f"claim {claim.family}: {claim.label!r} reads table {claim.table!r} of "
                       f"{claim.notebook}, which was not given (given: {sorted(tables)})")
    t = tables[claim.table]
    needed = {c for c, _ in claim.select} | {claim.value, "seed"} | ({claim.column} if claim.baseline else set())
    missing = needed - set(t.columns)
    if missing:
        raise KeyError(f"claim {claim.family}: {claim.label!r}: table {claim.table!r} of {claim.notebook} has no "
                       f"column(s) {sorted(missing)} (it has {list(t.columns)})")
    if "split" in t.columns:
        t = t[t.split == "test"]
    for column, value in claim.select:
        t = t[t[column] == value]
    return t


def differences(claim: Claim, tables: dict) -> pd.Series:
    """The claim's per-seed differences (``row - baseline``; one-sample: the value), indexed by seed.
    A row and seed given twice is an error: it would count twice."""
    t = _pick(claim, tables)
    if claim.baseline is None:
        values = t
    else:
        values = t[t[claim.column].isin([claim.row, claim.baseline])]
    key = ["seed"] if claim.baseline is None else [claim.column, "seed"]
    twice = values.duplicated(key)
    if twice.any():
        raise ValueError(f"claim {claim.family}: {claim.label!r}: more than one value per {key} in table "
                         f"{claim.table!r}: {values.loc[twice, key].values.tolist()}")
    numbers = pd.to_numeric(values[claim.value], errors="coerce")
    if claim.undefined:  # NaN is a legitimate "undefined" here: left out of the pairing
        numbers, values = numbers[numbers.notna()], values[numbers.notna()]
    bad = ~np.isfinite(numbers.astype(float))
    if bad.any():
        raise ValueError(f"claim {claim.family}: {claim.label!r}: {claim.value} is not a finite number at "
                         f"{values.loc[bad, key].values.tolist()} of table {claim.table!r}")
    values = values.assign(**{claim.value: numbers})
    if claim.baseline is None:
        return values.set_index("seed")[claim.value].sort_index()
    wide = values.pivot(index="seed", columns=claim.column, values=claim.value)
    if claim.row not in wide or claim.baseline not in wide:
        return pd.Series(dtype=float)
    return (wide[claim.row] - wide[claim.baseline]).dropna().sort_index()


def _edge(claim: Claim, tables: dict) -> tuple[float, str]:
    """The claim's edge (0, or -share x gain) and, where there is none to test against, why: no gain
    to take a share of, or the table marks the claim's rows ``untestable`` (a reason, e.g. a map that
    fits in one patch at this image size)."""
    picked = _pick(claim, tables)
    if "untestable" in picked and len(picked):
        reasons = picked["untestable"].fillna("").astype(str)
        if (reasons.str.len() > 0).all():
            return float("nan"), f"{reasons.iloc[0]}: untestable here"
    if claim.tolerance_share is None:
        return 0.0, ""
    gain_claim = Claim(claim.family, "gain", claim.baseline, claim.gain_of, table=claim.table, column=claim.column,
                       value=claim.value, select=claim.select)
    gain = differences(gain_claim, tables)
    mean = float(gain.mean()) if len(gain) else float("nan")
    if not math.isfinite(mean) or mean <= 0:
        return float("nan"), (f"no distillation gain to lose a share of ({claim.baseline} - {claim.gain_of} = "
                              f"{mean:+.2f} {claim.unit}, n = {len(gain)}): untestable here")
    return -claim.tolerance_share * mean, ""


def judge(family_name: str, tables: dict, profile=None, alpha: float = ALPHA) -> pd.DataFrame:
    """Every claim of the family, in its fixed order: n (and the planned n when ``profile`` is given),
    mean, 95 % CI, edge, p, Holm p over the family's m and the verdict (:func:`stats.claim_verdicts`),
    with a note wherever the row is short of what was planned or cannot be tested. ``tables``:
    {table name: DataFrame} of the family's notebook (:func:`read_tables`)."""
    stats.check_alpha(alpha)
    members = family(family_name)
    rows = []
    for c in members:
        d = differences(c, tables)
        edge, why = _edge(c, tables)
        planned = planned_seeds(c, profile) if profile is not None else None
        notes = [why] if why else []
        if c.undefined:
            undefined = int(_pick(c, tables)[c.value].isna().sum())
            if undefined:
                notes.append(f"{undefined} value(s) undefined ({c.undefined}), left out")
        if not len(d):
            notes.append("no paired runs")
        elif len(d) < 2:
            notes.append("n = 1: a screen, no interval")
        elif not why and float(np.std(d.to_numpy())) == 0.0:
            notes.append("every seed gives the same difference: no spread, no t test")
        if planned is not None and len(d) < planned:
            notes.append(f"n = {len(d)} of {planned} planned")
        mean = stats.paired_ci(d.to_numpy())[0] if len(d) else float("nan")
        rows.append({"family": c.family, "m": len(members), "claim": c.label, "row": c.row, "baseline": c.baseline,
                     "direction": c.direction, "paper": c.paper, "paper_delta": c.paper_delta, "unit": c.unit,
                     "n": len(d), "planned": planned, "mean": mean, "edge": edge, "seeds": [int(s) for s in d.index],
                     "diffs": [float(x) for x in d], "note": "; ".join(notes), "untestable": bool(why)})
    frame = pd.DataFrame(rows)
    testable = frame[~frame.untestable]
    judged = stats.claim_verdicts(testable, dict(zip(testable.claim, testable.direction)),
                                  against=dict(zip(testable.claim, testable.edge)), alpha=alpha, row="claim",
                                  m=len(members)).set_index("claim")
    out = []
    for r in rows:  # the family's order; an untestable claim keeps its CI (descriptive) and has no test
        if r["untestable"]:
            low, high = stats.paired_ci(r["diffs"])[1:] if r["diffs"] else (float("nan"), float("nan"))
            out.append(r | {"ci_low": low, "ci_high": high, "p": float("nan"), "p_holm": float("nan"),
                            "verdict": "untestable here"})
        else:
            j = judged.loc[r["claim"]]
            out.append(r | {k: j[k] for k in ("ci_low", "ci_high", "p", "p_holm", "verdict")})
    columns = ["family", "m", "claim", "row", "baseline", "direction", "paper", "paper_delta", "unit", "n", "planned",
               "mean", "ci_low", "ci_high", "edge", "p", "seeds", "diffs", "note", "p_holm", "verdict"]
    return pd.DataFrame(out, columns=columns)


def composites(judged: pd.DataFrame) -> pd.DataFrame:
    """The composite statements over ``judged`` (one or more families' :func:`judge` output): each with
    its family verdict, its members' count and the member that goes worst (lowest margin to its edge
    on the claim's side), whose CI it shows."""
    rows = []
    for comp in COMPOSITES:
        members = judged[(judged.family == comp.family) & judged.claim.str.startswith(comp.prefix)]
        if members.empty:
            continue
        margin = (members["mean"] - members["edge"].fillna(0)) * members["direction"]
        worst = members.loc[margin.fillna(-np.inf).idxmin()]
        rows.append({"family": comp.family, "m": int(members.m.iloc[0]), "claim": comp.label, "paper": comp.paper,
                     "paper_delta": comp.paper_delta,
                     "members": len(members),
                     "verdict": ("untestable here" if (members.verdict == "untestable here").all()
                                 else stats.family_verdict(members.verdict)),
                     "counts": ", ".join(f"{v} {int((members.verdict == v).sum())}" for v in
                                         ("held", "reversed", "inconclusive", "untestable here")
                                         if (members.verdict == v).any()),
                     "worst": worst["claim"], "n": worst["n"], "mean": worst["mean"], "ci_low": worst["ci_low"],
                     "ci_high": worst["ci_high"], "edge": worst["edge"], "p_holm": worst["p_holm"],
                     "unit": worst["unit"]})
    return pd.DataFrame(rows)


def headline(judged: pd.DataFrame) -> pd.DataFrame:
    """The README's verdict table: the headline claims and the composites, each with its family and m;
    a family with neither (09) gets one line counting its verdicts."""
    heads = {(c.family, c.label) for c in CLAIMS if c.headline}
    claims = judged[[(f, c) in heads for f, c in zip(judged.family, judged.claim)]].assign(members=1, worst="")
    comps = composites(judged)
    summaries = []
    for fam, members in judged.groupby("family", sort=False):
        if fam in set(claims.family) or fam in set(comps.get("family", [])):
            continue
        summaries.append({"family": fam, "m": int(members.m.iloc[0]), "claim": f"{len(members)} claims of our own "
                          f"(see {FAMILIES[fam]})", "paper": "", "members": len(members), "verdict": "; ".join(
                              f"{v} {int((members.verdict == v).sum())}" for v in stats.VERDICTS + ("untestable here",)
                              if (members.verdict == v).any()), "n": int(members.n.max()), "mean": float("nan"),
                          "ci_low": float("nan"), "ci_high": float("nan"), "edge": 0.0, "p_holm": float("nan"),
                          "unit": ""})
    out = pd.concat([claims, comps, pd.DataFrame(summaries)], ignore_index=True)
    order = {f: i for i, f in enumerate(FAMILIES)}
    return out.sort_values("family", key=lambda f: f.map(order), kind="stable").reset_index(drop=True)


# -- the tables each notebook writes for its claims --------------------------------------------------
def tables_needed(family_name: str) -> list[str]:
    return sorted({c.table for c in family(family_name)})


def read_tables(family_name: str, results_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables the family's claims read, from ``results_dir/<notebook>/<table>.csv``; a missing,
    empty or unreadable file is an error naming it."""
    folder = Path(results_dir) / FAMILIES[family_name]
    out = {}
    for name in tables_needed(family_name):
        path = folder / f"{name}.csv"
        try:
            out[name] = pd.read_csv(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: missing; family {family_name} reads it (run notebook "
                                    f"{FAMILIES[family_name]} to write it)") from None
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a readable csv ({type(error).__name__}: {str(error).strip()[:200]})") from None
    return out


def markdown(judged: pd.DataFrame) -> str:
    """A claims table as markdown: claim, paper, Δ [95 % CI] n, Holm p (m), verdict, note."""
    lines = ["| family | claim | paper (reference) | ours: Δ [95 % CI], n | edge | Holm p (m) | verdict | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in judged.iterrows():
        effect = "-" if not r["n"] else stats.row_ci_text(r, unit=r["unit"])
        edge = "" if not r["edge"] or (isinstance(r["edge"], float) and math.isnan(r["edge"])) else f"{r['edge']:+.2f}"
        holm = "-" if math.isnan(r["p_holm"]) else f"{r['p_holm']:.3f}"
        lines.append(f"| {r['family']} | {r['claim']} | {r['paper'] or '(ours)'} | {effect} | {edge} | {holm} "
                     f"(m = {int(r['m'])}) | **{r['verdict']}** | {r.get('note', '') or ''} |")
    return "\n".join(lines) + "\n"
