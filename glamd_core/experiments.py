"""Experiments as data, run through the run cache (``glamd_core.runs``).

An :class:`Experiment` names everything that defines one trained detector: kind, backbones,
distillation method and weights, patch size, seed and profile (which fixes dataset, image size
and schedule). ``run(experiment)`` returns the cached result or trains it; teachers and plain
students are shared by every notebook that needs them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import multiprocessing
import os
import platform
import re
import shutil
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from .detectors import KINDS
from .distill import METHODS, DistillConfig
from .engine import check_seed, check_threads
from .data.splits import DATA_DIR, dataset_root
from .files import BrokenRun, exclusive, git_commit, read_result, recover_dir, replace_dir, try_exclusive
from .profiles import PROFILES, Profile, get_profile
from .run_key import unkeyed_environment
from .runs import RESULTS_DIR, RUNS_DIR, RunSpec, execute, run_spec


@dataclass(frozen=True)
class Experiment:
    """One run of the study, named by what it is; :func:`run` trains it (or finds it in the run cache).

    Args:
        kind: ``retinanet``, ``faster_rcnn`` or ``cascade_rcnn``.
        method: ``none`` (the student alone), ``teacher``, or a distillation method (``glamd``,
            ``global``, ``local``, ``uniform``, ``defeat``, ``hybrid``).
        profile: the profile's name (``smoke``, ``cpu``, ``paper_voc``, ``paper_coco``, ...).
        seed: the training seed (initialisation and data order).
        student, teacher: timm backbones; None takes the profile's.
        distill: the distillation settings; None takes the profile's for this kind and method.
        epochs: students' and teachers' epochs; None takes the profile's schedules.
        teacher_checkpoint: a teacher trained elsewhere, imported instead of trained.
        threads: torch threads of a CPU run (1 is canonical; another count is keyed).
        init_from: the experiment whose finished run the student starts from (a warm start).

    Everything that cannot train is refused here, before anything does.

    >>> exp = Experiment("retinanet", "glamd", "smoke", seed=1)
    >>> run(exp)["metrics"]["test"]["AP"]  # doctest: +SKIP
    """

    kind: str = "retinanet"
    method: str = "none"  # none: the student trained alone; teacher: the teacher itself; else a DistillConfig method
    profile: str = "cpu"
    seed: int = 0
    student: str | None = None  # default: the profile's student backbone
    teacher: str | None = None  # default: the profile's teacher backbone
    # alpha, beta, gamma, patch size, ...; None: the profile's settings for this kind and method
    # (Profile.distill_for, chosen by notebooks/00_calibration). The method field above always wins.
    distill: DistillConfig | None = None
    epochs: int | None = None  # default: the profile's schedules; else students' and teachers' epochs
    # A teacher trained elsewhere (engine checkpoint or bare state dict of the teacher backbone's
    # detector): imported into the run cache, keyed by its content, instead of trained here.
    teacher_checkpoint: str | None = None
    # torch threads of a CPU run (its teacher's too). 1 is canonical and unkeyed; any other count is
    # part of the run key, since CPU float sums -- and so the weights -- depend on it.
    threads: int = 1
    # A warm start: the student starts from this experiment's finished run (e.g. its own student-alone
    # run at the same seed) instead of its backbone's initialisation; keyed by that run's name.
    init_from: "Experiment | None" = None

    def __post_init__(self):  # fail before any training starts, naming the choices
        if self.kind not in KINDS:
            raise ValueError(f"unknown detector kind {self.kind!r}; choose one of {KINDS}")
        if self.method not in ("teacher", *METHODS):
            raise ValueError(f"unknown method {self.method!r}; choose 'teacher' or one of {METHODS}")
        check_seed(self.seed, "Experiment.seed")
        if self.teacher_checkpoint is not None and self.method == "none":
            raise ValueError(f"teacher_checkpoint {self.teacher_checkpoint!r} is given, but method 'none' trains the "
                             "student alone and has no teacher; choose a distillation method (or 'teacher' to "
                             "import and evaluate the checkpoint)")
        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 1):
            raise ValueError(f"epochs must be a positive integer or None, got {self.epochs!r}")
        check_threads(self.threads, "Experiment.threads")
        get_profile(self.profile)
        for role in ("student", "teacher"):
            _check_backbone(getattr(self, role), f"Experiment.{role}")
        if self.init_from is not None:
            if not isinstance(self.init_from, Experiment):
                raise ValueError(f"init_from must be an Experiment (the run to start from), got {self.init_from!r}")
            if self.method == "teacher":
                raise ValueError("init_from warm-starts a student; a teacher run starts from its backbone")
            self._check_warm_start()

    def _check_warm_start(self) -> None:
        """A warm start loads a detector of the same kind, profile (its detector settings) and backbone:
        any other fails only once ``init_from`` has trained to the end, so it is refused here."""
        source = self.init_from
        ours = {"kind": self.kind, "profile": self.profile, "backbone": self.student_backbone}
        theirs = {"kind": source.kind, "profile": source.profile, "backbone": _plain_backbone(source)}
        differ = [f"{k} {theirs[k]}, not {ours[k]}" for k in ours if theirs[k] != ours[k]]
        if differ:
            raise ValueError(f"init_from: the {source.kind} {source.method} run (profile {source.profile}, seed "
                             f"{source.seed}) has {'; '.join(differ)}: a warm start loads a detector of the same "
                             "kind, profile and student backbone")

    def resolved_profile(self) -> Profile:
        """The profile this experiment's run is trained with (a teacher's: its teacher schedule)."""
        return get_profile(self.profile).for_run(self.kind, self.method, self.epochs, self.threads)

    def distill_config(self) -> DistillConfig:
        """The distillation settings this experiment trains with (``method`` included)."""
        base = self.distill if self.distill is not None else get_profile(self.profile).distill_for(self.kind, self.method)
        return replace(base, method=self.method)

    @property
    def student_backbone(self) -> str:
        return self.student or self.resolved_profile().student_backbone

    @property
    def teacher_backbone(self) -> str:
        return self.teacher or self.resolved_profile().teacher_backbone


def resolve(exp: Experiment, runs_dir: Path = RUNS_DIR, data_dir: Path = DATA_DIR, data_root=None,
            progress: bool | None = None) -> RunSpec:
    """``exp`` resolved once into its :class:`runs.RunSpec`. Nothing is trained; a synthetic dataset is
    generated on first use (the key names its content).

    Args:
        exp: the run; ``runs_dir``, ``data_dir``, ``data_root``: as for :func:`run`.
        progress: per-epoch progress bars (None: the profile's; not part of the run's key).

    Returns:
        The spec: profile as the run trains, its configs, dataset folder, teacher and warm-start specs,
        kernels, key and folder; :func:`runs.execute` trains it.
    """
    init = None if exp.init_from is None else resolve(exp.init_from, runs_dir, data_dir, data_root, progress)
    profile = get_profile(exp.profile).for_run(exp.kind, exp.method, exp.epochs, exp.threads, progress)
    distill = None if _is_plain(exp) else exp.distill_config()
    student = exp.student or profile.student_backbone
    teacher = exp.teacher or profile.teacher_backbone
    where = dict(runs_dir=runs_dir, data_root=data_root, data_dir=data_dir)
    if exp.method == "teacher":
        return run_spec(exp.kind, teacher, profile, exp.seed, imported=exp.teacher_checkpoint, **where)
    return run_spec(exp.kind, student, profile, exp.seed, distill=distill, teacher_backbone=teacher,
                    teacher_checkpoint=exp.teacher_checkpoint, init=init, **where)


def run(exp: Experiment, runs_dir: Path = RUNS_DIR, data_dir: Path = DATA_DIR, data_root=None,
        progress: bool | None = None) -> dict:
    """Train (or reuse) ``exp``: resolve it once (:func:`resolve`), then train, evaluate and record
    (:func:`runs.execute`).

    Args:
        exp: the run.
        runs_dir: the run cache (default ``$GLAMD_RUNS_DIR``, else ``runs/``).
        data_dir: where synthetic datasets are generated; ``data_root``: real data's root (paper profiles).
        progress: per-epoch progress bars (None: the profile's; not part of the key).

    Returns:
        Its ``eval.json``: ``metrics`` ({split: {"AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07_mAP50"}},
        AP in [0, 1]), ``run_dir`` (the run folder's *name*), ``kind``, ``backbone``, ``seed``, ``profile``,
        ``train_seconds``, ``setup_seconds``, ``eval_seconds``, ``threads``, ``code_commit``,
        ``environment``; a distilled run adds ``teacher_run``; plus the experiment's ``method``.
    """
    spec = resolve(exp, runs_dir, data_dir, data_root, progress)
    result = execute(spec)
    return result | {"method": exp.method, "kind": exp.kind, "seed": exp.seed, "profile": exp.profile}


def _check_backbone(name: str | None, what: str) -> None:
    """A backbone name timm knows (None: the profile's), checked when an experiment is made: an
    unknown one would be planned, and fail only when its run starts."""
    import timm

    if name is not None and not (isinstance(name, str) and timm.is_model(name)):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else " (timm.list_models() lists them)"
        raise ValueError(f"{what} {name!r} is not a timm model{hint}")


def _is_plain(exp: Experiment) -> bool:
    """A detector trained alone (the teacher, or the student without distillation)."""
    return exp.method in ("teacher", "none")


def _plain_backbone(exp: Experiment) -> str:
    return exp.teacher_backbone if exp.method == "teacher" else exp.student_backbone


def run_dir(exp: Experiment, runs_dir: Path = RUNS_DIR, data_dir: Path = DATA_DIR, data_root=None) -> Path:
    """Where ``exp``'s run lives in the cache (its spec's folder), computed without training anything.
    Two experiments that train the same run (e.g. the same setting spelled two ways) share it."""
    return resolve(exp, runs_dir, data_dir, data_root).folder


def is_finished(exp: Experiment, runs_dir: Path = RUNS_DIR, data_dir: Path = DATA_DIR, data_root=None) -> bool:
    """Whether ``exp``'s run is in the cache, found without training anything. A torn ``eval.json`` is
    an error naming it (:func:`files.read_result`): such a run is neither finished nor trainable as is."""
    where = run_dir(exp, runs_dir, data_dir, data_root)
    return (where / "eval.json").exists() and bool(read_result(where))


def default_workers(experiments: list[Experiment]) -> int:
    """How many runs to train at once when ``run_all`` is not told.

    On CPU, small detectors use two cores poorly from one process: four ``cpu``-profile students
    trained 1.49x faster as two 1-thread workers than one after the other with 2 threads
    (``benchmarks/parallel_runs.py``, 2 cores). So CPU profiles use one worker per core, at most 4
    (each holds a dataset and up to two detectors in memory; more than 2 cores were never
    measured). ``smoke`` stays in-process (a worker's start-up costs more than its runs), and GPU
    profiles train one run at a time (one process owns the device).
    """
    profiles = [e.resolved_profile() for e in experiments]
    if any(p.name == "smoke" or p.train.device != "cpu" for p in profiles):
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _stage(exp: Experiment) -> int:
    """Teachers first, then students alone, then distilled students, which need the teachers."""
    if exp.init_from is not None:  # a warm start after the run it starts from
        return _stage(exp.init_from) + 1
    return {"teacher": 0, "none": 1}.get(exp.method, 2)


def _init_worker(threads: int, parent_poll_seconds: float = 2.0) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(), parent_poll_seconds), daemon=True).start()


def _exit_with_parent(parent: int, every: float) -> None:
    """End this worker when the process that started it is gone. A driver killed on its own (SIGTERM or
    SIGKILL to its pid, a kernel restarted) would otherwise leave its workers training on, holding
    their runs' locks and the cores, unseen. Leaving mid-epoch is safe: checkpoints and results are
    written atomically, the run lock is an ``flock`` the kernel releases, and the run resumes from
    its last epoch next time."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


_SPAWN_HINT = ("Worker processes start by importing the calling script: in a script (not a notebook), call "
               "run_all under `if __name__ == \"__main__\":`, or pass workers=1.")


def run_all(experiments: list[Experiment], workers: int | None = None, executor: Executor | None = None,
            estimates: list[float] | None = None, **kw) -> list[dict]:
    """Run (or fetch) every experiment, with a progress bar over them.

    Args:
        experiments: the runs; one asked for twice is trained once.
        workers: runs trained at once, in separate processes (None: :func:`default_workers`).
        executor: a ``concurrent.futures.Executor`` to train on instead (below).
        estimates: each experiment's estimated minutes, for the progress bar.
        **kw: passed to :func:`run` (``runs_dir``, ``data_dir``, ``data_root``).

    Returns:
        One :func:`run` result per experiment, in the given order.

    ``workers`` > 1 trains that many runs at once in separate processes, each with
    ``cpu_count // workers`` threads (None: :func:`default_workers`). Runs already in the cache are
    read in this process. A run asked for twice at once (say, the teacher of two distilled
    students) is trained once: the run cache holds a lock per run. Workers are spawned, so a
    script that calls this must guard the call with ``if __name__ == "__main__":`` (notebooks
    need nothing).

    ``executor``: any ``concurrent.futures.Executor`` to train the missing runs on instead of local
    worker processes -- e.g. ``submitit.AutoExecutor`` (SLURM) or a dask ``Client.get_executor()``.
    Its workers must import this package and see ``runs_dir`` / ``data_dir`` at the same paths (a
    shared filesystem: the run cache is where they meet); they set their own thread counts. The
    executor is not shut down here.

    ``estimates``: each experiment's estimated minutes (``glamd_core.costs``); the progress bar then
    counts estimated minutes of runs done, so its ETA weighs a teacher as the five students it costs.
    """
    from tqdm.auto import tqdm

    experiments = list(experiments)
    workers = default_workers(experiments) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # how multiprocessing itself tells
        raise RuntimeError(_SPAWN_HINT)
    if estimates is not None and len(estimates) != len(experiments):
        raise ValueError(f"{len(estimates)} estimates for {len(experiments)} experiments")
    weight = list(estimates) if estimates is not None else [1] * len(experiments)
    bar = tqdm(total=round(sum(weight), 1), desc="runs" if estimates is not None else "experiments",
               unit="est. min" if estimates is not None else "it")
    done = 0

    def advance(i: int, what: str) -> None:
        nonlocal done
        done += 1
        bar.set_postfix_str(f"{done}/{len(experiments)} runs; {what}")
        bar.update(weight[i])

    results: list[dict | None] = [None] * len(experiments)
    todo = []
    for i, exp in enumerate(experiments):
        if (workers == 1 and executor is None) or is_finished(exp, **kw):
            bar.set_postfix_str(f"{done}/{len(experiments)} runs; {exp.kind} {exp.method} seed {exp.seed}")
            results[i] = run(exp, **kw)
            advance(i, f"{exp.kind} {exp.method} seed {exp.seed}")
        else:
            todo.append(i)
    if todo:
        for i in todo:  # generate a missing synthetic dataset here, where its progress bar shows
            dataset_root(experiments[i].resolved_profile(), kw.get("data_root"), kw.get("data_dir", DATA_DIR))
        todo.sort(key=lambda i: _stage(experiments[i]))
        threads = max(1, (os.cpu_count() or 1) // workers)
        if executor is None:
            bar.set_postfix_str(f"{len(todo)} runs to train, {workers} at a time with {threads} thread(s) each")
            pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(threads,))
        else:
            bar.set_postfix_str(f"{len(todo)} runs to train on {type(executor).__name__}")
            pool = contextlib.nullcontext(executor)
        with pool as ex:
            futures = {ex.submit(run, experiments[i], progress=False, **kw): i for i in todo}
            try:
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    advance(i, f"done: {experiments[i].kind} {experiments[i].method} seed {experiments[i].seed}")
            except BrokenProcessPool as error:
                ex.shutdown(wait=False, cancel_futures=True)
                raise RuntimeError("a run_all worker process died (its traceback is above, on stderr). "
                                   "Out of memory? Try fewer workers. " + _SPAWN_HINT) from error
            except BaseException:  # a failed run or Ctrl-C: start nothing new (runs in flight finish, or resume later)
                for future in futures:
                    future.cancel()
                if executor is None:  # a caller's executor is the caller's to shut down
                    ex.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
    return results


def results_frame(results: list[dict], split: str = "test") -> pd.DataFrame:
    """One row per run, AP metrics in percent on ``split`` (``test``, the held-out split every table
    reports; ``val`` to choose settings)."""
    rows = []
    for r in results:
        if split not in r["metrics"]:
            raise ValueError(f"run {r['run_dir']} was not evaluated on {split!r} (it has {sorted(r['metrics'])}); "
                             "runs made before the test split existed must be retrained")
        rows.append({"kind": r["kind"], "method": r["method"], "seed": r["seed"], "split": split,
                     **{k: 100 * v for k, v in r["metrics"][split].items()},
                     "train_minutes": r["train_seconds"] / 60, "run": r["run_dir"],
                     # runs cached before this field existed do not know their code's commit
                     "code_commit": r.get("code_commit", "unrecorded"),
                     "threads": r.get("threads"), "teacher_run": r.get("teacher_run", "")})
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, by=("kind", "method"), metric: str = "AP") -> pd.DataFrame:
    """mean, std and n of ``metric`` per group (std is NaN for n = 1)."""
    g = frame.groupby(list(by), sort=False)[metric]
    return g.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()


_RUN_NAME = re.compile(r".+-[0-9a-f]{12}")  # <kind>-<backbone>[-<method>]-s<seed>-<key> (files.config_key)


def is_run(folder: Path) -> bool:
    """Whether ``folder`` is a run of the cache: a real folder named ``...-<12-hex key>`` holding its
    ``config.json`` -- or only its ``.lock``, a run whose training never got as far as its config.
    Listing and clearing touch nothing else, whatever folder the cache is pointed at."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir() or not _RUN_NAME.fullmatch(folder.name):
        return False
    return (folder / "config.json").is_file() or (folder / ".lock").is_file()


def _run_folders(runs_dir: Path, pattern: str) -> list[Path]:
    """The runs directly inside ``runs_dir`` whose names match ``pattern`` (a glob over run names)."""
    if not isinstance(pattern, str) or pattern.strip() in ("", ".") or any(c in pattern for c in ("/", "\\", "..")):
        raise ValueError(f"a run pattern is a glob over run names inside {runs_dir} (e.g. 'retinanet-*'), not a "
                         f"path: {pattern!r}")
    root = Path(runs_dir).resolve()
    return [d for d in sorted(root.glob(pattern)) if d.resolve().parent == root and is_run(d)]


def list_runs(runs_dir: Path = RUNS_DIR, pattern: str = "*") -> pd.DataFrame:
    """Cached runs (names matching ``pattern``): name, whether finished, size on disk."""
    rows = []
    for d in _run_folders(runs_dir, pattern):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        done = read_eval(d)
        finished = (d / "eval.json").exists()
        rows.append({"run": d.name, "finished": "torn eval.json" if finished and done is None else finished,
                     "MB": round(size / 2**20, 1),
                     "threads": None if done is None else done.get("threads")})
    return pd.DataFrame(rows, columns=["run", "finished", "MB", "threads"])


def read_eval(run: Path) -> dict | None:
    """A finished run's ``eval.json`` as a dict; None when it is missing, torn or not a JSON object (a
    listing, a cost table or a manifest must not stop on one bad run; they say so where it matters).
    What decides whether to train -- ``run``, :func:`is_finished`, the plan -- reads it with
    :func:`files.read_result`, for which a torn one is an error naming it."""
    try:
        return read_result(run)
    except BrokenRun:
        return None


def clear_runs(runs_dir: Path = RUNS_DIR, pattern: str | None = None, unfinished_only: bool = False,
               everything: bool = False) -> tuple[list[str], list[str]]:
    """Delete cached runs whose name matches ``pattern`` (a glob over run names, e.g.
    ``'retinanet-*'``); ``everything=True`` instead of a pattern clears the whole cache.

    Returns ``(removed, busy)``: runs being trained right now, and teachers a distilled run is
    reading (their lock is held, exclusively or shared), are left alone and listed in ``busy``.
    A pattern is a run name, never a path: it may not contain a path separator or ``..``. Only
    runs directly inside ``runs_dir`` (:func:`is_run`) are ever touched, never other folders and
    never ``runs_dir`` itself.
    """
    if pattern is None and not everything:
        raise ValueError("name the runs to clear with a pattern (e.g. 'retinanet-*'), or ask for everything "
                         "explicitly (--all / everything=True)")
    if pattern is not None and everything:
        raise ValueError("give a pattern or everything=True, not both")
    removed, busy = [], []
    for d in _run_folders(runs_dir, "*" if everything else pattern):
        if unfinished_only and (d / "eval.json").exists():
            continue
        with try_exclusive(d / ".lock") as held:
            if not held:
                busy.append(d.name)
                continue
            shutil.rmtree(d)
        removed.append(d.name)
    return removed, busy


def manifest(profile: Profile, seeds, wall_seconds: float, **extra) -> dict:
    import timm
    import torchvision

    return {"profile": profile.name, "seeds": list(seeds), "commit": git_commit(),
            "wall_seconds": round(wall_seconds, 1), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), **unkeyed_environment(), **extra}



def results_dir(name: str, profile: str, create: bool = True) -> Path:
    """``results/<name>/``; a scratch profile's (smoke in CI, the paper dry runs) go to the
    git-ignored ``results/_<profile>/<name>/`` so they never overwrite the committed results of a real run."""
    scratch = profile in PROFILES and PROFILES[profile].scratch
    base = RESULTS_DIR / f"_{profile}" if scratch else RESULTS_DIR
    out = base / name
    recover_dir(out)
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def teachers_of(results=(), tables=(), runs_dir: Path = RUNS_DIR) -> dict[str, list[dict]]:
    """The teacher runs behind ``results`` (run dicts) and ``tables`` (runs tables with ``teacher_run``
    or teacher rows), per detector kind, each with its test AP: what a results folder's manifest
    names, so that one teacher is seen to be the same run, with the same AP, in every folder."""
    named: dict[str, set[str]] = {}
    aps: dict[str, float] = {}
    for r in results:
        if r.get("method") == "teacher":
            named.setdefault(r["kind"], set()).add(r["run_dir"])
            aps[r["run_dir"]] = 100 * r["metrics"]["test"]["AP"]
        elif r.get("teacher_run"):
            named.setdefault(r["kind"], set()).add(r["teacher_run"])
    for t in tables:
        if {"kind", "teacher_run"} <= set(t.columns):
            for kind, teacher in t[["kind", "teacher_run"]].drop_duplicates().itertuples(index=False):
                if isinstance(teacher, str) and teacher:
                    named.setdefault(kind, set()).add(teacher)
        if {"kind", "method", "run", "AP"} <= set(t.columns):
            rows = t[(t.method == "teacher") & (t.get("split", "test") == "test")]
            for kind, run_name, ap in rows[["kind", "run", "AP"]].itertuples(index=False):
                named.setdefault(kind, set()).add(run_name)
                aps[run_name] = float(ap)
    out = {}
    for kind, names in sorted(named.items()):
        out[kind] = []
        for n in sorted(names):
            if n not in aps:
                done = read_eval(Path(runs_dir) / n)
                test = (done or {}).get("metrics", {}).get("test", {})
                aps[n] = 100 * test["AP"] if "AP" in test else None
            out[kind].append({"run": n, "AP": aps[n]})
    return out


def write_results(name: str, profile: Profile, seeds, wall_seconds: float, tables: dict[str, pd.DataFrame],
                  figures: dict | None = None, note: str = "", out_dir: Path | None = None, runs=(), **extra) -> Path:
    """Tables as csv + markdown (with the provenance line), figures as png, the conclusion (``conclusion.md``,
    when ``conclusion`` is given) and the manifest.

    Args:
        name: the results folder (``results/<name>/``, or ``results/_<profile>/<name>/`` for a scratch profile).
        profile: the profile the results were made at; ``seeds``: the seeds they report.
        wall_seconds: the notebook's wall time, recorded in the manifest.
        tables: {file stem: DataFrame}; ``figures``: {file stem: matplotlib figure}.
        runs: the :func:`run` results the tables come from (named in the manifest with their teachers).
        **extra: more manifest fields (``conclusion``, ``notebook``, ``split``, the notebook's settings).

    Returns:
        The folder written.

    Written whole: everything goes to a staging folder that then replaces ``results/<name>/``, so a
    kill leaves the old set or the new one, never new tables beside an old manifest. Other files
    already there (e.g. a benchmark's output) are carried over, except the executed notebook
    ``<name>.ipynb``, which belongs to the previous results; the notebook runner puts the new one
    in place when the notebook finishes. ``out_dir`` replaces ``results/<name>/`` as the target.
    The manifest names the teacher runs (:func:`teachers_of`) of ``runs`` (the run dicts the results
    come from) and of the tables.
    """
    out = results_dir(name, profile.name) if out_dir is None else Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # one writer at a time: two processes writing one folder would share its staging folder (a
    # notebook executed twice at once, e.g. by two test workers). Not reproduce's lock, which the
    # driver holds while this notebook's kernel writes.
    with exclusive(out.with_name(f".{out.name}.write.lock")):
        return _write_results(out, name, profile, seeds, wall_seconds, tables, figures, note, runs, extra)


def _write_results(out: Path, name, profile, seeds, wall_seconds, tables, figures, note, runs, extra) -> Path:
    recover_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for old in out.iterdir():
        if old.is_file() and old.name != f"{name}.ipynb":
            shutil.copy2(old, staging / old.name)
    header = f"Profile `{profile.name}`, seeds {list(seeds)}, commit `{git_commit()}`.{' ' + note if note else ''}\n\n"
    for stem, table in tables.items():
        table.to_csv(staging / f"{stem}.csv", index=False)
        (staging / f"{stem}.md").write_text(header + table.to_markdown(index=False, floatfmt=".2f") + "\n")
    for stem, fig in (figures or {}).items():
        fig.savefig(staging / f"{stem}.png", dpi=120, bbox_inches="tight")
    conclusion = extra.pop("conclusion", None)  # the reading: in conclusion.md only, never in the manifest
    if isinstance(conclusion, str):
        (staging / "conclusion.md").write_text(header + conclusion + "\n")
    extra.setdefault("teachers", teachers_of(runs, tables.values()))
    (staging / "manifest.json").write_text(json.dumps(manifest(profile, seeds, wall_seconds, **extra), indent=2))
    replace_dir(staging, out)
    return out
