"""Effects as paired per-seed differences: the one way every experiment notebook states them.

Runs with the same seed share their initialisation and data order, so the difference of two rows
at the same seed removes most of the seed-to-seed spread that separate means would carry.

An effect is stated as its mean with a 95 % confidence interval (t distribution, n - 1 degrees of
freedom), and a claim of the paper gets a verdict from it: **held** (the interval lies on the
paper's side of zero, or of a stated tolerance), **reversed** (on the other side) or
**inconclusive**. Several claims read together (a notebook's family) are corrected with
Holm-Bonferroni, so the chance that any one of them is called wrongly stays at 5 %.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

PAIRED_COLUMNS = ["row", "baseline", "n", "mean", "std", "agree", "per_seed", "ci_low", "ci_high", "p"]
VERDICTS = ("held", "reversed", "inconclusive")


def _check_finite(values, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} must be finite numbers; got {list(np.asarray(values).tolist())}")
    return a


def _check_seed_types(seeds, what: str = "seed") -> None:
    """Seeds of one type: '0' and 0 never pair, so a mix is an error, not an empty result."""
    kinds = {("int" if isinstance(s, Integral) and not isinstance(s, bool) else type(s).__name__) for s in seeds}
    if len(kinds) > 1:
        raise ValueError(f"the {what} column mixes types {sorted(kinds)} (e.g. '0' and 0 never pair); "
                         "give every seed as an integer")


def paired_ci(differences, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of paired per-seed ``differences``: the t interval with n - 1 degrees
    of freedom. Fewer than two differences have no interval (NaN bounds)."""
    d = _check_finite(differences, "paired differences")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan")
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_p(differences, against: float = 0.0) -> float:
    """Two-sided p of the paired t test that the mean difference equals ``against``. NaN -- no test --
    below two differences, and where every difference is the same: with no spread the t statistic is
    undefined, and two identical seeds are no evidence (they would otherwise give p = 0)."""
    d = _check_finite(differences, "paired differences")
    _check_number(against, "against (the claim's edge)")
    if len(d) < 2 or float(d.std(ddof=1)) == 0.0:
        return float("nan")
    return float(_scipy_stats.ttest_1samp(d, against).pvalue)


def _check_number(value, what: str) -> float:
    if isinstance(value, (str, bytes, bool)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def check_alpha(alpha) -> float:
    """A significance level: strictly between 0 and 1."""
    a = _check_number(alpha, "alpha")
    if not 0 < a < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    return a


def holm(pvalues, m: int | None = None) -> np.ndarray:
    """Holm-Bonferroni adjusted p values, in the given order: the i-th smallest of m is multiplied by
    m - i + 1, made monotone, capped at 1. NaN (no test) stays NaN. ``m``: the family's size fixed
    beforehand (claims without a test count in it, as if their p were 1); None: the tests given."""
    try:
        p = np.asarray(pvalues, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"p values must be numbers in [0, 1] (NaN: no test); got {list(pvalues)!r}") from None
    if np.any(np.isinf(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p values lie in [0, 1]; got {p.tolist()}")
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if m is None:
        m = len(tested)
    elif int(m) != m or m < len(tested):
        raise ValueError(f"m (the family's size) must be an integer at least the {len(tested)} tests given, got {m!r}")
    m = int(m)
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(mean: float, p_adjusted: float, direction: int, against: float = 0.0, alpha: float = 0.05) -> str:
    """``held`` when the (adjusted) test rejects ``mean == against`` and the mean lies on the claim's
    side (``direction`` +1: above, -1: below), ``reversed`` when it rejects on the other side, else
    ``inconclusive``. At alpha 0.05 without correction this is "the 95 % CI excludes ``against``".
    No test (``p_adjusted`` NaN) is inconclusive whatever the mean; a test with a NaN mean or edge is
    an error, never a verdict."""
    if direction not in (1, -1):
        raise ValueError(f"direction is +1 (the claim says above) or -1 (below), got {direction!r}")
    check_alpha(alpha)
    try:
        p_adjusted = float(p_adjusted)
    except (TypeError, ValueError):
        raise ValueError(f"p_adjusted must be a p value in [0, 1] or NaN, got {p_adjusted!r}") from None
    if not (math.isnan(p_adjusted) or 0 <= p_adjusted <= 1):
        raise ValueError(f"p_adjusted must be a p value in [0, 1] or NaN (no test), got {p_adjusted!r}")
    if math.isnan(p_adjusted):
        return "inconclusive"
    _check_number(mean, "mean (the paired difference)")
    _check_number(against, "against (the claim's edge)")
    if p_adjusted >= alpha or mean == against:
        return "inconclusive"
    return "held" if (mean - against) * direction > 0 else "reversed"


def claim_verdicts(paired: pd.DataFrame, direction, against=0.0, alpha: float = 0.05, row: str = "row",
                   confidence: float = 0.95, m: int | None = None) -> pd.DataFrame:
    """Verdicts for a family of claims, one per row of :func:`paired_differences`'s output, Holm-
    corrected within the family. ``direction``: +1 / -1 for every row, or {row: +1 / -1} (rows not
    in it are not claims and are left out); ``against``: 0 (an effect's sign) or a tolerance's edge,
    e.g. -0.5 for "drops by less than 0.5 AP", one number or {row: number}. Adds ``against``,
    ``ci_low`` / ``ci_high`` (at ``confidence``), ``p`` (against ``against``), ``p_holm`` and ``verdict``.
    ``m``: the family's size fixed beforehand (:func:`holm`); a row without differences has no test."""
    check_alpha(alpha)
    if row not in paired:
        raise KeyError(f"claim_verdicts: the frame has no {row!r} column (it has {list(paired.columns)})")
    rows = list(paired[row])
    twice = sorted({r for r in rows if rows.count(r) > 1})
    if twice:
        raise ValueError(f"claim(s) {twice} given twice: each would count twice in Holm's m")
    directions = direction if isinstance(direction, dict) else {r: direction for r in rows}
    absent = [r for r in directions if r not in set(rows)]
    if absent:
        raise ValueError(f"claim(s) {absent} named in direction have no row in the frame ({rows}): a claim "
                         "without data must not leave its family unsaid")
    out = paired[paired[row].isin(directions)].copy()
    edges = [against.get(r, 0.0) if isinstance(against, dict) else against for r in out[row]]
    for r, e in zip(out[row], edges):
        _check_number(e, f"the edge of claim {r!r}")
    cis, ps = [], []
    for diffs, edge in zip(out["diffs"] if "diffs" in out else out["per_seed"].map(lambda d: list(d.values())), edges):
        cis.append(paired_ci(diffs, confidence)[1:])
        ps.append(paired_p(diffs, edge))
    out["direction"] = [directions[r] for r in out[row]]
    out["against"] = edges
    out["ci_low"], out["ci_high"] = [c[0] for c in cis], [c[1] for c in cis]
    out["p"] = ps
    out["p_holm"] = holm(ps, m=m) if len(ps) else []
    out["verdict"] = [verdict(m, q, d, e, alpha) for m, q, d, e in zip(out["mean"], out["p_holm"], out["direction"],
                                                                      out["against"])]
    return out.reset_index(drop=True)


def family_verdict(verdicts) -> str:
    """One verdict for a claim that every member of a family must satisfy ("hardly sensitive": every
    point within the band): ``reversed`` if any member is, ``held`` if all are, else ``inconclusive``."""
    verdicts = list(verdicts)
    if "reversed" in verdicts:
        return "reversed"
    return "held" if verdicts and all(v == "held" for v in verdicts) else "inconclusive"


def verdict_text(claim: pd.Series, unit: str = "AP") -> str:
    """One row of :func:`claim_verdicts` as a reader needs it: ``+2.06 AP [-6.34, +10.45], n = 3 ->
    **inconclusive** (Holm p 0.52)``; a tolerance claim names its edge."""
    edge = "" if not claim["against"] else f" against {claim['against']:+.2f} {unit}"
    holm_p = (f" (n = {int(claim['n'])}: no interval, a screen)" if math.isnan(claim["p_holm"])
              else f" (Holm p {claim['p_holm']:.3f}{edge})")
    return f"{row_ci_text(claim, unit)} -> **{claim['verdict']}**{holm_p}"


def ci_text(mean: float, low: float, high: float, n: int, unit: str = "AP") -> str:
    """``+2.06 AP [−1.7, +5.8], n = 3``: a paired effect with its 95 % CI (no interval below n = 2)."""
    interval = "" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"
    return f"{mean:+.2f} {unit}{interval}, n = {int(n)}"


def row_ci_text(row, unit: str = "AP") -> str:
    """:func:`ci_text` of a summary row -- a Series, a dict or an ``itertuples`` row with ``mean``,
    ``ci_low``, ``ci_high`` and ``n``, as :func:`paired_differences` and the claims tables write them."""
    if hasattr(row, "_asdict"):
        row = row._asdict()
    return ci_text(row["mean"], row["ci_low"], row["ci_high"], row["n"], unit)


def paired_differences(frame: pd.DataFrame, baseline, row: str = "row", metric: str = "AP",
                       seed: str = "seed") -> pd.DataFrame:
    """For every value of ``row`` in ``frame`` other than ``baseline``: ``metric(row, s) -
    metric(baseline, s)`` over the seeds ``s`` both have, summarised as n, mean, std (NaN for n = 1),
    ``agree`` (how many seeds' differences share the sign of the mean; a zero difference agrees with
    nothing), ``per_seed`` ({seed: difference, rounded}), the 95 % CI ``ci_low`` / ``ci_high``, the
    two-sided ``p`` against zero and the unrounded ``diffs``. Rows keep their order of first
    appearance. Seeds must be of one type and the metric finite."""
    for column in (row, metric, seed):
        if column not in frame:
            raise KeyError(f"paired_differences needs a {column!r} column; the frame has {list(frame.columns)}")
    _check_seed_types(frame[seed], seed)
    bad = ~np.isfinite(pd.to_numeric(frame[metric], errors="coerce").astype(float))
    if bad.any():
        raise ValueError(f"{metric} must be finite numbers; not at {frame.loc[bad, [row, seed]].values.tolist()} "
                         f"({frame.loc[bad, metric].tolist()})")
    twice = frame.duplicated([row, seed])
    if twice.any():
        raise ValueError(f"more than one run per ({row}, {seed}): {frame.loc[twice, [row, seed]].values.tolist()}; "
                         "pairing needs one value per row and seed")
    values = frame.set_index([row, seed])[metric]
    if baseline not in values.index.get_level_values(0):
        raise ValueError(f"baseline row {baseline!r} is not in the frame's {row!r} column "
                         f"({list(dict.fromkeys(frame[row]))})")
    base = values.loc[baseline]
    out = []
    for name in dict.fromkeys(frame[row]):
        if name == baseline:
            continue
        diffs = (values.loc[name] - base).dropna()
        mean, low, high = paired_ci(diffs.to_numpy())
        out.append({row: name, "baseline": baseline, "n": len(diffs), "mean": mean,
                    "std": float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan"),
                    "agree": int((np.sign(diffs) == np.sign(mean)).sum()) if mean else 0,
                    "per_seed": {int(s): round(float(d), 2) for s, d in diffs.items()},
                    "ci_low": low, "ci_high": high, "p": paired_p(diffs.to_numpy()),
                    "diffs": [float(d) for d in diffs]})
    columns = [row if c == "row" else c for c in PAIRED_COLUMNS] + ["diffs"]
    return pd.DataFrame(out, columns=columns)


def paired_by(frame: pd.DataFrame, by, baseline, row: str = "row", metric: str = "AP",
              seed: str = "seed") -> pd.DataFrame:
    """:func:`paired_differences` within each group of ``by`` (a column or a list of them: each kind, each
    kind and error type, ...), the groups' values as columns, groups in order of first appearance."""
    by = [by] if isinstance(by, str) else list(by)
    out = [paired_differences(part, baseline, row, metric, seed).assign(**dict(zip(by, key)))
           for key, part in frame.groupby(by, sort=False)]
    return pd.concat(out, ignore_index=True)


def effect_text(mean: float, std: float, n: int, agree: int, unit: str = "AP") -> str:
    """One paired effect as a sentence fragment, e.g. ``+3.54 ± 0.54 AP (3/3 seeds agree)``."""
    n, agree = int(n), int(agree)
    spread = f" ± {std:.2f}" if n > 1 and not np.isnan(std) else ""
    return f"{mean:+.2f}{spread} {unit} ({agree}/{n} seeds agree in sign)"


def per_seed_trend(frame: pd.DataFrame, x: str, metric: str = "AP", seed: str = "seed") -> pd.DataFrame:
    """Per seed, how ``metric`` moves with ``x``: the least-squares ``slope`` (metric per unit of x)
    and the Spearman ``rank_correlation`` (Pearson's r of the average ranks; -1: strictly falling).
    Rows with ``x`` or ``metric`` missing are left out; fewer than two distinct x give NaN."""
    twice = frame.duplicated([x, seed])
    if twice.any():
        raise ValueError(f"more than one point per ({x}, {seed}): {frame.loc[twice, [x, seed]].values.tolist()}; "
                         "a trend needs one value per x and seed")
    _check_seed_types(frame[seed], seed)
    rows = []
    for s, g in frame.dropna(subset=[x, metric]).groupby(seed, sort=True):
        distinct = g[x].nunique() > 1 and g[metric].nunique() > 1
        slope = float(np.polyfit(g[x].astype(float), g[metric].astype(float), 1)[0]) if g[x].nunique() > 1 else float("nan")
        rho = float(np.corrcoef(g[x].rank(), g[metric].rank())[0, 1]) if distinct else float("nan")
        rows.append({seed: s, "points": len(g), "slope": slope, "rank_correlation": rho})
    return pd.DataFrame(rows, columns=[seed, "points", "slope", "rank_correlation"])



def tolerated_range(multipliers, differences, tolerance: float) -> tuple[float, float]:
    """How far a setting can move from its default (multiplier 1, difference 0) in either direction
    before some point loses more than ``tolerance``: the widest run of consecutive multipliers
    around 1 whose ``differences`` (each point's paired difference to the default) are all
    ``>= -tolerance``. A point better than the default never ends the run; a NaN difference (or a
    NaN tolerance: no spread to judge by) ends it. Multiplier 1 is the default and anchors the run
    whatever difference is given for it."""
    multipliers, differences = list(multipliers), list(differences)
    if len(multipliers) != len(differences):
        raise ValueError(f"{len(multipliers)} multipliers for {len(differences)} differences; give one difference "
                         "per multiplier")
    _check_finite(multipliers, "multipliers")
    points = sorted(zip(map(float, multipliers), map(float, differences)))
    if not any(m == 1.0 for m, _ in points):
        points = sorted(points + [(1.0, 0.0)])
    at = next(i for i, (m, _) in enumerate(points) if m == 1.0)
    lo = hi = at
    while lo > 0 and points[lo - 1][1] >= -tolerance:
        lo -= 1
    while hi < len(points) - 1 and points[hi + 1][1] >= -tolerance:
        hi += 1
    return points[lo][0], points[hi][0]


def sweep_sensitivity(points: pd.DataFrame, spread: float, bands: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Read a sweep that moves one parameter at a time against its default. ``points``: one row per
    swept point -- ``parameter``, ``multiplier`` (of the default's value), ``row`` (its name) and its
    paired difference to the default, ``mean`` and ``std`` (NaN mean: it shares no seed with the
    default). ``spread``: the default's seed-std.

    Per parameter, in order of first appearance: for each band ``(lo, hi)`` of multipliers (closed)
    the worst point (``worst <band>``: its row, None if the band holds no paired point, with its
    ``mean`` and ``std``); the safe range ``safe from`` / ``safe to`` (:func:`tolerated_range` at
    ``spread``; NaN when ``spread`` is NaN -- one default seed, nothing to judge by); and ``better``,
    the ``(multiplier, mean)`` of points better than the default by more than ``spread``."""
    missing = {"parameter", "multiplier", "row", "mean", "std"} - set(points.columns)
    if missing:
        raise KeyError(f"sweep_sensitivity needs columns {sorted(missing)}; the frame has {list(points.columns)}")
    twice = points.duplicated(["parameter", "multiplier"])
    if twice.any():
        raise ValueError(f"sweep_sensitivity: a point given twice: {points.loc[twice, ['parameter', 'multiplier']].values.tolist()}")
    spread = float(spread)
    points = points.reset_index(drop=True)  # positions, whatever index the caller's frame had
    out = []
    for parameter, group in points.groupby("parameter", sort=False):
        entry = {"parameter": parameter}
        paired = group.dropna(subset=["mean"])
        for band, (lo, hi) in bands.items():
            inside = paired[paired.multiplier.between(lo, hi)]
            worst = inside.loc[inside["mean"].idxmin()] if len(inside) else None
            entry[f"worst {band}"] = None if worst is None else worst["row"]
            entry[f"worst {band} mean"] = np.nan if worst is None else float(worst["mean"])
            entry[f"worst {band} std"] = np.nan if worst is None else float(worst["std"])
        safe = (tolerated_range(group.multiplier, group["mean"], spread) if not np.isnan(spread)
                else (np.nan, np.nan))
        entry["safe from"], entry["safe to"] = safe
        entry["better"] = [(float(m), float(d)) for m, d in zip(group.multiplier, group["mean"]) if d > spread]
        out.append(entry)
    return pd.DataFrame(out)


def gap_shares(frame: pd.DataFrame, at_seed, leader: tuple[str, str], trailer: tuple[str, str], metric: str = "AP",
               row: str = "variant", side: str = "side", seed: str = "seed", min_gap: float = 1.0) -> pd.DataFrame:
    """A one-component-at-a-time screen between two methods, read at one seed: each variant's
    ``change`` of ``metric`` against the baseline row of its own side, and that change as a share of
    the gap between the two baselines (``gap share``: 1 = the whole gap closed). ``leader`` /
    ``trailer``: ``(side, baseline row)`` of the method ahead and of the one behind; a variant of the
    leader closes the gap by losing, one of the trailer by gaining. Where the "leader" is not ahead
    at this seed (``gap`` <= 0) there is no lead to share out, and where the lead is below ``min_gap``
    (AP; default 1.0) a share of it is mostly noise (0.1 AP would turn a 0.5-AP change into a share of
    5): every share is then NaN, and ``gap`` says why. A baseline missing or a (variant, side) given
    twice is an error."""
    min_gap = _check_number(min_gap, "min_gap")
    if min_gap < 0:
        raise ValueError(f"min_gap is a lead in {metric}, at least 0; got {min_gap!r}")
    _check_seed_types(frame[seed], seed)
    at = frame[frame[seed] == at_seed]
    twice = at.duplicated([row, side])
    if twice.any():
        raise ValueError(f"more than one run per ({row}, {side}) at {seed} {at_seed!r}: "
                         f"{at.loc[twice, [row, side]].values.tolist()}")
    base = {}
    for s, name in (leader, trailer):
        hit = at[(at[row] == name) & (at[side] == s)][metric]
        if len(hit) != 1:
            raise ValueError(f"baseline row {name!r} of side {s!r} is not in the frame at {seed} {at_seed!r}")
        base[s] = float(hit.iloc[0])
    gap = base[leader[0]] - base[trailer[0]]
    out = at[~at[row].isin([leader[1], trailer[1]])].copy()
    out["change"] = out[metric] - out[side].map(base)
    toward = np.where(out[side] == leader[0], -out["change"], out["change"])
    out["gap share"] = toward / gap if gap > 0 and gap >= min_gap else np.nan  # no lead worth sharing out
    out["gap"] = gap
    return out[[row, side, seed, metric, "change", "gap", "gap share"]]


def confirmed_shares(moves: pd.DataFrame, variants, threshold: float = 0.5, row: str = "variant",
                     seed: str = "seed") -> pd.DataFrame:
    """Screen variants read over every seed they ran at (rows of :func:`gap_shares`, one per variant
    and seed): ``n`` seeds, ``mean_share``, ``per_seed`` ({seed: share}) and a ``verdict`` --
    ``carries`` when the share exceeds ``threshold`` at every seed, ``narrows`` when it is below
    ``-threshold`` at every seed (taking the component away widens the gap), else empty. One seed is
    a screen, not a confirmation: it never gets a verdict; nor does a variant at a seed where the
    leader is not ahead (``note`` says so). A variant given twice at one seed is an error."""
    _check_seed_types(moves[seed], seed)
    twice = moves.duplicated([row, seed])
    if twice.any():
        raise ValueError(f"a variant read twice at one seed: {moves.loc[twice, [row, seed]].values.tolist()}; a "
                         "seed cannot confirm itself")
    out = []
    for name in variants:
        mine = moves[moves[row] == name].set_index(seed)
        shares = mine["gap share"]
        lead_everywhere = "gap" not in mine or bool((mine["gap"] > 0).all())
        confirmed = len(shares) > 1 and lead_everywhere and shares.notna().all()
        result = ("carries" if confirmed and (shares > threshold).all() else
                  "narrows" if confirmed and (shares < -threshold).all() else "")
        out.append({row: name, "n": len(shares), "mean_share": float(shares.mean()),
                    "per_seed": {int(k): float(v) for k, v in shares.items()}, "verdict": result,
                    "note": "" if lead_everywhere else "the lead changes sign between seeds: no verdict"})
    return pd.DataFrame(out, columns=[row, "n", "mean_share", "per_seed", "verdict", "note"])

