"""Each notebook's conclusion, computed from its judged claims (:func:`glamd_core.claims.judge`).

A reading says what the numbers say and no more: every effect with its 95 % CI and n, every verdict
with its Holm p and its family's m, and the notes a row carries (fewer seeds than planned, a screen,
untestable here). Words such as "helps" or "ties" are not used: a verdict is held, reversed or
inconclusive, and the CI says how large.
"""

from __future__ import annotations

import math

import pandas as pd

from . import claims as C
from . import paper
from .stats import effect_text, paired_differences, row_ci_text, sweep_sensitivity


def claim_line(r) -> str:
    """``- label: +1.23 AP [+0.40, +2.06], n = 5 -> **held** (Holm p 0.012, m = 2)``, with its notes."""
    if not r["n"]:
        effect = "no paired runs"
    else:
        effect = row_ci_text(r, unit=r["unit"] or "").replace("  ", " ")
    edge = r["edge"]
    edge = f", against the edge {edge:+.2f}" if isinstance(edge, float) and edge and not math.isnan(edge) else ""
    holm = "no test" if math.isnan(r["p_holm"]) else f"Holm p {r['p_holm']:.3f}"
    note = f"; {r['note']}" if isinstance(r.get("note"), str) and r["note"] else ""
    paper = f" Paper: {r['paper']} (reference)." if isinstance(r.get("paper"), str) and r["paper"] else ""
    return f"- {r['claim']}: {effect} -> **{r['verdict']}** ({holm}, m = {int(r['m'])}{edge}{note}).{paper}"


def family_lines(judged: pd.DataFrame) -> list[str]:
    """The family's claims, then its composite statements."""
    out = []
    for family, rows in judged.groupby("family", sort=False):
        out.append(f"**{family}** -- {int(rows.m.iloc[0])} claim(s), fixed in `glamd_core.claims` before the "
                   "numbers; Holm within the family; 95 % CIs unadjusted (t, n - 1 df):")
        out += [claim_line(r) for _, r in rows.iterrows()]
        for _, c in C.composites(rows).iterrows():
            out.append(f"- **{c['claim']}** (every member must hold): **{c['verdict']}** ({c['counts']} of "
                       f"{c['members']}; the member furthest on the wrong side: {c['worst']}).")
    return out


def fig2_lines(judged: pd.DataFrame) -> list[str]:
    """Fig. 2's reading on both scales, saying which is which."""
    return family_lines(judged) + [
        "Scales: *AP lost* to an error type is the difference of two adjacent cocoapi bands (C50 - C75: the AP "
        "lost between IoU .5 and .75); it grows with how many objects a model finds at all. *Share kept* is the "
        "stricter band's AP over the looser one's (C75 / C50 for C50 - C75): the part of its AP a model keeps "
        "across that error type, whatever its level. Each type has a claim on each scale, all in one family."]


def distance_lines(judged: pd.DataFrame, screen: pd.DataFrame, map_sides: dict, patch: int, screen_patch: int,
                   screen_seed: int) -> list[str]:
    """Figs. 3-4: the claims over training seeds at the levels the patch-2 GLAM splits, then the one-seed
    screen per level (GLAMD at ``screen_patch`` - global mask, per image), which gives no verdict.
    ``screen``: rows per level with ``mean``, ``lower`` (images where GLAMD is nearer) and ``images``."""
    out = family_lines(judged)
    untestable = [lvl for lvl, side in map_sides.items() if max(side) <= patch]
    if untestable:
        out.append(f"- {', '.join(untestable)}: the map fits in one {patch}-cell patch, so GLAM is the global mask "
                   "by construction: untestable here.")
    parts = [f"{r.level} {r.mean:+.3f} (GLAMD nearer on {int(r.lower)}/{int(r.images)} images)"
             for r in screen.itertuples()]
    one_patch = [r for r in screen.itertuples() if max(map_sides[r.level]) <= screen_patch]
    out.append(f"- The screen (one training seed, {screen_seed}; GLAMD at patch {screen_patch}): GLAMD - global mask "
               f"in mean L1 per level: {'; '.join(parts)}. Images are not independent replicates of training: one "
               "seed is one pair of students, so the screen proposes and gives no verdict.")
    if one_patch:
        worst = max(one_patch, key=lambda r: abs(r.mean))
        out.append(f"- At {', '.join(r.level for r in one_patch)} the two students' masks are identical (one patch), "
                   f"yet the screen differs by up to {worst.mean:+.3f} ({worst.level}): the size of one seed's "
                   "run-to-run difference, against which no one-seed difference can be read.")
    return out


PARTS_09 = {"GLAMD's head terms": "GLAMD's head terms add to GLAMD's feature term",
            "GLAMD's feature term against DeFeat's": "GLAMD's feature term beats DeFeat's"}


def parts_lines(judged: pd.DataFrame, table3: dict) -> list[str]:
    """09: per kind, which part carries Table 3's gap -- only where Table 3's verdict (its own family's,
    ``table3``: {kind: verdict}, None if not yet computed) and the part's Holm verdict say so."""
    out = family_lines(judged)
    for kind in ("faster_rcnn", "retinanet", "cascade_rcnn"):
        rows = judged[judged.claim.str.startswith(f"{kind}: ")]
        if rows.empty:
            continue
        verdicts = {name: rows[rows.claim.str.startswith(f"{kind}: {claim}")].verdict for name, claim in PARTS_09.items()}
        verdicts = {k: v.iloc[0] for k, v in verdicts.items() if len(v)}
        gap = (table3 or {}).get(kind)
        listed = "; ".join(f"{k}: {v}" for k, v in verdicts.items())
        if gap in ("held", "reversed"):
            carriers = [k for k, v in verdicts.items() if v == gap]
            side = "GLAMD's" if gap == "held" else "DeFeat's"
            out.append(f"- **{kind}**: Table 3 (its own family) is **{gap}** ({side} side). Parts, Holm within this "
                       f"family: {listed}. Carried by: " + (", ".join(carriers) if carriers else
                                                             "no part by its own verdict") + ".")
        else:
            out.append(f"- **{kind}**: Table 3 (its own family) is **{gap or 'not yet computed'}**: no gap to "
                       f"attribute, so no part is said to carry one. Parts: {listed}.")
    return out


PAPER_GAP = tuple(round(paper.table1_gap(k), 1) for k in ("faster_rcnn", "retinanet"))  # reference: (3.5, 4.1)


def gap_lines(judged: pd.DataFrame, gaps: pd.DataFrame) -> list[str]:
    """10: the claims at ResNet10t (fixed seeds), then every point's gap on both scales (COCO AP and
    VOC07 mAP50) and its effects as CIs without verdicts, and the paper's gap beside ours on the scale
    it fits where that is known (RetinaNet: mAP50). ``gaps``: rows per (kind, point) with ``gap_AP``,
    ``gap_mAP50``, ``n`` and the GLAMD - DeFeat ``mean`` / ``ci_low`` / ``ci_high``."""
    out = family_lines(judged)
    for kind, rows in gaps.groupby("kind", sort=False):
        points = "; ".join(f"{r.point}: gap {r.gap_AP:.1f} AP / {r.gap_mAP50:.1f} VOC07 mAP50, GLAMD - DeFeat "
                           f"{row_ci_text(r)}" for r in rows.itertuples())
        out.append(f"- {kind}, every point (descriptive, no verdict beyond the claims above): {points}.")
    out.append(f"- The paper's teacher-student gaps are {PAPER_GAP[0]}-{PAPER_GAP[1]} (Table 1, VOC). For Faster "
               "R-CNN the paper does not say which metric its numbers are, so which of our points matches its gap "
               "is unknown.")
    retina = gaps[gaps.kind == "retinanet"]
    if len(retina):
        paper_gap = paper.table1_gap("retinanet")
        nearest = retina.loc[(retina.gap_mAP50 - paper_gap).abs().idxmin()]
        teacher = paper.TABLE1_VOC_SMALL_MODELS[("retinanet", "teacher")]
        out.append(f"- RetinaNet: the paper's teacher's {teacher} is on the mAP50 scale, so its gap "
                   f"{paper_gap:.2f} (reference) compares with our VOC07 mAP50 gaps: "
                   + "; ".join(f"{r.point} {r.gap_mAP50:.1f}" for r in retina.itertuples())
                   + f" (nearest: {nearest.point}, {nearest.gap_mAP50 - paper_gap:+.1f} from the paper's).")
    return out


SWEEP_BANDS = {"x0.5-2": (0.5, 2.0), "x0.25-4": (0.25, 4.0), "every point": (0.0, float("inf"))}


def patch_size_lines(paired: pd.DataFrame, stats: pd.DataFrame, glamd: pd.DataFrame, sizes: list[int], default: int,
                     p3: int) -> list[str]:
    """Table 2's descriptive lines (no verdict): the smallest and the default patch against the global
    mask, each seed's best patch, the baselines' means, and where our patches sit on the P3 side.
    ``paired`` and ``stats`` are indexed by row; ``glamd``: the GLAMD runs of the sweep's seeds."""
    from . import paper

    def effect(row):
        return effect_text(*paired.loc[row, ["mean", "std", "n", "agree"]])

    best = glamd.loc[glamd.groupby("seed").AP.idxmax(), ["seed", "patch_size"]]
    return [
        f"- Descriptive (no verdict): smallest patch ({sizes[0]}) - global mask {effect(f'patch {sizes[0]}')}; "
        f"default patch {default} - global mask {effect(f'patch {default}')}; best patch per seed: "
        + ", ".join(f"seed {int(r.seed)}: {int(r.patch_size)}" for r in best.itertuples())
        + f"; student alone {stats.loc['student', 'mean']:.2f}, global mask {stats.loc['global mask', 'mean']:.2f} AP.",
        f"- Scale: P3 is {p3} cells here, so patch {sizes[-1]} is {sizes[-1] / p3:.2f} of the P3 side (the paper's 30 is "
        f"about {30 / paper.P3_SIDE:.2f}); from {p3} cells on every level is one patch and GLAM equals the global mask.",
    ]


def sweep_reading(frame: pd.DataFrame, paired: pd.DataFrame, judged: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Fig. 1's reading: the descriptive table per parameter (:func:`sweep_summary`, against one seed-std
    of the default) and the conclusion: the family's verdicts, then the descriptive lines."""
    default = frame[frame.row == "default"]
    spread = float(default.AP.std()) if len(default) > 1 else float("nan")  # NaN: one default seed, no spread
    points = paired.join(frame.drop_duplicates("row").set_index("row")[["parameter", "multiplier"]]).reset_index()
    swept = points[~points.parameter.isin(["default", "student"])]
    summary = sweep_summary(sweep_sensitivity(swept, spread, SWEEP_BANDS)
                            .set_index("parameter"), spread)
    gain = paired_differences(frame[frame.row.isin(["default", "student"])], "student").iloc[0]["mean"]
    return summary, family_lines(judged) + sweep_lines(summary, points, spread, gain)


def small_models_lines(table: pd.DataFrame, teacher_seed: int) -> list[str]:
    """Table 1's descriptive line per detector (:func:`tables.small_models`): the means of its rows; the
    teacher is one run (``teacher_seed``), descriptive only."""
    return [f"- {kind}: teacher {m['teacher']:.2f} (seed {teacher_seed}, one teacher: descriptive), GLAMD student "
            f"{m['GLAMD student']:.2f}, student {m['student']:.2f} AP (means over seeds)."
            for kind, m in ((k, g.set_index("role")["AP mean"]) for k, g in table.groupby("kind", sort=False))]


def ablation_lines(frame: pd.DataFrame, vs_student: pd.DataFrame, single_terms_without_glam: bool) -> list[str]:
    """Table 4's descriptive lines (95 % CIs, no verdict): GLAM against the global mask with every term
    on, each term alone against the student, and -- when those runs were trained -- GLAM against no mask
    for each term alone. ``frame``: :func:`tables.label_ablation`'s rows; ``vs_student`` by row (its
    single-term GLAM rows, ``GLAM: feat`` ..., name the terms)."""
    terms = [r.removeprefix("GLAM: ") for r in vs_student.index if r.startswith("GLAM: ") and "+" not in r]

    def paired(row, baseline):
        return paired_differences(frame[frame.row.isin([row, baseline])], baseline).set_index("row").loc[row]

    lines = [f"- Beyond the paper (no verdict, 95 % CI): GLAM - the global mask, all terms on: "
             f"{row_ci_text(paired('GLAM: feat+cls+loc', 'global: feat+cls+loc'))}.",
             "- Each term alone against the student (no verdict, 95 % CI): "
             + "; ".join(f"{n} {row_ci_text(vs_student.loc[f'GLAM: {n}'])}" for n in terms)
             + f"; all three {row_ci_text(vs_student.loc['GLAM: feat+cls+loc'])}."]
    if single_terms_without_glam:
        lines.append("- GLAM - no mask, each term alone (no verdict, 95 % CI): " + "; ".join(
            f"{n} {row_ci_text(paired(f'GLAM: {n}', f'none (uniform): {n}'))}" for n in terms) + ".")
    return lines


def sweep_summary(sensitivity: pd.DataFrame, spread: float) -> pd.DataFrame:
    """Fig. 1's descriptive table per parameter (:func:`stats.sweep_sensitivity` indexed by parameter):
    the worst point per band, the range no worse than one default seed-std, points better by more."""
    rows = []
    for parameter, read in sensitivity.iterrows():
        entry = {"parameter": parameter}
        for band in SWEEP_BANDS:
            w = read[f"worst {band}"]
            entry[f"worst {band}"] = ("-" if w is None or (isinstance(w, float) and math.isnan(w)) else
                                      f"{w}: {read[f'worst {band} mean']:+.2f} ± {read[f'worst {band} std']:.2f}")
        if math.isnan(spread):
            entry["no worse than one default seed-std"] = entry["better by more than one seed-std"] = \
                "n/a (one default seed)"
        else:
            entry["no worse than one default seed-std"] = (f"x{read['safe from']:g} - x{read['safe to']:g}"
                                                           if read["safe from"] != read["safe to"] else "the default only")
            entry["better by more than one seed-std"] = ", ".join(f"x{m:g} ({d:+.2f})" for m, d in read["better"]) or "none"
        rows.append(entry)
    return pd.DataFrame(rows)


def sweep_lines(summary: pd.DataFrame, points: pd.DataFrame, spread: float, gain: float) -> list[str]:
    """Fig. 1's descriptive lines (point estimates, no verdicts): each parameter's worst points, and the
    temperature's points within x0.5-2 with their CIs (the paper fixes the temperature)."""
    from . import paper

    out = [f"- Descriptive (point estimates; the default's seed-std is {spread:.2f} AP, its gain over the student "
           f"{gain:+.2f} AP): " + "; ".join(f"{r['parameter']}: worst over x0.5-2 {r['worst x0.5-2']}, over every "
                                            f"point {r['worst every point']}" for _, r in summary.iterrows()) + ".",
           f"- The paper's worst point loses {paper.FIG1_WORST_DROP} AP, {paper.fig1_drop_share():.0%} of its gain "
           "(COCO, reference); its Fig. 1 does not say which multipliers it tried."]
    temperature = points[(points.parameter == "temperature") & points.multiplier.between(*SWEEP_BANDS["x0.5-2"])]
    if len(temperature):
        out.append("- Temperature (ours; the paper fixes it), x0.5-2, 95 % CI, no verdict: " + "; ".join(
            f"{r['row']} {row_ci_text(r)}" for _, r in temperature.iterrows()) + ".")
    return out


def screen_lines(screen: pd.DataFrame, followed: pd.DataFrame, component_of: dict, kind: str, screen_seed: int,
                 second_seed: int) -> list[str]:
    """04's one-component-at-a-time screen and its second-seed follow-up: proposals, never verdicts (two
    seeds and no interval). ``screen``: :func:`stats.gap_shares` at the screen seed; ``followed``:
    :func:`stats.confirmed_shares` over both seeds."""
    out = [f"- Screen ({kind}, seed {screen_seed}; each variant's change against its own method, and as a share of the "
           "GLAMD - DeFeat gap closed, negative = widened): " + "; ".join(
               f"{r['variant']} {r['change']:+.2f}" + ("" if pd.isna(r["gap share"]) else f" ({r['gap share']:+.0%})")
               for _, r in screen.iterrows()) + "."]
    if screen["gap share"].isna().all() and len(screen):
        out.append(f"- At seed {screen_seed} the gap is {screen['gap'].iloc[0]:+.2f} AP: below the 1-AP lead a share "
                   "could be read against, so no share is given.")
    for _, r in followed.iterrows():
        if pd.isna(r["mean_share"]):
            out.append(f"- Follow-up: {r['variant']}: no share (the lead is below 1 AP at a seed, or changes sign).")
            continue
        out.append(f"- Follow-up at seed {second_seed}: {r['variant']} (tests {component_of[r['variant']]}) moves "
                   f"{r['mean_share']:+.0%} of the gap on average (per seed: "
                   f"{', '.join(f'{x:+.0%}' for x in r['per_seed'].values())})"
                   + (f"; {r['note']}" if r["note"] else "") + ".")
    proposed = [component_of[v] for v in followed[followed.verdict == "carries"].variant]
    out.append("- Proposed for a seeded test (two seeds, no interval: a screen proposes, it does not conclude): "
               + (", ".join(dict.fromkeys(proposed)) + " closed more than half the gap at both seeds" if proposed
                  else "no component closed more than half the gap at both seeds") + ".")
    return out


def table3_verdicts(profile: str) -> dict | None:
    """Table 3's verdicts per detector, as notebook 04 computed them in their own family (its
    ``claims.csv`` at ``profile``); None where 04 has not written them."""
    from .experiments import results_dir

    path = results_dir("04_defeat_comparison", profile, create=False) / "claims.csv"
    if not path.exists():
        return None
    t = pd.read_csv(path)
    t = t[t.family == "Table 3"]
    return {claim.split(", ")[-1]: verdict for claim, verdict in zip(t.claim, t.verdict)}


def coverage_lines(coverage: pd.DataFrame, kinds) -> list[str]:
    """09's descriptive lines on the teachers' masks (:func:`analysis.teachers_mask_coverage`) at the
    finest level: each mask's share of weight on box cells against the boxes' share of the area."""
    cov = coverage.set_index(["kind", "level", "mask"])
    finest = coverage.level.iloc[0]

    def at(kind, mask, column="inside"):
        return cov.loc[(kind, finest, mask), column]

    return [f"- Masks on box cells at {finest} (test split; share of weight inside / boxes' share of area): "
            + "; ".join(f"{kind}: global {at(kind, 'global'):.2f}, GLAM p7 {at(kind, 'GLAM, patch 7'):.2f}, GLAM p2 "
                        f"{at(kind, 'GLAM, patch 2'):.2f} / area {at(kind, 'uniform'):.2f} (global mask's heaviest cell "
                        f"{at(kind, 'global', 'peak'):.2f} of its weight)" for kind in kinds) + ".",
            f"- Images without a box are left out of the coverage for every mask: {int(coverage.without_boxes.max())} "
            f"of {int(coverage.images.max())}."]


def mask_spread_lines(summary: pd.DataFrame, kind: str, images: int, one_patch: list[int], patch: int) -> list[str]:
    """Fig. 5's descriptive reading (it states no effect paired runs could test: no verdict): at how many
    stages the local mask is the less concentrated, and where GLAM is the global mask by construction."""
    wider = [int(lvl) + 3 for lvl in summary.index if summary.loc[lvl, "local"] > summary.loc[lvl, "global"]]
    out = [f"- **{kind} teacher**: half of the local mask's weight is spread over more cells than half of the global "
           f"mask's at {len(wider)} of {len(summary)} stages ({', '.join(f'P{k}' for k in wider) or 'none'}), averaged "
           f"over {images} images (the photograph included); descriptive: Fig. 5 states no effect paired runs could "
           "test, so there is no verdict."]
    if one_patch:
        out.append(f"- At {', '.join(f'P{k}' for k in one_patch)} a test image's map fits in one {patch}x{patch} patch, so "
                   "there GLAM *is* the global mask: at this profile's image size the local masks differ only on the "
                   "finer stages (on COCO at 1333x800, P3 holds about 360 patches of 7x7 and P5 about 24).")
    return out


def calibration_lines(test: pd.DataFrame, table: pd.DataFrame, teachers: pd.DataFrame, diagnostics: pd.DataFrame,
                      chosen: pd.DataFrame, profile, kinds, seeds) -> tuple[list[str], pd.DataFrame]:
    """Notebook 00's reading (calibration: no claim of the paper is judged here): per detector each
    method's test AP at its setting chosen on val, GLAMD - DeFeat paired per seed with its 95 % CI, the
    teacher, GLAMD's feature term alone at one seed (a screen); and whether the profile records this
    run's choices. Also returns every method's paired difference against the student and DeFeat."""
    from . import calibration as C
    from .stats import paired_differences

    paired = pd.concat([paired_differences(test[test.kind == kind], baseline, row="method").assign(kind=kind)
                        for kind in kinds for baseline in ("none", "defeat")]).set_index(["kind", "method", "baseline"])
    lines = []
    for kind in kinds:
        t = teachers.loc[(kind, "teacher")]
        means = table[table.kind == kind].set_index("method")["test AP mean"]
        d = paired.loc[(kind, "glamd", "defeat")]
        feat = diagnostics[(diagnostics.kind == kind) & (diagnostics.method == "glamd") & (diagnostics.split == "test")].AP.iloc[0]
        student0 = test[(test.kind == kind) & (test.method == "none") & (test.seed == seeds[0])].AP.iloc[0]
        lines.append(f"- **{kind}** (test AP, mean of {len(seeds)} seeds): student {means['none']:.2f}, global "
                     f"{means['global']:.2f}, DeFeat {means['defeat']:.2f}, GLAMD {means['glamd']:.2f}; teacher "
                     f"{t['AP test']:.2f} (AP50 {t['AP50 test']:.2f}). GLAMD - DeFeat, paired per seed: "
                     f"{row_ci_text(d)} (calibration: no verdict here; Table 3's "
                     f"claim is judged in notebook 04). GLAMD's feature term alone: {feat:.2f} against the student's "
                     f"{student0:.2f} (seed {seeds[0]}; one seed: a screen, no verdict).")
    chosen_settings = {(r.kind, r.method): {"loss_form": r.loss_form, "alpha": float(r.alpha)} for r in chosen.itertuples()}
    recorded = {k: v for k, v in profile.distill_settings.items() if k[0] in kinds and k[1] in C.COMPARED_METHODS}
    if not recorded:
        lines.append(f"- Profile `{profile.name}` keeps no chosen settings (only `cpu` is calibrated); this run chose "
                     f"{chosen_settings}.")
    else:
        same = recorded == chosen_settings
        lines.append(f"- The profile's `distill_settings` {'match' if same else 'DO NOT match'} this run's choices"
                     f"{'' if same else ': ' + repr(chosen_settings)}.")
    return lines, paired
