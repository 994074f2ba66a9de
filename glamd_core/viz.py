"""Plotting helpers for the notebooks (matplotlib / seaborn, no state)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def bars_with_seeds(frame: pd.DataFrame, x: str, hue: str, y: str = "AP", order=None, hue_order=None,
                    title: str = "", ax=None):
    """Mean ± std bars over seeds, every seed as a dot."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(frame, x=x, y=y, hue=hue, order=order, hue_order=hue_order, errorbar="sd", capsize=0.1,
                alpha=0.75, ax=ax)
    sns.stripplot(frame, x=x, y=y, hue=hue, order=order, hue_order=hue_order, dodge=True, palette="dark:k", size=4,
                  legend=False, ax=ax)
    ax.set_title(title)
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
