"""The main job, and the teacher / student baselines the profiles are calibrated with.

:func:`reproduce` executes every experiment notebook at a profile (each writes
``results/<notebook>/``). :func:`run_baselines` trains a profile's teachers and students and
tabulates their AP. Runs are cached in ``runs/`` (see
``glamd_core.runs``), so calling either again only re-tabulates.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .costs import COSTS_FILE
from .experiments import results_dir, write_results
from .files import atomic_write_text
from .profiles import Profile, get_profile
from .data.splits import DATA_DIR, splits
from .files import REPO_ROOT, BrokenRun, read_result, try_exclusive
from .runs import RUNS_DIR, train_detector


def reproduce(profile: str = "cpu", names=(), workers: int | None = None, data_root: str | None = None,
              executor=None, pool: bool = True, runs_dir: Path = RUNS_DIR) -> list[Path]:
    """Every notebook under ``notebooks/`` (or the ``names`` given) executed with papermill at
    ``profile``; returns the executed copies (``results/<name>/<name>.ipynb``). A profile without a
    val split (real data) skips the calibration notebook unless it is named: there is nothing to
    choose on.

    With ``pool`` (the default), the runs every notebook needs (:func:`plan`) are trained first, in
    one pool -- teachers first, then the longest -- on ``workers`` local processes or on
    ``executor`` (any ``concurrent.futures.Executor``, e.g. a dask client's or submitit's, see
    ``run_all``), with one progress bar over all of them; the notebooks then find their runs cached.
    Runs a plan cannot list in advance (a choice made on val, a screen's top variants) are trained by
    their notebook. Each notebook's manifest then also records the pool (:func:`record_pool`): its
    wall time and the notebook's runs it trained. ``runs_dir`` is the pool's run cache; the notebooks'
    kernels use ``$GLAMD_RUNS_DIR`` (or ``runs/``), so the two must name the same folder."""
    names = _default_names(profile, names)
    with executing(names, profile):  # a second driver on this checkout stops here, before its pool
        if not pool:
            return _run_notebooks(names, profile, workers, data_root)
        started = time.perf_counter()
        trained = train_pool(profile, names, workers, data_root, executor, runs_dir) or []
        wall = time.perf_counter() - started
        pooled = [p.stem for p in notebook_paths(names)]
        # recorded as each notebook finishes, so a notebook that fails later loses no earlier record
        done = (lambda out: record_pool(out, profile, pooled, trained, wall, runs_dir, data_root)) if trained else None
        return _run_notebooks(names, profile, workers, data_root, done=done)


@contextlib.contextmanager
def executing(names, profile: str):
    """Hold, for the ``with`` block, one lock per notebook's results folder
    (``results/.<name>.lock``): two drivers would share the notebook's staging folder and partial
    copy, and one could move the other's half-written results into place. A notebook another
    process is executing is an error naming the notebook and that process, raised before anything
    trains."""
    with contextlib.ExitStack() as stack:
        for path in notebook_paths(names):
            lock = results_dir(path.stem, profile, create=False).with_name(f".{path.stem}.lock")
            lock.parent.mkdir(parents=True, exist_ok=True)
            if not stack.enter_context(try_exclusive(lock)):
                try:
                    who = lock.read_text().strip()
                except OSError:
                    who = ""
                raise RuntimeError(f"notebook {path.stem} is being executed at profile {profile} by "
                                   f"{who or 'another process'} (lock {lock}); a second driver would share its "
                                   "results folder. Wait for it to finish, or stop it")
            lock.write_text(f"process {os.getpid()} ({' '.join(sys.argv) or 'python'})\n")
        yield


def record_pool(executed: Path, profile: str, pooled: list[str], trained: list[dict], wall_seconds: float,
                runs_dir: Path = RUNS_DIR, data_root: str | None = None) -> None:
    """Add the pool's share to an executed notebook's ``manifest.json``: with the pool, a notebook
    finds its runs cached and would otherwise record only its own seconds and no run trained.
    ``runs_trained_in_pool`` counts the notebook's runs the pool trained (a run two notebooks share
    counts in both; a teacher counts only where the notebook's plan lists it); the pool's wall time
    covers every notebook in ``pooled``."""
    from . import plans
    from .experiments import run_dir

    target = executed.parent / "manifest.json"
    if not target.is_file():
        warnings.warn(f"{executed.stem} wrote no {target}; the pool that trained its runs is not recorded", stacklevel=2)
        return
    minutes = {r["run_dir"]: r["train_seconds"] / 60 for r in trained}
    experiments, _ = plans.notebook_experiments(executed.stem, profile)
    mine = {run_dir(e, runs_dir, data_root=data_root).name for e in experiments} & set(minutes)
    manifest = json.loads(target.read_text())
    manifest["pool"] = {"notebooks": sorted(pooled), "wall_seconds": round(wall_seconds, 1),
                        "runs_trained": len(trained), "runs_trained_in_pool": len(mine),
                        "train_minutes_of_those_runs": round(sum(minutes[m] for m in mine), 1)}
    atomic_write_text(target, json.dumps(manifest, indent=2))


def _default_names(profile: str, names) -> list:
    if not names and "val" not in splits(get_profile(profile)):
        return [p for p in notebook_paths() if p.stem != "00_calibration"]
    return list(names)


def plan(profile: str = "cpu", names=(), workers: int | None = None, runs_dir: Path = RUNS_DIR,
         data_root: str | None = None, costs_file: Path = COSTS_FILE) -> pd.DataFrame:
    """Every run the notebooks need, without training or generating anything: one row per
    (notebook, run) with kind, method, seed, setting (what differs from the profile's chosen
    setting), ``status`` (cached / to train / broken / planned by an earlier notebook), the estimated
    minutes of a run to train and where the estimate comes from. ``frame.attrs``: the distinct runs to
    train, their training minutes, the simulated wall time on ``workers`` processes, notes on what the
    lists cannot know in advance, and ``broken``: run name -> error, for cached runs whose ``eval.json``
    is torn (counted to train: they must be cleared and trained again; :func:`train_pool` refuses until
    they are)."""
    from . import plans
    from .costs import CostModel, pool_order, simulate_wall
    from .experiments import default_workers, run_dir

    rows, notes, seen = [], {}, {}
    paths = notebook_paths(_default_names(profile, names))
    experiments_by_nb = {}
    for path in paths:
        experiments, note = plans.notebook_experiments(path.stem, profile)
        experiments_by_nb[path.stem] = experiments
        if note:
            notes[path.stem] = note
    everything = [e for exps in experiments_by_nb.values() for e in exps]
    workers = default_workers(everything) if workers is None else int(workers)
    model = CostModel.from_cache(runs_dir, costs_file)
    pool, pool_minutes, broken = [], [], {}
    for nb, experiments in experiments_by_nb.items():
        runs = {}
        for e in experiments:  # a run listed twice by one notebook (a shared row) counts once
            runs.setdefault(run_dir(e, runs_dir, data_root=data_root), e)
        for where, e in runs.items():
            if where in seen:
                status = "cached" if seen[where] == "cached" else f"planned by {seen[where]}"
                minutes, source = float("nan"), ""
            elif (state := _cache_status(where))[0] == "cached":  # is_finished, without computing the key again
                status, minutes, source = "cached", float("nan"), ""
                seen[where] = "cached"
            else:
                status = state[0]
                if status == "broken":
                    broken[where.name] = state[1]
                minutes, source = model.estimate(e)
                seen[where] = nb
                pool.append(e)
                pool_minutes.append(minutes)
            rows.append({"notebook": nb, "kind": e.kind, "method": e.method, "seed": e.seed,
                         "setting": setting_label(e), "status": status, "minutes": minutes, "estimate": source,
                         "run": where.name})
    frame = pd.DataFrame(rows, columns=["notebook", "kind", "method", "seed", "setting", "status", "minutes",
                                        "estimate", "run"])
    order = pool_order(pool, pool_minutes)
    frame.attrs.update(profile=profile, workers=workers, notes=notes,
                       threads="/".join(map(str, sorted({e.threads for e in everything}) or [1])),
                       to_train=len(pool), train_minutes=float(np.nansum(pool_minutes)), broken=broken,
                       unknown=int(np.isnan(pool_minutes).sum()) if pool_minutes else 0,
                       wall_minutes=simulate_wall(pool, pool_minutes, workers, runs_dir) if pool else 0.0,
                       pool=[pool[i] for i in order], pool_minutes=[pool_minutes[i] for i in order])
    return frame


def _cache_status(where: Path) -> tuple[str, str]:
    """``(status, error)`` of a run folder: ``cached``, ``to train``, or ``broken`` when its ``eval.json``
    is torn -- never counted as cached, since no notebook could read it."""
    if not (where / "eval.json").exists():
        return "to train", ""
    try:
        read_result(where)
    except BrokenRun as error:
        return "broken", str(error)
    return "cached", ""


def setting_label(exp) -> str:
    """What a run's distillation setting changes from the profile's chosen one (``chosen`` if
    nothing; ``-`` for teachers and students alone)."""
    from dataclasses import fields

    profile = get_profile(exp.profile)
    student = profile.for_kind(exp.kind).student_backbone
    extra = [f"student={exp.student}"] if exp.student and exp.student != student else []
    if exp.init_from is not None:
        extra.append(f"warm start from its {exp.init_from.method} run, seed {exp.init_from.seed}")
    if exp.method in ("teacher", "none"):
        return ", ".join(extra) or "-"
    chosen = profile.distill_for(exp.kind, exp.method)
    config = exp.distill_config()
    changed = [f"{f.name}={getattr(config, f.name)!r}" for f in fields(config)
               if f.name != "method" and getattr(config, f.name) != getattr(chosen, f.name)]
    return ", ".join(extra + changed) or "chosen"


def format_plan(frame: pd.DataFrame, verbose: bool = True) -> str:
    """The plan as text: per notebook its runs (those to train listed one by one), then the totals."""
    a = frame.attrs
    lines = [f"Plan for profile {a['profile']}: {a['workers']} worker(s) x {a['threads']} thread(s); nothing is "
             "trained by this command."]
    for nb, part in frame.groupby("notebook", sort=False):
        todo = part[part.status == "to train"]
        shared = part.status.str.startswith("planned by").sum()
        bad = part[part.status == "broken"]
        lines.append(f"\n{nb}: {len(part)} runs -- {int((part.status == 'cached').sum())} cached, {len(todo)} to train "
                     f"(~{np.nansum(todo.minutes):.0f} min of runs), {shared} planned by an earlier notebook"
                     + (f", {len(bad)} broken (listed below)" if len(bad) else ""))
        if nb in a["notes"]:
            lines.append(f"  note: {a['notes'][nb]}")
        lines += [f"  broken: {a['broken'][r]}" for r in bad.run]
        if verbose:
            for r in todo.itertuples():
                est = "unknown" if np.isnan(r.minutes) else f"~{r.minutes:.1f} min"
                est += " (another backbone's cost)" if "not measured" in r.estimate else ""
                lines.append(f"  to train: {r.kind:<12} {r.method:<8} seed {r.seed}  {r.setting:<40} {est}")
    unknown = f" ({a['unknown']} of them without a measured cost, counted as 0)" if a["unknown"] else ""
    if a["broken"]:
        unknown += f" ({len(a['broken'])} of them broken: clear them first, as listed above)"
    borrowed = int(frame[frame.status == "to train"].estimate.str.contains("not measured").sum())
    if borrowed:
        unknown += f" ({borrowed} estimated from another backbone's runs: their backbone has none measured)"
    h, m = divmod(round(a["wall_minutes"]), 60)
    lines.append(f"\nTotal: {a['to_train']} distinct runs to train{unknown}, ~{a['train_minutes']:.0f} min of runs; "
                 f"estimated wall ~{h} h {m:02d} min on {a['workers']} worker(s) (simulated: teachers first, longest "
                 "first, students wait for their teacher), plus executing the notebooks.")
    return "\n".join(lines)


def train_pool(profile: str = "cpu", names=(), workers: int | None = None, data_root: str | None = None,
               executor=None, runs_dir: Path = RUNS_DIR) -> list[dict]:
    """Train every run the notebooks ``names`` need that is not cached, in one pool (see
    :func:`reproduce`), with one progress bar weighted by the runs' estimated minutes."""
    from .experiments import run_all

    frame = plan(profile, names, workers, runs_dir, data_root)
    if frame.attrs["broken"]:  # before anything trains: the notebooks could not read these runs
        raise BrokenRun(f"{len(frame.attrs['broken'])} cached run(s) cannot be read:\n"
                        + "\n".join(frame.attrs["broken"].values()))
    pool, minutes = frame.attrs["pool"], frame.attrs["pool_minutes"]
    if not pool:
        return []
    print(format_plan(frame, verbose=False))
    return run_all(pool, workers=frame.attrs["workers"], executor=executor, data_root=data_root, runs_dir=runs_dir,
                   estimates=[0.0 if np.isnan(m) else m for m in minutes])


NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(names=()) -> list[Path]:
    if not names:
        return sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    paths = []
    for n in names:
        p = Path(n)
        if not p.suffix:
            p = p.with_suffix(".ipynb")
        if not p.is_file():
            p = NOTEBOOK_DIR / p.name
        if not p.is_file():
            raise FileNotFoundError(f"no notebook {n!r} (looked in {NOTEBOOK_DIR})")
        paths.append(p)
    return paths


def run_notebooks(names=(), profile: str = "cpu", workers: int | None = None,
                  data_root: str | None = None, done=None) -> list[Path]:
    """Execute each notebook with ``-p profile <profile>`` (and ``-p workers <workers>`` when
    given: how many runs each trains at once); the executed copy is saved beside its results as
    ``results/<name>/<name>.ipynb`` (``results/_<profile>/...`` for scratch profiles). ``done`` is
    called with each executed copy as soon as its notebook has finished. Holds each notebook's
    results lock (:func:`executing`) throughout."""
    with executing(names, profile):
        return _run_notebooks(names, profile, workers, data_root, done)


def _run_notebooks(names, profile: str, workers: int | None, data_root: str | None, done=None) -> list[Path]:
    import papermill

    parameters = ({"profile": profile} | ({} if workers is None else {"workers": int(workers)})
                  | ({} if data_root is None else {"data_root": str(data_root)}))
    outs = []
    for path in notebook_paths(names):
        # papermill saves the notebook after every cell: run it beside results/<name>/ and move it in
        # only when it has finished, so a killed or failed run never leaves a half-executed copy there.
        # A failed run's copy stays at the partial path, for its traceback.
        where = results_dir(path.stem, profile, create=False)
        partial = where.with_name(f".{path.stem}.partial.ipynb")  # papermill wants the .ipynb suffix
        partial.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(path), str(partial), parameters=parameters, cwd=str(REPO_ROOT),
                                   progress_bar=True, kernel_name="python3")
        where.mkdir(parents=True, exist_ok=True)
        out = where / path.name
        os.replace(partial, out)
        outs.append(out)
        if done is not None:
            done(out)
    return outs


def run_baselines(profile: Profile, kinds=("retinanet", "faster_rcnn"), seeds=None,
                  runs_dir: Path = RUNS_DIR, out_dir: Path | None = None, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """Teacher (first seed) and student (every seed) per detector kind; returns one row per run,
    also written to ``out_dir`` (default ``results/00_baselines/``)."""
    seeds = tuple(seeds if seeds is not None else profile.seeds)
    t0 = time.perf_counter()
    rows = []
    for kind in kinds:
        p = profile.for_kind(kind)
        for role, backbone, role_seeds in (("teacher", p.teacher_backbone, seeds[:1]),
                                           ("student", p.student_backbone, seeds)):
            for seed in role_seeds:
                r = train_detector(kind, backbone, p.for_teacher() if role == "teacher" else p, seed,
                                   runs_dir, data_dir=data_dir)
                rows.append({"kind": kind, "role": role, "backbone": backbone, "seed": seed,
                             **{f"{k} {role}": round(100 * v, 2) for role in ("val", "test")
                                for k, v in r["metrics"].get(role, {}).items()},
                             "train_minutes": round(r["train_seconds"] / 60, 2), "run": r["run_dir"]})
    table = pd.DataFrame(rows)
    write_results("00_baselines", profile, seeds, time.perf_counter() - t0, {"table": table},
                  note="AP columns in percent (COCO AP@[.5:.95], AP50, ... via pycocotools; VOC07 11-point mAP@0.5).",
                  out_dir=out_dir, kinds=list(kinds))
    return table
