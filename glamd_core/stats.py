"""Effects as paired per-seed differences: the one way every experiment notebook states them.

Runs with the same seed share their initialisation and data order, so the difference of two rows
at the same seed removes most of the seed-to-seed spread that separate means would carry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAIRED_COLUMNS = ["row", "baseline", "n", "mean", "std", "agree", "per_seed"]


def paired_differences(frame: pd.DataFrame, baseline, row: str = "row", metric: str = "AP",
                       seed: str = "seed") -> pd.DataFrame:
    """For every value of ``row`` in ``frame`` other than ``baseline``: ``metric(row, s) -
    metric(baseline, s)`` over the seeds ``s`` both have, summarised as n, mean, std (NaN for n = 1),
    ``agree`` (how many seeds' differences share the sign of the mean; a zero difference agrees with
    nothing) and ``per_seed`` ({seed: difference}). Rows keep their order of first appearance."""
    for column in (row, metric, seed):
        if column not in frame:
            raise KeyError(f"paired_differences needs a {column!r} column; the frame has {list(frame.columns)}")
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
        mean = float(diffs.mean()) if len(diffs) else float("nan")
        out.append({row: name, "baseline": baseline, "n": len(diffs), "mean": mean,
                    "std": float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan"),
                    "agree": int((np.sign(diffs) == np.sign(mean)).sum()) if mean else 0,
                    "per_seed": {int(s): round(float(d), 2) for s, d in diffs.items()}})
    columns = [row if c == "row" else c for c in PAIRED_COLUMNS]
    return pd.DataFrame(out, columns=columns)


def effect_text(mean: float, std: float, n: int, agree: int, unit: str = "AP") -> str:
    """One paired effect as a sentence fragment, e.g. ``+3.54 ± 0.54 AP (3/3 seeds agree)``."""
    n, agree = int(n), int(agree)
    spread = f" ± {std:.2f}" if n > 1 and not np.isnan(std) else ""
    return f"{mean:+.2f}{spread} {unit} ({agree}/{n} seeds agree in sign)"


def per_seed_trend(frame: pd.DataFrame, x: str, metric: str = "AP", seed: str = "seed") -> pd.DataFrame:
    """Per seed, how ``metric`` moves with ``x``: the least-squares ``slope`` (metric per unit of x)
    and the Spearman ``rank_correlation`` (Pearson's r of the average ranks; -1: strictly falling).
    Rows with ``x`` or ``metric`` missing are left out; fewer than two distinct x give NaN."""
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
               row: str = "variant", side: str = "side", seed: str = "seed") -> pd.DataFrame:
    """A one-component-at-a-time screen between two methods, read at one seed: each variant's
    ``change`` of ``metric`` against the baseline row of its own side, and that change as a share of
    the gap between the two baselines (``gap share``: 1 = the whole gap closed). ``leader`` /
    ``trailer``: ``(side, baseline row)`` of the method ahead and of the one behind; a variant of the
    leader closes the gap by losing, one of the trailer by gaining. A zero gap gives NaN shares."""
    at = frame[frame[seed] == at_seed]
    base = {s: at[at[row] == name][metric].iloc[0] for s, name in (leader, trailer)}
    gap = base[leader[0]] - base[trailer[0]]
    out = at[~at[row].isin([leader[1], trailer[1]])].copy()
    out["change"] = out[metric] - out[side].map(base)
    toward = np.where(out[side] == leader[0], -out["change"], out["change"])
    out["gap share"] = toward / gap if gap else np.nan
    out["gap"] = gap
    return out[[row, side, seed, metric, "change", "gap", "gap share"]]


def confirmed_shares(moves: pd.DataFrame, variants, threshold: float = 0.5, row: str = "variant",
                     seed: str = "seed") -> pd.DataFrame:
    """Screen variants read over every seed they ran at (rows of :func:`gap_shares`, one per variant
    and seed): ``n`` seeds, ``mean_share``, ``per_seed`` ({seed: share}) and a ``verdict`` --
    ``carries`` when the share exceeds ``threshold`` at every seed, ``narrows`` when it is below
    ``-threshold`` at every seed (taking the component away widens the gap), else empty. One seed is
    a screen, not a confirmation: it never gets a verdict."""
    out = []
    for name in variants:
        shares = moves[moves[row] == name].set_index(seed)["gap share"]
        confirmed = len(shares) > 1
        verdict = ("carries" if confirmed and (shares > threshold).all() else
                   "narrows" if confirmed and (shares < -threshold).all() else "")
        out.append({row: name, "n": len(shares), "mean_share": float(shares.mean()),
                    "per_seed": {int(k): float(v) for k, v in shares.items()}, "verdict": verdict})
    return pd.DataFrame(out, columns=[row, "n", "mean_share", "per_seed", "verdict"])

