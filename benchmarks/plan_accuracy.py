"""How well ``reproduce --plan`` predicted the wall time of notebooks whose runs are in a run cache.

    python benchmarks/plan_accuracy.py 02_patch_size 05_glam_ablation [--runs-dir ~/glamd-runs] [--workers 2]

For each notebook, in the order given (each after ``00_calibration`` and the notebooks before it,
whose runs it finds cached -- the situation the per-notebook budgets describe):

* its new runs: those in its plan (``glamd_core.plans``) and in no earlier one;
* measured: the time during which at least one of them was running -- each run from its start
  (``config.json`` is written after set-up, so its time minus the run's ``setup_seconds``) to its end
  (``eval.json``), from the files' times -- i.e. first start to last end, minus any stretch in which
  none ran (a few runs trained in an earlier session would otherwise count the hours in between);
* estimated: what the plan said before they trained -- the same cost model and pool simulation as
  ``reproduce --plan``, fed only with runs that had finished before the first new run started.

Prints estimate, measurement and their ratio per notebook; writes them to
``results/benchmarks/plan_accuracy.csv``. The goal: within 15 %.

File times can be skewed (a cache copied without them, a clock set back): a run whose ``eval.json``
is older than its start counts as empty and the row's ``note`` says how many did. Where every run
did, nothing was measured: the measured wall is 0 and the ratio NaN, with that note -- not a
division by zero.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from glamd_core import plans
from glamd_core.costs import CostModel, cost_table, measured_costs, simulate_wall
from glamd_core.experiments import read_eval, results_dir, run_dir
from glamd_core.profiles import PROFILES
from glamd_core.runs import RUNS_DIR


def _times(folder: Path) -> tuple[float, float]:
    result = read_eval(folder)
    if result is None:
        raise SystemExit(f"{folder / 'eval.json'} is torn or not a JSON object; clear the run "
                         f"(python -m glamd_core runs clear --pattern '{folder.name}') and train it again")
    start = (folder / "config.json").stat().st_mtime - result.get("setup_seconds", 0.0)
    return start, (folder / "eval.json").stat().st_mtime


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of the ``(start, end)`` intervals (one ending before it starts, from skewed
    file times, counts as empty)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted((s, e) for s, e in spans if e >= s):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def skew_note(spans: list[tuple[float, float]]) -> str:
    """What skewed file times left out of the measurement ('' when nothing was)."""
    skewed = sum(e < s for s, e in spans)
    if not skewed:
        return ""
    return (f"{skewed} of {len(spans)} runs end before they start (eval.json older than config.json minus set-up: "
            "skewed file times), counted as empty" + ("; nothing measured, no ratio" if skewed == len(spans) else ""))


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None,
                   help="default: results/benchmarks/plan_accuracy.csv; a scratch profile's (smoke) under "
                        "results/_<profile>/benchmarks/, never over the committed cpu rows")
    a = p.parse_args(argv)
    if a.profile not in PROFILES:
        p.error(f"--profile {a.profile!r}: choose one of {sorted(PROFILES)}")
    a.out = a.out or results_dir("benchmarks", a.profile, create=False) / "plan_accuracy.csv"
    earlier = {run_dir(e, a.runs_dir) for e in plans.notebook_experiments("00_calibration", a.profile)[0]}
    measured_all = measured_costs(a.runs_dir)
    finished_at = {name: _times(a.runs_dir / name)[1] for name in measured_all.run}
    rows = []
    for name in a.notebooks:
        experiments, _ = plans.notebook_experiments(name, a.profile)
        new = {}
        for e in experiments:
            where = run_dir(e, a.runs_dir)
            if where not in earlier:
                new.setdefault(where, e)
        earlier |= set(new)
        if not new:
            print(f"{name}: every run it needs is an earlier notebook's; nothing of its own to measure")
            continue
        missing = [w.name for w in new if not (w / "eval.json").is_file()]
        if missing:
            raise SystemExit(f"{name}: {len(missing)} of its runs are not finished in {a.runs_dir} (e.g. {missing[0]})")
        spans = [_times(w) for w in new]
        start = min(s for s, _ in spans)
        before = measured_all[[finished_at[r] < start for r in measured_all.run]]
        model = CostModel(cost_table(before))
        minutes = [model.estimate(e)[0] for e in new.values()]
        estimate = simulate_wall(list(new.values()), minutes, a.workers, a.runs_dir)
        measured = busy_seconds(spans) / 60
        note = skew_note(spans)
        if note:
            print(f"{name}: {note}")
        rows.append({"notebook": name, "new runs": len(new), "estimated wall min": round(estimate, 1),
                     "measured wall min": round(measured, 1), "first start to last end min": round(
                         (max(e for _, e in spans) - start) / 60, 1),
                     "estimate / measured": round(estimate / measured, 3) if measured > 0 else math.nan,
                     "runs behind the estimate": len(before), "unknown costs": int(sum(map(math.isnan, minutes))),
                     "note": note})
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise SystemExit(f"nothing measured; {a.out} left as it was")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(a.out, index=False)
    print(frame.to_string(index=False))
    return frame


if __name__ == "__main__":
    main()
