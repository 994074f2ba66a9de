"""One detector training run = config -> run directory keyed by the config's hash (``run_key``
says what the key covers; this module trains, locks and finds runs).

A run's directory holds ``config.json``, the training checkpoint and logs (see ``engine``), the
detections on the val and test splits and ``eval.json`` (``metrics`` per split). Asking for the same config again reuses the finished
run (or resumes an interrupted one); any change of setting gives a new key.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import DetectionDataset, VOCDetection, ensure_dataset, eval_transforms, train_transforms
from .data.real import RealData
from .detectors import build_detector
from .distill import DistillConfig, Distiller
from .engine import CHECKPOINT, cpu_threads, init_distributed, read_log, stop_after_epoch, train
from .evaluation import evaluate
from .files import REPO_ROOT, atomic_save, atomic_write_text, env_path, read_checkpoint
from .profiles import Profile
from .run_key import (backbone_weights, config_key, data_key, detector_run, distilled_run, imported_run,
                      unkeyed_environment)
from .teacher_cache import TeacherCache, build_teacher_cache, fingerprint

DATA_DIR = REPO_ROOT / "data"
# GLAMD_RUNS_DIR: a run cache elsewhere, e.g. on a cluster's shared filesystem or a scratch disk.
# Empty or blank means unset (never the current directory); ~ is expanded.
RUNS_DIR = env_path("GLAMD_RUNS_DIR", REPO_ROOT / "runs")
RESULTS_DIR = REPO_ROOT / "results"


def git_commit() -> str:
    """Short HEAD commit, ``-dirty`` when tracked files other than ``results/`` differ from it,
    ``unknown`` outside git. ``results/`` is left out because the main job itself rewrites the
    committed results while it runs; what made them is the code."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _locked_handle(lock_file: Path, blocking: bool, shared: bool = False):
    """An open handle of ``lock_file`` holding its exclusive ``flock``, or None when ``blocking`` is
    false and another process holds it.

    A lock file can be deleted while we wait for it (``runs clear`` removes a run with its lock):
    holding a lock on a deleted file would protect nothing, so after locking we check that the path
    still names the file we locked, and start again if not.
    """
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_file, "a")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        try:
            same = os.stat(lock_file).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()
        lock_file.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def exclusive(lock_file: Path):
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the ``with`` block.

    Parallel workers (``run_all(workers=2)``) or two notebooks may ask for the same run or dataset
    at once; with the lock the first one trains / generates it and the others wait, then find it
    finished. POSIX ``flock``; where ``fcntl`` does not exist (Windows) there is no lock, so run
    one process at a time there.
    """
    with try_exclusive(lock_file, blocking=True) as held:
        assert held
        yield


@contextlib.contextmanager
def shared_lock(lock_file: Path):
    """Hold a shared lock on ``lock_file`` for the ``with`` block: any number of holders, but no
    exclusive one. Distilled runs hold their teacher's run lock this way while they read it (its
    checkpoint, its teacher-output cache), so ``runs clear`` -- which needs the lock exclusively --
    leaves a teacher alone while a student uses it."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    handle = _locked_handle(Path(lock_file), blocking=True, shared=True)
    try:
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def try_exclusive(lock_file: Path, blocking: bool = False):
    """Like :func:`exclusive`, but yields whether the lock was taken instead of waiting for it
    (``runs clear`` leaves a run alone while another process trains it)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX
        yield True
        return
    handle = _locked_handle(Path(lock_file), blocking)
    try:
        yield handle is not None
    finally:
        if handle is not None:
            handle.close()  # closing the last descriptor releases the flock


def dataset_root(profile: Profile, data_root: str | Path | None = None, data_dir: Path = DATA_DIR,
                 generate: bool = True) -> Path:
    """The profile's dataset on disk: generated on first use for synthetic profiles (unless
    ``generate`` is false, which only names the folder); for real data (``paper_*`` profiles)
    ``data_root``, else the dataset's environment variable, else its folder under ``data_dir`` --
    checked, with an error naming the expected layout, unless ``generate`` is false."""
    if isinstance(profile.data, RealData):
        root = profile.data.root(data_root, data_dir)
        if generate:
            profile.data.check(root)
        return root
    spec = profile.data
    root = Path(data_dir) / f"synthetic-{config_key(asdict(spec))}"
    if not generate:
        return root
    with exclusive(root.parent / f".{root.name}.lock"):
        return ensure_dataset(root, spec, progress=profile.train.progress)


def keyed_root(profile: Profile, data_root: str | Path | None = None, data_dir: Path = DATA_DIR) -> Path:
    """The dataset folder a run key is computed from: a synthetic set generated on first use (its key
    is its content's fingerprint); real data only named, not checked (a plan may list paper runs on
    a machine without the data)."""
    return dataset_root(profile, data_root, data_dir, generate=not isinstance(profile.data, RealData))


def splits(profile: Profile) -> dict[str, str]:
    """The dataset split for each role: ``train``; ``val``, on which settings are chosen; ``test``,
    held out, which every table reports. The paper profiles' real data has no val split (VOC2007's
    labelled splits are trainval and test; COCO's test-dev has no public labels): their settings
    are the published ones. A role of several splits is named by them joined with ``+``."""
    if isinstance(profile.data, RealData):
        return {role: "+".join(names) for role, names in profile.data.splits.items()}
    return {"train": "train", "val": "val"} | ({"test": "test"} if profile.data.num_test else {})


def load_split(profile: Profile, root: Path, role: str, transforms=None, skip_ignored: bool = False) -> DetectionDataset:
    """The dataset playing ``role`` (``train`` / ``val`` / ``test``) in this profile."""
    if isinstance(profile.data, RealData):
        return profile.data.load(root, role, transforms, skip_ignored)
    return VOCDetection(root, splits(profile)[role], transforms=transforms, skip_ignored=skip_ignored)


def _backbone_options(profile: Profile, backbone: str) -> dict:
    return {"backbone_checkpoint": backbone_weights(backbone)} if profile.pretrained_backbones else {}


def evaluation_splits(profile: Profile) -> list[str]:
    return [role for role in ("val", "test") if role in splits(profile)]


class BrokenRun(ValueError):
    """A finished run whose ``eval.json`` cannot be read: it is neither reusable nor retrained in place."""


def read_result(run_dir: Path) -> dict:
    """A finished run's ``eval.json``. Torn or not a JSON object (a copy cut short, a full disk) is an
    error naming the file and how to train the run again: taken for finished, it would be neither
    reused nor retrained."""
    done = Path(run_dir) / "eval.json"
    try:
        result = json.loads(done.read_text())
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        result = error
    if not isinstance(result, dict):
        why = result if isinstance(result, Exception) else f"a JSON {type(result).__name__}"
        raise BrokenRun(f"{done} is torn or not a JSON object ({why}); clear the run to train it again: "
                        f"python -m glamd_core runs clear --pattern '{Path(run_dir).name}'")
    return result


def _run(spec: "RunSpec", build) -> dict:
    """Train ``build(num_classes) -> (trainable, detector)`` once per spec; evaluate ``detector``."""
    run_dir, config, profile, cfg, root = spec.folder, spec.config, spec.profile, spec.train, spec.data
    done = run_dir / "eval.json"
    stop_after_epoch()  # a bad $GLAMD_STOP_AFTER_EPOCH fails here, before the run's folder exists
    rank, world = init_distributed(cfg.device)  # (0, 1) unless launched by torchrun
    if world > 1:
        with cpu_threads(cfg):
            return _run_distributed(run_dir, config, build, profile, cfg, root, rank)
    if done.exists():
        return read_result(run_dir)
    with exclusive(run_dir / ".lock"):  # inside the run: clearing a run clears its lock
        if done.exists():  # another process finished it while we waited for the lock
            return read_result(run_dir)
        with cpu_threads(cfg):  # the run's own thread count, whoever calls: a worker, the CLI, a notebook
            return _train_and_evaluate(run_dir, config, build, profile, cfg, root)


def _run_distributed(run_dir: Path, config: dict, build, profile: Profile, cfg, root: Path, rank: int) -> dict:
    """One run under torchrun: rank 0 holds the run's lock and decides whether it must train; every
    rank then trains (DistributedDataParallel) and evaluates its shard; rank 0 writes the run and
    hands its result to every rank."""
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
            result = _train_and_evaluate(run_dir, config, build, profile, cfg, root)
        shared = [result]
        torch.distributed.broadcast_object_list(shared)  # from rank 0: no shared filesystem needed
    return shared[0]


def _train_and_evaluate(run_dir: Path, config: dict, build, profile: Profile, cfg, root: Path) -> dict:
    done = run_dir / "eval.json"
    t_setup = time.perf_counter()
    try:  # everything that can fail on a bad setting or bad data, before anything is written
        train_ds = load_split(profile, root, "train", train_transforms(), skip_ignored=True)
        eval_sets = {role: load_split(profile, root, role, eval_transforms()) for role in evaluation_splits(profile)}
        torch.manual_seed(cfg.seed)  # model initialisation
        trainable, detector = build(train_ds.num_classes)
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
              "metrics": metrics, "train_seconds": 0.0 if imported else _training_seconds(run_dir),
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


def finished_run(run: str | Path, runs_dir: Path = RUNS_DIR) -> Path:
    """A finished run of the cache, by folder or name: a warm start's source. Missing or unfinished
    is an error naming it, raised before anything trains."""
    run = Path(run) if Path(run).is_absolute() else Path(runs_dir) / run
    if not (run / "eval.json").is_file() or not (run / CHECKPOINT).is_file():
        raise FileNotFoundError(f"warm start: {run.name} is not a finished run in {run.parent} (train it first: "
                                "the run a student starts from must be in the cache)")
    return run


def warm_start(model: torch.nn.Module, run: Path) -> None:
    """Load a finished run's trained detector into ``model`` (a distilled run's student weights, without
    its adapters); weights that do not fit -- another backbone or kind -- are an error naming the run."""
    state = read_checkpoint(Path(run) / CHECKPOINT)["model"]
    if any(k.startswith("student.") for k in state):  # a Distiller's trainable: keep the student's weights
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"warm start from {Path(run).name}: its weights do not fit this detector ({first} ...); "
                         "start a student from a run of the same kind and backbone") from None


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
    """The one place a run is resolved. ``distill`` None: a detector trained alone (or, with ``imported``,
    a checkpoint trained elsewhere); else a student distilled from its teacher -- the profile's teacher
    schedule at ``teacher_seed`` (default: the profile's first seed), or ``teacher_checkpoint`` imported.
    ``init``: the run the weights start from (a spec, or a finished run's name or folder), keyed by name."""
    profile = profile.for_kind(kind)  # by_kind settings, also when called without an Experiment
    root = keyed_root(profile, data_root, data_dir)
    if imported is not None:
        name, config = imported_run(kind, backbone, profile, imported, root)
        return RunSpec("imported", kind, backbone, 0, profile, root, config, name, Path(runs_dir),
                       checkpoint=Path(imported))
    init_name = init.folder.name if isinstance(init, RunSpec) else (None if init is None else Path(init).name)
    if distill is None:
        name, config = detector_run(kind, backbone, profile, seed, root, init_name)
        return RunSpec("detector", kind, backbone, seed, profile, root, config, name, Path(runs_dir), init=init)
    teacher = (run_spec(kind, teacher_backbone, profile, runs_dir=runs_dir, data_root=data_root, data_dir=data_dir,
                        imported=teacher_checkpoint) if teacher_checkpoint is not None else
               run_spec(kind, teacher_backbone, profile.for_teacher(), _teacher_seed(profile, teacher_seed), runs_dir,
                        data_root, data_dir))
    name, config = distilled_run(kind, backbone, profile, distill, seed, root, teacher.folder.name, init_name)
    return RunSpec("distilled", kind, backbone, seed, profile, root, config, name, Path(runs_dir), distill=distill,
                   teacher=teacher, init=init)


def execute(spec: RunSpec) -> dict:
    """Train (or fetch) the run ``spec`` resolves to and evaluate it; returns its ``eval.json``. Its
    warm-start source and its teacher come first; a distilled run also returns its method and teacher."""
    if isinstance(spec.profile.data, RealData):
        spec.profile.data.check(spec.data)  # real data: its layout, named, before anything trains
    if spec.what == "imported":
        def build(num_classes):
            model = build_detector(spec.kind, spec.backbone, num_classes, **spec.profile.detector,
                                   checkpoint=spec.checkpoint)
            return model, model

        return _run(spec, build)
    if spec.what == "distilled":  # a pair it cannot distil fails now, before its teacher trains
        _check_distillable(spec.kind, spec.teacher.backbone, spec.backbone, spec.profile, spec.distill)
    if isinstance(spec.init, RunSpec):  # like a teacher: trained first (or waited for) when missing
        execute(spec.init)
    init = None if spec.init is None else finished_run(
        spec.init.folder if isinstance(spec.init, RunSpec) else spec.init, spec.runs_dir)
    if spec.what == "detector":
        def build(num_classes):
            model = build_detector(spec.kind, spec.backbone, num_classes, **spec.profile.detector,
                                   **_backbone_options(spec.profile, spec.backbone))
            if init is not None:
                warm_start(model, init)
            return model, model

        return _run(spec, build)
    teacher_run = execute(spec.teacher)
    teacher_dir = spec.teacher.folder

    def build(num_classes):
        teacher = build_detector(spec.kind, spec.teacher.backbone, num_classes, **spec.profile.detector,
                                 checkpoint=teacher_dir / CHECKPOINT)
        student = build_detector(spec.kind, spec.backbone, num_classes, **spec.profile.detector,
                                 **_backbone_options(spec.profile, spec.backbone))
        if init is not None:
            warm_start(student, init)
        cache = None
        if spec.distill.teacher_cache and spec.distill.method != "none":
            cache = teacher_cache_of(teacher, teacher_dir, spec.data, splits(spec.profile)["train"], spec.profile)
        return Distiller(teacher, student, spec.distill, cache), student

    with shared_lock(teacher_dir / ".lock"):  # `runs clear` waits for us: it cannot take the teacher away mid-run
        if not (teacher_dir / "eval.json").exists():
            raise RuntimeError(f"the teacher run {teacher_dir} was cleared just as this run started; run it again "
                               "(the teacher is trained again first)")
        result = _run(spec, build)
    return result | {"method": spec.distill.method, "teacher_run": teacher_run["run_dir"]}


# -- the same, one call per kind of run (a spec resolved and executed) -------------------------------
def train_detector(kind: str, backbone: str, profile: Profile, seed: int = 0, runs_dir: Path = RUNS_DIR,
                   data_root: str | Path | None = None, data_dir: Path = DATA_DIR, init_run: str | Path | None = None) -> dict:
    """Train (or reuse) one plain detector and evaluate it; returns ``eval.json``'s content.
    ``init_run``: a finished run whose weights it starts from (a warm start, keyed)."""
    if init_run is not None:
        finished_run(init_run, runs_dir)  # named before the dataset or anything else is touched
    return execute(run_spec(kind, backbone, profile, seed, runs_dir, data_root, data_dir, init=init_run))


def import_detector(kind: str, backbone: str, profile: Profile, checkpoint: str | Path, runs_dir: Path = RUNS_DIR,
                    data_root: str | Path | None = None, data_dir: Path = DATA_DIR) -> dict:
    """A detector trained elsewhere (e.g. a teacher from a GPU cluster or a model zoo) as a run of the
    cache: its weights (an engine checkpoint or a bare state dict) evaluated on the profile's splits,
    keyed by the file's content, so distilled runs can name it as their teacher."""
    return execute(run_spec(kind, backbone, profile, runs_dir=runs_dir, data_root=data_root, data_dir=data_dir,
                            imported=checkpoint))


def imported_run_dir(kind: str, backbone: str, profile: Profile, checkpoint: str | Path, runs_dir: Path = RUNS_DIR,
                     data_root: str | Path | None = None, data_dir: Path = DATA_DIR) -> Path:
    """Where :func:`import_detector` keeps ``checkpoint``'s run (nothing is evaluated)."""
    return run_spec(kind, backbone, profile, runs_dir=runs_dir, data_root=data_root, data_dir=data_dir,
                    imported=checkpoint).folder


def run_dir_of(kind: str, backbone: str, profile: Profile, seed: int = 0, runs_dir: Path = RUNS_DIR,
               data_root: str | Path | None = None, data_dir: Path = DATA_DIR, distill: DistillConfig | None = None,
               teacher_backbone: str | None = None, teacher_seed: int | None = None,
               teacher_checkpoint: str | Path | None = None, init_run: str | Path | None = None) -> Path:
    """Where :func:`train_detector` (``distill`` None) or :func:`train_distilled` keeps this run,
    computed without training anything (a synthetic dataset is generated on first use: the key names
    its content): ``(run_dir / "eval.json").exists()`` tells whether it is finished."""
    return run_spec(kind, backbone, profile, seed, runs_dir, data_root, data_dir, distill=distill,
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
    return execute(run_spec(kind, student_backbone, profile, seed, runs_dir, data_root, data_dir, distill=distill,
                            teacher_backbone=teacher_backbone, teacher_seed=teacher_seed,
                            teacher_checkpoint=teacher_checkpoint, init=init_run))


class _TrainingImages:
    """A split's images as the training transform makes them before its random flip (float, [0, 1])."""

    def __init__(self, profile: Profile, root: Path):
        self.dataset = load_split(profile, root, "train", eval_transforms())

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0].as_subclass(torch.Tensor)


def teacher_cache_of(teacher, teacher_dir: Path, root: Path, split: str, profile: Profile) -> TeacherCache:
    """The teacher-output cache of a trained teacher for one training split, built on first use
    (once, under a lock, however many distilled runs ask at once) in ``<teacher run>/teacher_cache/``."""
    t = teacher.transform
    transform = {"min_size": t.min_size, "max_size": t.max_size, "size_divisible": t.size_divisible,
                 "mean": t.image_mean, "std": t.image_std, "fixed_size": t.fixed_size}
    name = f"{split}-{config_key({'data': data_key(profile, root), 'split': split, 'transform': transform})}"
    folder = teacher_dir / "teacher_cache" / f"{name}-{fingerprint(teacher)}"
    with exclusive(folder.parent / f".{folder.name}.lock"):
        cache = TeacherCache.open(folder)
        if cache is not None:
            return cache
        cache = build_teacher_cache(teacher, _TrainingImages(profile, root), folder, profile.train.batch_size,
                                    progress=profile.train.progress)
    print(f"teacher cache built: {cache.entries} entries (images x 2 flips), {cache.bytes / 2**20:.0f} MB in {folder}")
    return cache


def _check_distillable(kind: str, teacher_backbone: str, student_backbone: str, profile: Profile,
                       distill: DistillConfig) -> None:
    """Build the Distiller once on untrained detectors (about a second): a pair it cannot distil
    fails now, not after the teacher has trained for minutes."""
    opts = dict(profile.detector, pretrained=False)
    Distiller(build_detector(kind, teacher_backbone, 2, **opts), build_detector(kind, student_backbone, 2, **opts),
              distill)


def _training_seconds(run_dir: Path) -> float:
    """Sum of per-epoch times, so a resumed run reports its full training cost."""
    per_epoch = {}
    for row in read_log(run_dir / "metrics.jsonl"):
        if row.get("summary"):
            per_epoch[row["epoch"]] = row["epoch_seconds"]
    return float(sum(per_epoch.values()))
