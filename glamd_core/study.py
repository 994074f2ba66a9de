"""The steps every experiment notebook takes, one call each: train and label its runs, judge its
family's claims, write its results.

A notebook lists its runs with :mod:`glamd_core.plans` -- experiments, or tuples whose last item is
the experiment and whose other items are labels (``(point, row, experiment)``) -- and hands them to
:func:`train`, which trains what the run cache lacks and returns one labelled row per run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from . import claims as C
from .experiments import Experiment, is_finished, results_frame, run_all, write_results
from .profiles import get_profile


@dataclass
class Trained:
    """What :func:`train` returns: the runs as a frame (test split, one row per listed run, labels as
    columns), their result dicts, how many were trained by this call, and when the notebook started."""

    frame: pd.DataFrame
    results: list[dict]
    trained_now: int
    started: float = field(default_factory=time.perf_counter)


def train(rows, labels=(), workers=None, data_root=None, split: str = "test") -> Trained:
    """Train (or fetch) every run of ``rows`` and label it. ``rows``: experiments, or tuples ending in
    one whose other items go into the columns ``labels`` (same length)."""
    started = time.perf_counter()
    rows = list(rows)
    experiments = [r[-1] if isinstance(r, tuple) else r for r in rows]
    if not all(isinstance(e, Experiment) for e in experiments):
        raise TypeError("study.train takes Experiments, or tuples ending in one")
    labels = list(labels)
    for r in rows:
        if isinstance(r, tuple) and len(r) - 1 != len(labels):
            raise ValueError(f"a row {r[:-1]} has {len(r) - 1} labels for the columns {labels}")
    new = sum(not is_finished(e, data_root=data_root) for e in experiments)
    results = run_all(experiments, workers=workers, data_root=data_root)
    frame = results_frame(results, split=split)
    for i, name in enumerate(labels):
        frame[name] = [r[i] for r in rows]
    return Trained(frame, results, new, started)


def combine(main: Trained, **parts: Trained) -> Trained:
    """One :class:`Trained` of a notebook's several steps (``main`` first, then each part, its name in
    the column ``part``): the runs as one frame (a run listed twice in one part counts once), their
    results, how many were trained now; timed from ``main``'s start."""
    frames = [main.frame] + [t.frame.assign(part=name) for name, t in parts.items()]
    frame = pd.concat(frames)
    frame = frame.drop_duplicates(["run", "part"] if "part" in frame else ["run"])
    return Trained(frame, main.results + [r for t in parts.values() for r in t.results],
                   main.trained_now + sum(t.trained_now for t in parts.values()), main.started)


def judge(family: str, profile: str, **tables: pd.DataFrame) -> pd.DataFrame:
    """The family's claims (:func:`glamd_core.claims.judge`) on this notebook's tables."""
    return C.judge(family, tables, get_profile(profile))


def save(name: str, profile: str, seeds, trained: Trained, tables: dict, judged: pd.DataFrame | None = None,
         conclusion: list[str] | str = "", figures: dict | None = None, **extra):
    """Write ``results/<name>/``: the tables, the claims table (``claims.csv`` / ``.md``), the computed
    ``conclusion.md`` and the manifest (which holds no verdict: those live in the claims table). The
    family is then judged again from the written folder, as ``python -m glamd_core.verdicts`` reads
    it, and must give the notebook's verdicts: one claim, one verdict (else a RuntimeError)."""
    tables = dict(tables)
    if judged is not None:
        tables["claims"] = judged.drop(columns=[c for c in ("diffs",) if c in judged])
    text = conclusion if isinstance(conclusion, str) else "\n".join(conclusion)
    out = write_results(name, get_profile(profile), seeds, time.perf_counter() - trained.started, tables=tables,
                        figures=figures, notebook=f"{name}.ipynb", conclusion=text, split="test",
                        runs=trained.results, runs_trained_now=int(trained.trained_now),
                        train_minutes_of_runs=round(float(trained.frame.drop_duplicates("run").train_minutes.sum()), 1), **extra)
    if judged is not None and len(judged):
        check_rejudged(judged, out.parent, profile)
    return out


def check_rejudged(judged: pd.DataFrame, results_dir, profile: str) -> None:
    """Judge ``judged``'s family again from the tables written under ``results_dir`` (what the README's
    table reads) and refuse a difference in claims, n or verdicts, naming the claims that differ."""
    family = judged["family"].iloc[0]
    again = C.judge(family, C.read_tables(family, results_dir), get_profile(profile))
    shown = judged.set_index("claim")[["n", "verdict"]]
    read = again.set_index("claim")[["n", "verdict"]]
    if not shown.equals(read):  # the same claims in the same order, with the same n and verdicts
        differ = [c for c in shown.index.union(read.index)
                  if c not in shown.index or c not in read.index or tuple(shown.loc[c]) != tuple(read.loc[c])]
        raise RuntimeError(f"family {family}: judged again from the tables written under {results_dir}, "
                           f"{len(differ)} claim(s) differ from the notebook's: {differ[:3]}; the README would show "
                           "other verdicts than the notebook (a table saved other than the one judged?)")
