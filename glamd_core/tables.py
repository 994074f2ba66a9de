"""The notebooks' summary tables, built from their labelled runs (:func:`glamd_core.study.train`).

A notebook shows a table and plots it; how the table is made from the runs lives here, beside the
claims (:mod:`glamd_core.claims`) and readings (:mod:`glamd_core.readings`) that use the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import paper, plans
from .experiments import summarize
from .stats import confirmed_shares, effect_text, gap_shares, paired_differences, per_seed_trend, row_ci_text

CHECK = {True: "✓", False: "✗"}
ALL_NO_GLAM, STUDENT = "none (uniform): feat+cls+loc", "GLAM: no term (student)"  # Table 4's two baselines
_PAPER_MASK = {"GLAM": "glamd", "none (uniform)": "uniform"}


def label_ablation(frame: pd.DataFrame, experiments) -> pd.DataFrame:
    """Table 4's columns for each run of :func:`plans.ablation_experiments`: its mask, which of the three
    terms it trains with, and its row name (``"GLAM: feat+cls"``; the student: ``"GLAM: no term (student)"``)."""
    terms = [plans.terms_of(e) for e in experiments]
    out = frame.assign(mask=[plans.mask_of(e) if any(t.values()) else "GLAM" for e, t in zip(experiments, terms)],
                       **{name: [t[name] for t in terms] for name in plans.TERMS})
    out["row"] = [f"{m}: {'+'.join(n for n in plans.TERMS if t[n]) or 'no term (student)'}"
                  for m, t in zip(out["mask"], terms)]
    return out


def _paired_text(paired: pd.DataFrame, row: str) -> str:
    return "-" if row not in paired.index else effect_text(*paired.loc[row, ["mean", "std", "n", "agree"]])


def ablation(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Table 4 from :func:`label_ablation`'s frame, in the runs' row order: mask, terms, AP mean / std /
    n, the paired difference against the student and against all three terms without GLAM, and the
    paper's AP (a reference). Also returns the two paired frames (indexed by row)."""
    rows = list(dict.fromkeys(frame.row))
    stats = summarize(frame, by=("row",), metric="AP").set_index("row")
    vs_student = paired_differences(frame, STUDENT).set_index("row")
    vs_no_glam = paired_differences(frame, ALL_NO_GLAM).set_index("row")
    first = frame.drop_duplicates("row").set_index("row")

    def paper_ap(row):
        r = first.loc[row]
        key = (("none", False, False, False) if row == STUDENT
               else (_PAPER_MASK.get(r["mask"]), *map(bool, r[list(plans.TERMS)])))
        return paper.TABLE4_GLAM_ABLATION.get(key, np.nan)

    table = pd.DataFrame([{"row": r, "mask": first.loc[r, "mask"], **{n: CHECK[bool(first.loc[r, n])] for n in plans.TERMS},
                           "AP mean": stats.loc[r, "mean"], "AP std": stats.loc[r, "std"], "n": int(stats.loc[r, "n"]),
                           "paired vs student": _paired_text(vs_student, r),
                           "paired vs all terms w/o GLAM": _paired_text(vs_no_glam, r),
                           "paper AP (COCO, reference)": paper_ap(r)} for r in rows])
    return table, vs_student, vs_no_glam


TABLE1_ROLES = {"none": "student", "glamd": "GLAMD student", "teacher": "teacher"}  # in Table 1's order


def label_small_models(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1's role of each run (student, GLAMD student, teacher), sorted by kind and role."""
    roles = list(TABLE1_ROLES.values())
    return frame.assign(role=frame.method.map(TABLE1_ROLES)).sort_values(
        ["kind", "role"], key=lambda s: s.map(roles.index) if s.name == "role" else s)


def small_models(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1 from :func:`label_small_models`' frame: AP and VOC07 mAP50 (mean, std over seeds) per kind
    and role, beside the paper's VOC AP (a reference value)."""
    table = summarize(frame, by=("kind", "role"), metric="AP").rename(columns={"mean": "AP mean", "std": "AP std"})
    voc = summarize(frame, by=("kind", "role"), metric="VOC07_mAP50")
    table["VOC07 mAP50 mean"] = voc["mean"].values
    table["VOC07 mAP50 std"] = voc["std"].values
    method = {role: m for m, role in TABLE1_ROLES.items()}
    table["paper AP (VOC, reference)"] = [paper.TABLE1_VOC_SMALL_MODELS[(k, method[r])] for k, r in zip(table.kind, table.role)]
    return table


def label_patch_size(frame: pd.DataFrame, experiments) -> pd.DataFrame:
    """Table 2's columns for each run of :func:`plans.patch_size_experiments`: its patch size (NaN
    for the student and the global mask) and its row name (``"patch 7"``, ``"global mask"``, ``"student"``)."""
    patch = [e.distill_config().patch_size if e.method == "glamd" else np.nan for e in experiments]
    return frame.assign(patch_size=patch, row=[f"patch {int(p)}" if e.method == "glamd" else
                                               {"none": "student", "global": "global mask"}[e.method]
                                               for e, p in zip(experiments, patch)])


def patch_size(frame: pd.DataFrame, sides: dict, image_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 2 from :func:`label_patch_size`'s frame: the student, each trained patch size, the paper's
    sizes we do not train (at ``image_size`` a patch of the P3 side or more is the global mask), and the
    global mask; each with its patch / P3 side, the FPN levels it splits (``sides``:
    :func:`analysis.fpn_map_sides`), AP mean / std / n, the paired difference against the global mask
    and the paper's AP (a reference). Also returns the paired frame."""
    p3 = max(sides["P3"])
    sizes = sorted(int(p) for p in frame.patch_size.dropna().unique())
    paired = paired_differences(frame, "global mask")
    stats = summarize(frame, by=("row",), metric="AP").set_index("row")

    def row_of(name, patch, note=""):
        s = stats.loc[name]
        d = paired.set_index("row").loc[name] if name != "global mask" else None
        return {"row": name + note, "patch size": patch, "patch / P3 side": patch / p3 if patch else np.nan,
                "levels split": sum(max(hw) > patch for hw in sides.values()) if patch else np.nan,
                "AP mean": s["mean"], "AP std": s["std"], "n": int(s["n"]),
                "paired vs global mask": "-" if d is None else effect_text(d["mean"], d["std"], d["n"], d["agree"]),
                "paper AP (COCO, reference)": paper.TABLE2_PATCH_SIZE.get(patch, np.nan) if patch else np.nan}

    rows = [row_of("student", None)] + [row_of(f"patch {p}", p) for p in sizes]
    rows += [row_of("global mask", p, note=f" (= patch {p} at {image_size} px)")
             for p in sorted(paper.TABLE2_PATCH_SIZE) if p not in sizes and p >= p3]
    rows.append(row_of("global mask", None))
    return pd.DataFrame(rows), paired


def patch_size_trend(frame: pd.DataFrame, seeds, p3: int) -> pd.DataFrame:
    """Table 2's trend per seed over the sweep's ``seeds``: the slope of AP per cell and the rank
    correlation with the global mask counted as a patch of the P3 side (the claim reads ``slope``),
    and the slope over the trained sizes alone."""
    sweep = frame[frame.seed.isin(seeds)]  # patch 7 has more seeds (the claim's): the trend reads the sweep's
    trend = per_seed_trend(sweep.assign(size=sweep.patch_size.fillna(p3))[sweep.method != "none"], x="size")
    trained = per_seed_trend(sweep[sweep.method == "glamd"], x="patch_size")
    trend = trend.merge(trained[["seed", "slope"]].rename(columns={"slope": "slope over trained sizes"}), on="seed")
    return trend.rename(columns={"rank_correlation": "rank correlation (incl. global = patch of P3 side)"})


def label_sweep(frame: pd.DataFrame, points) -> pd.DataFrame:
    """Fig. 1's columns for each point of :func:`plans.hyperparameter_experiments` (``(parameter,
    multiplier, experiment)``): the swept value and the row name (``"beta x2"``, ``"default"``,
    ``"student"``); a point listed twice (a multiplier of 1) counts once."""
    out = frame.assign(value=[plans.swept_value(e, p) if p in plans.SWEPT else np.nan for p, _, e in points],
                       row=[p if p in ("default", "student") else f"{p} x{m:g}" for p, m, _ in points])
    return out.drop_duplicates(["row", "seed"])


def sweep(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 1's table from :func:`label_sweep`'s frame: each point's parameter, multiplier, value, AP
    mean / std / n and its paired difference against the default. Also returns the paired frame."""
    paired = paired_differences(frame, "default").set_index("row")
    stats = summarize(frame, by=("row",), metric="AP").set_index("row")
    first = frame.drop_duplicates("row").set_index("row")
    table = pd.DataFrame([{"row": r, "parameter": first.loc[r, "parameter"], "multiplier": first.loc[r, "multiplier"],
                           "value": first.loc[r, "value"], "AP mean": stats.loc[r, "mean"], "AP std": stats.loc[r, "std"],
                           "n": int(stats.loc[r, "n"]),
                           "paired vs default": "-" if r == "default" else _paired_text(paired, r)}
                          for r in stats.index])
    return table, paired


TABLE3_ROWS = ("student", "global mask", "DeFeat", "GLAMD", "teacher")
_TABLE3_NAMES = {"teacher": "teacher", "none": "student", "global": "global mask", "defeat": "DeFeat", "glamd": "GLAMD"}


def label_table3(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 3's row names from each run's method (``part`` "table 3": its claims read these rows)."""
    return frame.assign(part="table 3", row=frame.method.map(_TABLE3_NAMES))


def table3(frame: pd.DataFrame, kinds) -> pd.DataFrame:
    """Table 3 from :func:`label_table3`'s frame: per row and detector ``mean ± std (n)`` of test AP,
    and the paper's AP per detector (a reference)."""
    stats = summarize(frame, by=("kind", "row"), metric="AP")
    stats["cell"] = [f"{m:.2f} ± {s:.2f} (n={n})" if n > 1 else f"{m:.2f} (n=1)"
                     for m, s, n in zip(stats["mean"], stats["std"], stats.n)]
    table = stats.pivot(index="row", columns="kind", values="cell").reindex(list(TABLE3_ROWS))[list(kinds)]
    for kind in kinds:
        table[f"{kind}: paper (COCO, reference)"] = [
            paper.TABLE3_DEFEAT.get((kind, {"DeFeat": "defeat", "GLAMD": "glamd"}.get(r))) for r in table.index]
    return table.reset_index()


CALIBRATION_ORDER = ("none", "global", "defeat", "glamd")


def baselines(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Notebook 00's teachers and students alone (their run dicts): AP and AP50 on val and test and
    training minutes per (kind, role); also the long frame they come from (both splits)."""
    from .experiments import results_frame

    base = pd.concat([results_frame(results, split=s) for s in ("val", "test")])
    base["role"] = base.method.map({"teacher": "teacher", "none": "student"})
    table = base.pivot_table(index=["kind", "role"], columns="split", values=["AP", "AP50"])
    table.columns = [f"{metric} {split}" for metric, split in table.columns]
    table = table.join(base[base.split == "test"].set_index(["kind", "role"]).train_minutes).round(2)
    return table, base


def calibration_test(test: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Notebook 00's test table: each method at its setting chosen on val, test AP mean / std / n over
    seeds, the chosen loss form and alpha with their val AP, and the paper's Table 3 AP (a reference)."""
    table = summarize(test, by=("kind", "method"), metric="AP").rename(columns={"mean": "test AP mean",
                                                                              "std": "test AP std"})
    table = table.merge(chosen[["kind", "method", "loss_form", "alpha", "val AP"]], how="left", on=["kind", "method"])
    table["paper Table 3 AP (COCO, reference)"] = [paper.TABLE3_DEFEAT.get((k, m)) for k, m in zip(table.kind, table.method)]
    order = list(CALIBRATION_ORDER)
    return table.sort_values(["kind", "method"], key=lambda s: s.map(order.index) if s.name == "method" else s)


def table3_gaps(judged: pd.DataFrame) -> pd.DataFrame:
    """Table 3's judged claims with their detector and effect text (GLAMD - DeFeat, 95 % CI, n)."""
    return judged.assign(kind=[k.split(", ")[-1] for k in judged.claim],
                         effect=[row_ci_text(r) for _, r in judged.iterrows()])


def screen_moves(screened: pd.DataFrame, seed: int) -> pd.DataFrame:
    """04's screen at ``seed``: each variant's AP change against its own method, and that change as a
    share of the GLAMD - DeFeat gap (DeFeat leads at the calibration: its variants close the gap by
    losing AP, GLAMD's by gaining)."""
    return gap_shares(screened, seed, leader=("defeat", "DeFeat (chosen)"), trailer=("glamd", "GLAMD (chosen)"))


def screen_follow_up(screened: pd.DataFrame, confirmed: pd.DataFrame, screen_seed: int, confirm_seed: int,
                     top: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The screened variants ``top`` at both seeds: every move (both seeds), the top variants' changes
    and shares side by side, and their two-seed reading (:func:`stats.confirmed_shares`: a screen's
    follow-up, not a verdict)."""
    both = (pd.concat([screen_moves(screened, screen_seed), screen_moves(confirmed, confirm_seed)])
            if confirm_seed != screen_seed else screen_moves(screened, screen_seed))
    table = both[both.variant.isin(top)].pivot_table(index="variant", columns="seed", values=["change", "gap share"])
    table.columns = [f"{value}, seed {seed}" for value, seed in table.columns]
    return both, table, confirmed_shares(both, top)
