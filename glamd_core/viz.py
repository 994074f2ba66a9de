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
