"""One detector training run = config -> run directory keyed by the config's hash (``run_key``
says what the key covers; this module trains, locks and finds runs).

A run's directory holds ``config.json``, the training checkpoint and logs (see ``engine``), the
detections on the val and test splits and ``eval.json`` (``metrics`` per split). Asking for the same config again reuses the finished
run (or resumes an interrupted one); any change of setting gives a new key.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import eval_transforms, train_transforms
from .data.real import RealData
from .data.splits import DATA_DIR, TrainingImages, evaluation_splits, keyed_root, load_split, splits
from .detectors import build_detector
from .distill import DistillConfig, Distiller, check_distillable
from .engine import (CHECKPOINT, cpu_threads, finished_run, init_distributed, stop_after_epoch, train,
                     training_seconds, warm_start)
from .evaluation import evaluate
from .files import (REPO_ROOT, BrokenRun, atomic_save, atomic_write_text, config_key, env_path, exclusive,
                    git_commit, read_result, shared_lock)
from .profiles import Profile
from .run_key import backbone_weights, detector_run, distilled_run, imported_run, unkeyed_environment
from .teacher_cache import teacher_cache_of

# GLAMD_RUNS_DIR: a run cache elsewhere, e.g. on a cluster's shared filesystem or a scratch disk.
# Empty or blank means unset (never the current directory); ~ is expanded.
RUNS_DIR = env_path("GLAMD_RUNS_DIR", REPO_ROOT / "runs")
RESULTS_DIR = REPO_ROOT / "results"


def _run(spec: "RunSpec") -> dict:
    """Train ``spec``'s detector once (the first process to hold the run's lock) and evaluate it; a
    finished run is read back."""
    run_dir, cfg = spec.folder, spec.train
    done = run_dir / "eval.json"
    stop_after_epoch()  # a bad $GLAMD_STOP_AFTER_EPOCH fails here, before the run's folder exists
    rank, world = init_distributed(cfg.device)  # (0, 1) unless launched by torchrun
    if world > 1:
        with cpu_threads(cfg):
            return _run_distributed(spec, rank)
    if done.exists():
        return read_result(run_dir)
    with exclusive(run_dir / ".lock"):  # inside the run: clearing a run clears its lock
        if done.exists():  # another process finished it while we waited for the lock
            return read_result(run_dir)
        with cpu_threads(cfg):  # the run's own thread count, whoever calls: a worker, the CLI, a notebook
            return _train_and_evaluate(spec)


def _run_distributed(spec: "RunSpec", rank: int) -> dict:
    """One run under torchrun: rank 0 holds the run's lock and decides whether it must train; every
    rank then trains (DistributedDataParallel) and evaluates its shard; rank 0 writes the run and
    hands its result to every rank."""
    run_dir = spec.folder
    done = run_dir / "eval.json"
    with contextlib.ExitStack() as stack:
        if rank == 0:
            stack.enter_context(exclusive(run_dir / ".lock"))
        result, broken = None, None
        if rank == 0 and done.exists():
            try:
                result = read_result(run_dir)
            except BrokenRun as error:
                broken = str(error)
        finished = [result is not None if rank == 0 else None, broken]
        torch.distributed.broadcast_object_list(finished)  # a broken run stops every rank: none is left waiting
        if finished[1] is not None:
            raise BrokenRun(finished[1])
        if not finished[0]:
            result = _train_and_evaluate(spec)
        shared = [result]
        torch.distributed.broadcast_object_list(shared)  # from rank 0: no shared filesystem needed
    return shared[0]


def _train_and_evaluate(spec: "RunSpec") -> dict:
    run_dir, config, profile, cfg, root = spec.folder, spec.config, spec.profile, spec.train, spec.data
    done = run_dir / "eval.json"
    t_setup = time.perf_counter()
    try:  # everything that can fail on a bad setting or bad data, before anything is written
        train_ds = load_split(profile, root, "train", train_transforms(), skip_ignored=True)
        eval_sets = {role: load_split(profile, root, role, eval_transforms()) for role in evaluation_splits(profile)}
        torch.manual_seed(cfg.seed)  # model initialisation
        trainable, detector = _build(spec, train_ds.num_classes)
    except BaseException:
        if not (run_dir / CHECKPOINT).exists():  # leave no unfinished run behind that never started
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, default=str))
    # The key covers the configuration, not the code: record which code trained the run.
    code_commit = git_commit()
    t0 = time.perf_counter()
    setup_seconds = t0 - t_setup  # datasets, detectors and (first student of a teacher) its output cache
    imported = config["what"] == "imported"
    if imported:  # a detector trained elsewhere: its weights become the run's checkpoint, nothing is trained
        if rank == 0:
            atomic_save({"model": trainable.state_dict()}, run_dir / CHECKPOINT)
        summary = {}
    else:
        summary = train(trainable, train_ds, cfg, run_dir)
    t_eval = time.perf_counter()
    metrics = {role: evaluate(detector, ds, profile.eval_batch_size, cfg.device, run_dir / f"detections_{role}.json",
                              progress=cfg.progress)
               for role, ds in eval_sets.items()}  # sharded over the ranks under torchrun
    if rank != 0:
        return None  # rank 0 writes the run and shares its result
    result = {"kind": config["kind"], "backbone": config["backbone"], "seed": cfg.seed, "profile": profile.name,
              "metrics": metrics, "train_seconds": 0.0 if imported else training_seconds(run_dir),
              "wall_seconds_this_call": time.perf_counter() - t0, "setup_seconds": setup_seconds,
              "eval_seconds": time.perf_counter() - t_eval, "final_loss": summary.get("loss"),
              "run_dir": run_dir.name, "threads": torch.get_num_threads(), "code_commit": code_commit,
              "environment": unkeyed_environment()}
    cache = getattr(trainable, "teacher_cache", None)
    if cache is not None:  # batches served from the teacher-output cache / run online, in this call
        result["teacher_cache_batches"] = {"cached": cache.hits, "online": cache.misses,
                                           "entries_repaired": cache.repaired}
    atomic_write_text(done, json.dumps(result, indent=2))  # readers outside the lock never see half a file
    return result


@dataclass(frozen=True)
class RunSpec:
    """One run, resolved once: everything it is, before anything trains.

    ``what`` is ``detector`` (a detector trained alone: a teacher, a student), ``distilled`` (a student
    distilled from ``teacher``, itself a spec) or ``imported`` (a detector trained elsewhere, keyed by
    its ``checkpoint``'s content). ``profile`` is the profile as the run trains (its kind's settings,
    schedule and thread count applied); ``data`` the dataset's folder (a synthetic set generated: its
    key is its content); ``config`` the keyed part, whose hash is the key; ``init`` the run its weights
    start from (a spec, trained first, or a finished run's folder). :func:`run_spec` builds it,
    :func:`execute` trains and evaluates it; the key, the folder and the training settings are read
    off it, never resolved again."""

    what: str
    kind: str
    backbone: str
    seed: int
    profile: Profile
    data: Path
    config: dict
    name: str
    runs_dir: Path
    distill: DistillConfig | None = None
    teacher: "RunSpec | None" = None
    init: "RunSpec | Path | None" = None
    checkpoint: Path | None = None

    @property
    def key(self) -> str:
        return config_key(self.config)

    @property
    def folder(self) -> Path:
        return Path(self.runs_dir) / f"{self.name}-{self.key}"

    @property
    def detector(self) -> dict:
        """The options its detector is built with: the profile's, and the ImageNet weights its backbone
        starts from where the profile uses them (an imported detector: its checkpoint's weights)."""
        if self.what == "imported" or not self.profile.pretrained_backbones:
            return dict(self.profile.detector)
        return dict(self.profile.detector, backbone_checkpoint=backbone_weights(self.backbone))

    @property
    def train(self):
        """The training settings, the run's seed among them (an imported detector trains nothing)."""
        return self.profile.train if self.what == "imported" else self.profile.with_train(seed=self.seed).train


def _teacher_seed(profile: Profile, teacher_seed: int | None) -> int:
    """A distilled run's teacher: the profile's first seed unless told."""
    return profile.seeds[0] if teacher_seed is None else teacher_seed


def run_spec(kind: str, backbone: str, profile: Profile, seed: int = 0, runs_dir: Path = RUNS_DIR,
             data_root: str | Path | None = None, data_dir: Path = DATA_DIR, *, distill: DistillConfig | None = None,
             teacher_backbone: str | None = None, teacher_seed: int | None = None,
             teacher_checkpoint: str | Path | None = None, init: "RunSpec | str | Path | None" = None,
             imported: str | Path | None = None) -> RunSpec:
    """The one place a run is resolved. ``profile``: as ``kind`` trains with it (:meth:`Profile.for_kind`
    or :meth:`Profile.for_run` applied). ``distill`` None: a detector trained alone (or, with ``imported``,
    a checkpoint trained elsewhere); else a student distilled from its teacher -- the profile's teacher
    schedule at ``teacher_seed`` (default: the profile's first seed), or ``teacher_checkpoint`` imported.
    ``init``: the run the weights start from (a spec, or a finished run's name or folder), keyed by name."""
    if profile.by_kind:
        raise ValueError(f"run_spec takes profile {profile.name!r} as {kind} trains with it: pass "
                         f"profile.for_kind({kind!r})")
    if imported is not None and distill is not None:
        raise ValueError("run_spec: an imported checkpoint is evaluated, not distilled; pass imported or distill")
    where = dict(runs_dir=runs_dir, data_root=data_root, data_dir=data_dir)
    teacher = None
    if distill is not None:  # its teacher first: the student's key names the teacher's run
        teacher = (run_spec(kind, teacher_backbone, profile, imported=teacher_checkpoint, **where)
                   if teacher_checkpoint is not None else
                   run_spec(kind, teacher_backbone, profile.for_teacher(), _teacher_seed(profile, teacher_seed), **where))
    root = keyed_root(profile, data_root, data_dir)
    init_name = init.folder.name if isinstance(init, RunSpec) else (None if init is None else Path(init).name)
    if imported is not None:
        name, config = imported_run(kind, backbone, profile, imported, root)
        return RunSpec("imported", kind, backbone, 0, profile, root, config, name, Path(runs_dir),
                       checkpoint=Path(imported))
    if teacher is None:
        name, config = detector_run(kind, backbone, profile, seed, root, init_name)
        return RunSpec("detector", kind, backbone, seed, profile, root, config, name, Path(runs_dir), init=init)
    name, config = distilled_run(kind, backbone, profile, distill, seed, root, teacher.folder.name, init_name)
    return RunSpec("distilled", kind, backbone, seed, profile, root, config, name, Path(runs_dir), distill=distill,
                   teacher=teacher, init=init)


def execute(spec: RunSpec) -> dict:
    """Train (or fetch) the run ``spec`` resolves to and evaluate it; returns its ``eval.json``. Every
    run it needs -- its warm-start source, its teacher, theirs -- comes first (trained, or waited for,
    when missing), but what can be refused is refused before any of them trains: real data's layout,
    a pair that cannot be distilled. A distilled run also returns its method and teacher."""
    order = _needed(spec) + [spec]
    for run in order:
        if isinstance(run.profile.data, RealData):
            run.profile.data.check(run.data)  # real data: its layout, named, before anything trains
        if run.what == "distilled":  # a pair it cannot distil fails now, before its teacher trains
            check_distillable(run.kind, run.teacher.backbone, run.backbone, run.profile.detector, run.distill)
        if run.init is not None and not isinstance(run.init, RunSpec):  # a finished run, named
            finished_run(run.init, run.runs_dir)
    return [_execute_one(run) for run in order][-1]


def _needed(spec: RunSpec) -> list[RunSpec]:
    """The runs ``spec`` needs, each before the runs that need it (its warm start's first), once each."""
    out = []
    for first in (spec.init, spec.teacher):
        if isinstance(first, RunSpec):
            out += [run for run in _needed(first) + [first] if run.folder not in {r.folder for r in out}]
    return out


def _execute_one(spec: RunSpec) -> dict:
    """One run, its own needs finished: a distilled run holds its teacher's run lock (shared) while it
    reads the teacher, so ``runs clear`` cannot take the teacher away mid-run."""
    if spec.teacher is None:
        return _run(spec)
    teacher_dir = spec.teacher.folder
    with shared_lock(teacher_dir / ".lock"):
        if not (teacher_dir / "eval.json").exists():
            raise RuntimeError(f"the teacher run {teacher_dir} was cleared just as this run started; run it again "
                               "(the teacher is trained again first)")
        result = _run(spec)
    return result | {"method": spec.distill.method, "teacher_run": teacher_dir.name}


def _build(spec: RunSpec, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(trainable, detector)`` for ``spec``: an imported detector from its checkpoint; a detector
    alone; or a :class:`Distiller` of the trained teacher and the student (the teacher built first:
    model construction draws from the seeded generator, so the order is part of the weights). A warm
    start loads its finished source run's weights into the student."""
    if spec.what == "imported":
        model = build_detector(spec.kind, spec.backbone, num_classes, **spec.detector, checkpoint=spec.checkpoint)
        return model, model
    teacher = None if spec.teacher is None else build_detector(
        spec.kind, spec.teacher.backbone, num_classes, **spec.profile.detector,
        checkpoint=spec.teacher.folder / CHECKPOINT)
    student = build_detector(spec.kind, spec.backbone, num_classes, **spec.detector)
    if spec.init is not None:
        warm_start(student, spec.init.folder if isinstance(spec.init, RunSpec) else spec.init, spec.runs_dir)
    if teacher is None:
        return student, student
    cache = None
    if spec.distill.teacher_cache and spec.distill.method != "none":
        train = spec.profile.train
        cache = teacher_cache_of(teacher, spec.teacher.folder, splits(spec.profile)["train"], spec.config["data"],
                                 lambda: TrainingImages(spec.profile, spec.data), train.batch_size, train.progress)
    return Distiller(teacher, student, spec.distill, cache), student


# -- the same, one call per kind of run (a spec resolved and executed) -------------------------------
def train_detector(kind: str, backbone: str, profile: Profile, seed: int = 0, runs_dir: Path = RUNS_DIR,
                   data_root: str | Path | None = None, data_dir: Path = DATA_DIR, init_run: str | Path | None = None) -> dict:
    """Train (or reuse) one plain detector and evaluate it; returns ``eval.json``'s content.
    ``init_run``: a finished run whose weights it starts from (a warm start, keyed)."""
    if init_run is not None:
        finished_run(init_run, runs_dir)  # named before the dataset or anything else is touched
    return execute(run_spec(kind, backbone, profile.for_kind(kind), seed, runs_dir, data_root, data_dir, init=init_run))


def import_detector(kind: str, backbone: str, profile: Profile, checkpoint: str | Path, runs_dir: Path = RUNS_DIR,
                    data_root: str | Path | None = None, data_dir: Path = DATA_DIR) -> dict:
    """A detector trained elsewhere (e.g. a teacher from a GPU cluster or a model zoo) as a run of the
    cache: its weights (an engine checkpoint or a bare state dict) evaluated on the profile's splits,
    keyed by the file's content, so distilled runs can name it as their teacher."""
    return execute(run_spec(kind, backbone, profile.for_kind(kind), runs_dir=runs_dir, data_root=data_root, data_dir=data_dir,
                            imported=checkpoint))


def imported_run_dir(kind: str, backbone: str, profile: Profile, checkpoint: str | Path, runs_dir: Path = RUNS_DIR,
                     data_root: str | Path | None = None, data_dir: Path = DATA_DIR) -> Path:
    """Where :func:`import_detector` keeps ``checkpoint``'s run (nothing is evaluated)."""
    return run_spec(kind, backbone, profile.for_kind(kind), runs_dir=runs_dir, data_root=data_root, data_dir=data_dir,
                    imported=checkpoint).folder


def run_dir_of(kind: str, backbone: str, profile: Profile, seed: int = 0, runs_dir: Path = RUNS_DIR,
               data_root: str | Path | None = None, data_dir: Path = DATA_DIR, distill: DistillConfig | None = None,
               teacher_backbone: str | None = None, teacher_seed: int | None = None,
               teacher_checkpoint: str | Path | None = None, init_run: str | Path | None = None) -> Path:
    """Where :func:`train_detector` (``distill`` None) or :func:`train_distilled` keeps this run,
    computed without training anything (a synthetic dataset is generated on first use: the key names
    its content): ``(run_dir / "eval.json").exists()`` tells whether it is finished."""
    return run_spec(kind, backbone, profile.for_kind(kind), seed, runs_dir, data_root, data_dir, distill=distill,
                    teacher_backbone=teacher_backbone, teacher_seed=teacher_seed,
                    teacher_checkpoint=teacher_checkpoint, init=init_run).folder


def train_distilled(kind: str, teacher_backbone: str, student_backbone: str, profile: Profile,
                    distill: DistillConfig, seed: int = 0, runs_dir: Path = RUNS_DIR,
                    data_root: str | Path | None = None, data_dir: Path = DATA_DIR, teacher_seed: int | None = None,
                    teacher_checkpoint: str | Path | None = None, init_run: str | Path | None = None) -> dict:
    """Train (or reuse) the teacher -- or import it from ``teacher_checkpoint`` -- then a student
    distilled from it; evaluates the student. ``init_run``: a finished run whose weights the student
    starts from (a warm start, keyed)."""
    if init_run is not None:
        finished_run(init_run, runs_dir)
    return execute(run_spec(kind, student_backbone, profile.for_kind(kind), seed, runs_dir, data_root, data_dir, distill=distill,
                            teacher_backbone=teacher_backbone, teacher_seed=teacher_seed,
                            teacher_checkpoint=teacher_checkpoint, init=init_run))
