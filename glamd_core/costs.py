"""What runs cost: measured minutes per run, and the wall time of a pool of runs on N workers.

Every estimate comes from a measurement: a finished run records its training, evaluation and set-up
seconds in ``eval.json``; runs not yet trained are estimated by the median of finished runs of the
same profile, detector kind, role (teacher / student alone / distilled student) and backbone at the
same thread count -- from the run cache, else from ``results/benchmarks/run_costs.csv``, which
``python benchmarks/run_costs.py`` tabulates from a cache and which is committed so that a machine
with an empty cache can still plan. A backbone never measured borrows its role's minutes with a
source that says so (a ResNet10t student is not a RegNetX one); a run with no measurement of its
kind is listed as unknown.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd

from .experiments import Experiment, is_run, read_eval, run_dir
from .profiles import get_profile
from .runs import RESULTS_DIR, RUNS_DIR

COSTS_FILE = RESULTS_DIR / "benchmarks" / "run_costs.csv"
COST_COLUMNS = ["profile", "kind", "role", "threads", "minutes", "n", "source", "backbone"]


ROLE_OF_METHOD = {"teacher": "teacher", "none": "student"}  # every other method: "distilled"


def role_of(exp: Experiment) -> str:
    return ROLE_OF_METHOD.get(exp.method, "distilled")


def backbone_of(exp: Experiment) -> str:
    """The backbone a run trains: the teacher's for a teacher run, else the student's."""
    return exp.teacher_backbone if exp.method == "teacher" else exp.student_backbone


def _backbone_of_run(name: str) -> str:
    """``<kind>-<backbone>-...``: run names carry their backbone."""
    parts = str(name).split("-")
    return parts[1] if len(parts) > 2 else ""


def run_minutes(result: dict) -> float:
    """A finished run's cost in minutes: set-up (building its detectors and, for the first student of
    a teacher, the teacher-output cache) + training + evaluation. Runs recorded before set-up and
    evaluation were timed give their last call's wall time (training + evaluation)."""
    train = result.get("train_seconds", 0.0)
    if "eval_seconds" in result:
        return (result.get("setup_seconds", 0.0) + train + result["eval_seconds"]) / 60
    return max(train, result.get("wall_seconds_this_call", 0.0)) / 60


def measured_costs(runs_dir: Path = RUNS_DIR) -> pd.DataFrame:
    """One row per finished run in the cache: profile, kind, role, threads, minutes."""
    rows = []
    root = Path(runs_dir)
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not is_run(d) or not (d / "eval.json").is_file():
            continue
        result = read_eval(d)
        try:
            config = json.loads((d / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            config = None
        if result is None or not isinstance(config, dict):
            warnings.warn(f"{d}: eval.json or config.json is torn or not a JSON object; this run's cost is left "
                          f"out (clear it: python -m glamd_core runs clear --pattern '{d.name}')", stacklevel=2)
            continue
        if config.get("what") == "imported":
            continue  # nothing was trained
        try:
            profile = get_profile(result["profile"]).for_kind(result["kind"])
        except (KeyError, ValueError):
            continue
        role = ("distilled" if config.get("what") == "distilled"
                else "teacher" if config.get("backbone") == profile.teacher_backbone else "student")
        rows.append({"profile": result["profile"], "kind": result["kind"], "role": role,
                     "threads": int(result.get("threads", 0)), "minutes": run_minutes(result), "run": d.name,
                     "backbone": str(config.get("backbone", ""))})
    return pd.DataFrame(rows, columns=["profile", "kind", "role", "threads", "minutes", "run", "backbone"])


def results_costs(results_dir: Path = RESULTS_DIR) -> pd.DataFrame:
    """Training minutes of the runs behind committed results (tables with ``kind``, ``method`` or
    ``role``, ``train_minutes`` and ``run`` columns; profile from the folder's manifest). They lack
    set-up and evaluation, and the thread count (0 = unknown): a planning fallback for kinds no run
    cache at hand has measured, labelled as such."""
    rows = []
    for table in sorted(Path(results_dir).glob("[!_]*/*.csv")):
        manifest = table.parent / "manifest.json"
        try:
            frame, profile = pd.read_csv(table), json.loads(manifest.read_text())["profile"]
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            continue
        if not {"kind", "train_minutes", "run"} <= set(frame) or not ({"method", "role"} & set(frame)):
            continue
        for r in frame.itertuples():
            method = getattr(r, "method", None)
            role = (ROLE_OF_METHOD.get(method, "distilled") if isinstance(method, str)
                    else {"teacher": "teacher", "student": "student"}.get(getattr(r, "role", ""), "distilled"))
            rows.append({"profile": profile, "kind": r.kind, "role": role, "threads": 0,
                         "minutes": float(r.train_minutes), "run": r.run, "backbone": _backbone_of_run(r.run)})
    return pd.DataFrame(rows, columns=["profile", "kind", "role", "threads", "minutes", "run",
                                       "backbone"]).drop_duplicates("run")


def _check_minutes(minutes: pd.Series, where: str) -> None:
    bad = ~(pd.to_numeric(minutes, errors="coerce").astype(float).pipe(lambda m: m.notna() & (m >= 0) & (m < float("inf"))))
    if bad.any():
        raise ValueError(f"{where}: minutes must be finite and >= 0; got {minutes[bad].tolist()} (rows "
                         f"{list(minutes.index[bad])})")


def _check_counts(table: pd.DataFrame, column: str, where: str) -> None:
    """``threads`` and ``n`` are whole numbers >= 0: an estimate's source prints them as integers, and an
    empty cell would fail there, naming nothing."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = ~(values.notna() & (values >= 0) & (values % 1 == 0))
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"{where}: column {column!r} holds whole numbers >= 0; row {i + 1} (line {i + 2}) has "
                         f"{table[column].iloc[i]!r} ({int(bad.sum())} such row(s)); rewrite it with "
                         "`python benchmarks/run_costs.py` or fix the row")
    table[column] = values.astype(int)


def read_costs(path: Path) -> pd.DataFrame:
    """A committed costs table, checked: a readable csv with :data:`COST_COLUMNS`, finite, non-negative
    minutes and whole-number ``threads`` and ``n``. Anything else is an error naming the file and what
    is wrong (for a bad count, its column and row)."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a costs table ({error}); rewrite it with `python benchmarks/run_costs.py` "
                         "or delete it") from None
    missing = [c for c in COST_COLUMNS if c not in table.columns and c not in ("source", "backbone")]
    if missing:
        raise ValueError(f"{path}: a costs table needs columns {COST_COLUMNS}; missing {missing} (it has "
                         f"{list(table.columns)})")
    _check_minutes(table["minutes"], str(path))
    for column in ("threads", "n"):
        _check_counts(table, column, str(path))
    for optional in ("source", "backbone"):  # tables written before these columns
        if optional not in table:
            table[optional] = ""
        table[optional] = table[optional].astype(object).where(table[optional].notna(), "")
    # rows from before backbones were recorded measured the profile's own backbones (no other was run)
    table["backbone"] = [b or _default_backbone(p, k, r) for p, k, r, b in
                         zip(table.profile, table.kind, table.role, table.backbone)]
    return table[COST_COLUMNS]


def _default_backbone(profile: str, kind: str, role: str) -> str:
    try:
        P = get_profile(profile).for_kind(kind)
    except (KeyError, ValueError):
        return ""
    return P.teacher_backbone if role == "teacher" else P.student_backbone


def cost_table(measured: pd.DataFrame, source: str = "run cache") -> pd.DataFrame:
    """Median minutes and count per (profile, kind, role, threads); negative or non-finite minutes
    are an error naming the runs."""
    if measured.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    bad = ~measured.minutes.map(lambda m: isinstance(m, (int, float)) and math.isfinite(m) and m >= 0)
    if bad.any():
        names = measured.run[bad].tolist() if "run" in measured else list(measured.index[bad])
        raise ValueError(f"negative or non-finite minutes for {names}: {measured.minutes[bad].tolist()}; "
                         "their eval.json times are wrong -- retrain or clear those runs")
    measured = measured.assign(backbone=measured["backbone"] if "backbone" in measured else "")
    g = measured.groupby(["profile", "kind", "role", "threads", "backbone"]).minutes
    return g.agg(minutes="median", n="count").reset_index().assign(source=source)[COST_COLUMNS]


class CostModel:
    """Estimated minutes of any experiment from a :func:`cost_table` (earlier rows win)."""

    def __init__(self, table: pd.DataFrame):
        self.table = table

    @classmethod
    def from_cache(cls, runs_dir: Path = RUNS_DIR, costs_file: Path = COSTS_FILE) -> "CostModel":
        """The run cache's finished runs first, then the committed table (checked: :func:`read_costs`)."""
        committed = read_costs(costs_file) if Path(costs_file).is_file() else pd.DataFrame(columns=COST_COLUMNS)
        committed["source"] = [f"{Path(costs_file).name} ({s})" if isinstance(s, str) and s else Path(costs_file).name
                               for s in committed.source]
        return cls(pd.concat([cost_table(measured_costs(runs_dir)), committed]))

    def estimate(self, exp: Experiment) -> tuple[float, str]:
        """``(minutes, source)``: the run cache's median for the run's profile, kind, role and backbone
        at the run's own thread count (else at any thread count), else the committed table's; a backbone
        measured nowhere takes its role's minutes, and the source says whose; NaN if nothing is known."""
        t = self.table
        same = t[(t.profile == exp.profile) & (t.kind == exp.kind) & (t.role == role_of(exp))]
        backbone = backbone_of(exp)
        ours = same[same.backbone == backbone]
        for rows in (ours[ours.threads == exp.threads], ours, same[same.threads == exp.threads], same):
            if len(rows):
                best = rows.iloc[0]  # earlier rows first: the run cache's before the committed table's
                source = f"{best.source}, median of {int(best.n)} at {int(best.threads)} thread(s)"
                if best.backbone != backbone:
                    source += f" -- of {best.backbone or 'other'} runs: {backbone} not measured, expect a different cost"
                return float(best.minutes), source
        return float("nan"), "unknown: no run of this kind measured"


def teacher_of(exp: Experiment) -> Experiment | None:
    """The teacher run a distilled experiment waits for (None for teachers and students alone, and
    for imported teachers, which train nothing)."""
    if exp.method in ("teacher", "none") or exp.teacher_checkpoint is not None:
        return None
    return Experiment(exp.kind, "teacher", exp.profile, seed=get_profile(exp.profile).seeds[0], teacher=exp.teacher,
                      epochs=exp.epochs)


def pool_order(experiments: list[Experiment], minutes: list[float]) -> list[int]:
    """The order a pool starts runs in: teachers, then students alone, then distilled students (who
    need their teachers), longest first within each."""
    stage = {"teacher": 0, "student": 1, "distilled": 2}
    return sorted(range(len(experiments)),
                  key=lambda i: (stage[role_of(experiments[i])], -(0 if math.isnan(minutes[i]) else minutes[i])))


def simulate_wall(experiments: list[Experiment], minutes: list[float], workers: int,
                  runs_dir: Path = RUNS_DIR) -> float:
    """Minutes until the last run ends when ``workers`` processes take runs in :func:`pool_order`,
    each starting the next as soon as it is free, and a distilled run whose teacher is being trained
    in the pool waits for it (as ``run_all``'s workers wait on the teacher's lock)."""
    free = [0.0] * max(1, workers)
    ends: dict[Path, float] = {}
    for i in pool_order(experiments, minutes):
        w = min(range(len(free)), key=free.__getitem__)
        teacher = teacher_of(experiments[i])
        start = max(free[w], ends.get(run_dir(teacher, runs_dir), 0.0) if teacher is not None else 0.0)
        free[w] = start + (0.0 if math.isnan(minutes[i]) else minutes[i])
        ends[run_dir(experiments[i], runs_dir)] = free[w]
    return max(free)

