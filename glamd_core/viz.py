"""Plotting helpers for the notebooks (matplotlib / seaborn, no state)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def bars_with_seeds(frame: pd.DataFrame, x: str, hue: str, y: str = "AP", order=None, hue_order=None,
                    title: str = "", ax=None, orient: str = "v"):
    """Mean ± std bars over seeds, every seed as a dot; ``orient="h"``: horizontal bars (``x`` the
    metric, ``y`` the categories -- long row labels stay readable)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(frame, x=x, y=y, hue=hue, order=order, hue_order=hue_order, errorbar="sd", capsize=0.1,
                alpha=0.75, orient=orient, ax=ax)
    category = y if orient == "h" else x
    nested = frame.groupby(category)[hue].nunique().max() <= 1  # one hue per category: the bars are not dodged
    sns.stripplot(frame, x=x, y=y, hue=hue, order=order, hue_order=hue_order, dodge=not nested, palette="dark:k", size=4,
                  legend=False, orient=orient, ax=ax)
    ax.set_title(title)
    if orient == "h":
        ax.set_xlabel(f"{x} (%)")
    else:
        ax.set_ylabel(f"{y} (%)")
    return ax


def lines_over_settings(frame: pd.DataFrame, y: str, settings, hue: str = "method", title: str = "", ax=None,
                        log: bool = False):
    """One line per ``hue`` over the calibration grid's ``settings`` (in grid order), points marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    sns.pointplot(frame, x="setting", y=y, hue=hue, order=list(settings), errorbar=None, markers="o",
                  linestyles="-", ax=ax)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    if log:
        ax.set_yscale("log")
    return ax


# the cocoapi analyze() colours: C75, C50 white; Loc blue; Sim red; Oth green; BG purple; FN orange
BAND_COLOURS = [(1, 1, 1), (0.88, 0.88, 0.88), (0.31, 0.51, 0.74), (0.75, 0.31, 0.30), (0.36, 0.90, 0.38),
                (0.50, 0.39, 0.64), (1, 0.6, 0)]


def error_bands(frame: pd.DataFrame, title: str = "", ax=None):
    """The stacked-area PR plot of ``evaluation.error_analysis`` (the paper's Fig. 2, cocoapi style),
    each band labelled with its AP."""
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    curves = np.stack(frame.precision.values)
    layers = np.vstack([curves[:1], np.diff(curves, axis=0)])
    labels = [f"[{ap:.3f}] {band}" for band, ap in frame.AP.items()]
    polys = ax.stackplot(frame.attrs["recall"], layers, labels=labels, colors=BAND_COLOURS, edgecolor="k", linewidth=0.3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision", title=title)
    ax.legend(handles=polys[::-1], labels=labels[::-1], loc="lower left", fontsize=7)
    return ax


VERDICT_COLOURS = {"held": "tab:green", "reversed": "tab:red", "inconclusive": "tab:gray",
                   "untestable here": "tab:purple", "pending": "lightgray"}


def forest_plot(table: pd.DataFrame, title: str = "Every verdict: paired difference, 95 % CI (unadjusted)"):
    """One row per claim of the verdict table (:func:`glamd_core.verdicts.verdict_table`): its mean paired
    difference with its 95 % CI, coloured by its verdict after Holm within its family; the paper's effect
    (a reference) as a hollow diamond, an edge other than 0 as a tick. One panel per unit (AP, AP / cell,
    L1, ...), each with zero marked; rows without an effect (pending, summaries) are listed, not drawn."""
    import math

    import numpy as np

    rows = table.reset_index(drop=True)
    units = [u if isinstance(u, str) and u else "" for u in rows.get("unit", pd.Series([""] * len(rows)))]
    drawn = [u for u in dict.fromkeys(units)]
    heights = [max(1, units.count(u)) for u in drawn]
    fig, axes = plt.subplots(len(drawn), 1, figsize=(9, 0.38 * len(rows) + 1.2 * len(drawn)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, unit in zip(axes[:, 0], drawn):
        mine = rows[[u == unit for u in units]]
        y = np.arange(len(mine))[::-1]
        for yi, (_, r) in zip(y, mine.iterrows()):
            colour = VERDICT_COLOURS.get(r["verdict"], "black")
            mean = r.get("mean")
            if isinstance(mean, float) and not math.isnan(mean):
                low, high = r.get("ci_low"), r.get("ci_high")
                if isinstance(low, float) and not math.isnan(low):
                    ax.plot([low, high], [yi, yi], color=colour, lw=2.2)
                ax.plot([mean], [yi], "o", color=colour, ms=6)
            edge = r.get("edge")
            if isinstance(edge, float) and edge and not math.isnan(edge):
                ax.plot([edge], [yi], "|", color="black", ms=12, mew=1.5)
            ref = r.get("paper_delta")
            if isinstance(ref, float) and not math.isnan(ref):
                ax.plot([ref], [yi], "D", mfc="none", mec="tab:blue", ms=6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r['family']}: {r['claim'][:90]} [{r['verdict']}]" for _, r in mine.iterrows()],
                           fontsize=7)
        ax.set_xlabel(f"paired difference ({unit})" if unit else "no effect drawn (pending or summary rows)",
                      fontsize=8)
        if not unit:
            ax.set_xticks([])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", lw=2, label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [Line2D([], [], color="tab:blue", marker="D", mfc="none", lw=0, label="paper's effect (reference)"),
                Line2D([], [], color="black", marker="|", lw=0, ms=10, label="edge of a tolerance claim")]
    axes[0, 0].set_title(title, fontsize=10)
    fig.tight_layout()
    # below the panels, never over a row
    fig.legend(handles=handles, fontsize=7, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig
