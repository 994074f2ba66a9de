"""Training loop: seeded, resumable, logged; CPU first, with CUDA / AMP / DDP paths kept correct.

``train(model, dataset, config, out_dir)`` trains anything whose ``forward(images, targets)``
returns a dict of losses in train mode -- a torchvision detector or a distillation wrapper -- and
writes to ``out_dir``:

* ``last.pt``: model, optimizer, scheduler, AMP scaler, epoch and every RNG state, rewritten
  atomically after each epoch; ``train`` resumes from it when called again.
* ``metrics.jsonl``: one JSON line per logged iteration and per finished epoch.
* ``metrics.csv``: the per-epoch lines as a table.

With ``$GLAMD_STOP_AFTER_EPOCH=N`` set, ``train`` raises ``TrainingStopped`` after writing epoch N's
checkpoint (for jobs under a wall-time limit: the next job resumes there).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import numbers
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from .data.base import collate, to_device
from .files import atomic_save, atomic_write_text, read_checkpoint

CHECKPOINT = "last.pt"


STOP_VARIABLE = "GLAMD_STOP_AFTER_EPOCH"
# Seeds feed numpy (< 2**32) and the per-epoch order ``seed * 100003 + epoch`` (a signed 64-bit torch
# seed), so they are checked against the smaller of the two ranges when a config is made.
MAX_SEED = 2**32 - 1


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int in [0, MAX_SEED], or a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {seed!r}")
    return int(seed)


def check_threads(threads, what: str = "threads") -> int:
    """``threads`` as a positive int (1 is canonical), or a ValueError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"{what} must be a positive integer (1 is canonical), got {threads!r}")
    return int(threads)


def stop_after_epoch() -> int | None:
    """``$GLAMD_STOP_AFTER_EPOCH`` as a positive integer; unset, empty or blank: None. Read when a run
    starts, before its folder is made, so a bad value fails at once and names the variable."""
    text = os.environ.get(STOP_VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${STOP_VARIABLE} must be a positive integer (the epoch after which training stops "
                         f"and can resume later) or unset, got {os.environ[STOP_VARIABLE]!r}")
    return value

# TrainConfig fields added after runs were cached: a run key holds them only when they differ from
# these values (the behaviour every earlier run trained with), so those runs keep their keys.
# "threads": CPU float sums depend on the thread count, so a run's weights depend on it too; one thread
# is canonical (it repeats bit for bit across machines), any other count is keyed.
TRAIN_KEYED_WHEN_CHANGED = {"amp_dtype": "float16", "sync_bn": False, "threads": 1}


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 8  # the global batch: under torchrun each of N processes loads batch_size / N images
    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # SGD only
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    schedule: str = "cosine"  # "cosine" | "step" | "constant" (after warmup)
    step_milestones: tuple[float, ...] = (2 / 3, 8 / 9)  # fractions of training, for "step" (the 1x schedule's 8/11 ~ 2/3 etc.)
    step_gamma: float = 0.1
    clip_grad_norm: float | None = 10.0
    seed: int = 0
    num_workers: int = 0  # on 2 CPU cores, loader workers steal compute from the model
    device: str = "cpu"
    amp: bool = False  # mixed precision: autocast in amp_dtype (float16 with a GradScaler, CUDA only; bfloat16 also on CPU)
    amp_dtype: str = "float16"  # "float16" | "bfloat16"
    sync_bn: bool = False  # under DDP on GPUs, batch statistics over every replica's images (SyncBatchNorm)
    log_every: int = 20
    # Every this many iterations of an epoch (and at its first), log the gradient norm that the
    # detection loss and each distillation term put on the student's backbone + FPN: the loss
    # balance, visible. One extra backward pass per term at those iterations; None: off.
    grad_norm_every: int | None = 50
    progress: bool = True
    # torch threads a CPU run trains and evaluates with (ignored on GPUs). 1 is canonical: 2-thread
    # training does not even repeat itself. Another count gives another run key.
    threads: int = 1

    def __post_init__(self):
        self.threads = check_threads(self.threads, "TrainConfig.threads")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}")
        self.seed = check_seed(self.seed, "TrainConfig.seed")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.sync_bn and not self.device.startswith("cuda"):  # torch's SyncBatchNorm runs on GPU modules only
            raise ValueError("TrainConfig.sync_bn needs CUDA devices (torch's SyncBatchNorm under DDP runs on GPU "
                             f"modules only); turn it off for device {self.device!r}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        if self.grad_norm_every is not None and (isinstance(self.grad_norm_every, bool)
                                                 or not isinstance(self.grad_norm_every, int) or self.grad_norm_every < 1):
            raise ValueError(f"grad_norm_every must be a positive integer or None, got {self.grad_norm_every!r}")


@contextlib.contextmanager
def cpu_threads(cfg: TrainConfig):
    """Train and evaluate a CPU run with ``cfg.threads`` torch threads, then restore the caller's count
    (a notebook kernel keeps its own). GPU runs are left alone."""
    if not str(cfg.device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(it: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the base LR at iteration ``it`` of ``total``: linear warmup, then the schedule."""
    if it < cfg.warmup_iters:
        a = it / max(1, cfg.warmup_iters)
        warm = cfg.warmup_factor * (1 - a) + a
    else:
        warm = 1.0
    if cfg.schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(it, total) / max(1, total)))
    if cfg.schedule == "step":
        return warm * cfg.step_gamma ** sum(it >= m * total for m in cfg.step_milestones)
    return warm


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_distributed(device: str) -> tuple[int, int]:
    """Start the process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2 or is_distributed():
        return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if is_distributed() else (0, 1)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(model: nn.Module, dataset: Dataset, cfg: TrainConfig, out_dir: str | Path, resume: bool = True,
          loss_weights: dict[str, float] | None = None,
          on_epoch_end: Callable[[int, nn.Module], dict] | None = None) -> dict:
    """Train ``model`` on ``dataset``, resuming from ``out_dir``'s last checkpoint.

    Args:
        model: a detector or a :class:`~glamd_core.distill.Distiller` (a dict of losses in train mode).
        dataset: images and targets (the training transform applied).
        cfg: the schedule, optimiser, seed, device, threads (:class:`TrainConfig`).
        out_dir: where the checkpoint (every epoch) and the logs (``metrics.jsonl`` / ``.csv``) go.
        resume: continue from the checkpoint when there is one.
        loss_weights: a factor per loss name (default 1).
        on_epoch_end: ``(epoch, model) -> dict`` of extra metrics to log (e.g. validation AP).

    Returns:
        The last epoch's summary: mean losses, ``loss``, the epoch's seconds.

    A CPU run trains with ``cfg.threads`` torch threads (1, canonical), the caller's count restored after.
    """
    with cpu_threads(cfg):
        return _train(model, dataset, cfg, out_dir, resume, loss_weights, on_epoch_end)


def _train(model, dataset, cfg: TrainConfig, out_dir, resume, loss_weights, on_epoch_end) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = init_distributed(cfg.device)
    device = torch.device(cfg.device)
    model.to(device)
    seed_everything(cfg.seed + rank)

    optimizer = build_optimizer(model.parameters(), cfg)
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size is the global batch and must split evenly over the {world} "
                         f"processes, got {cfg.batch_size}")
    per_process = cfg.batch_size // world  # the learning rate belongs to the global batch, as in mmdetection's configs
    iters_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    total = iters_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, total, cfg))
    amp_dtype = getattr(torch, cfg.amp_dtype)
    use_amp = cfg.amp and (device.type == "cuda" or amp_dtype == torch.bfloat16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)  # bfloat16 needs none

    start_epoch, summary = 0, {}
    ckpt_path = out_dir / CHECKPOINT
    # A job with a wall-time limit (or the paper dry run proving resume) ends cleanly after an epoch.
    stop_after = stop_after_epoch()
    if resume and ckpt_path.exists():
        ckpt = read_checkpoint(ckpt_path, map_location=device)
        if ckpt["config"]["epochs"] != cfg.epochs:
            # The LR schedule depends on the total length; a longer run is a different run.
            raise ValueError(f"{ckpt_path} was written for {ckpt['config']['epochs']} epochs, not {cfg.epochs}; "
                             "use a fresh out_dir")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, summary = ckpt["epoch"] + 1, ckpt.get("summary", {})
    if world > 1:
        if cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if rank == 0:
        _drop_logs_after(out_dir, start_epoch)
    log = (out_dir / "metrics.jsonl").open("a") if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        # The order depends on (seed, epoch) only, so a resumed run sees the same batches; under DDP each
        # rank takes its share of the very same global batches.
        order = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        sampler = (GlobalBatchShards(len(dataset), cfg.batch_size, world, rank, order) if world > 1
                   else RandomSampler(dataset, generator=order))
        loader = DataLoader(dataset, batch_size=per_process, sampler=sampler, collate_fn=collate,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        model.train()
        sums: dict[str, float] = {}
        norm_sums: dict[str, float] = {}
        probes = 0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or rank != 0,
                   leave=False)
        for i, (images, targets) in enumerate(bar):
            images, targets = to_device(images, targets, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                losses = model(images, targets)
            weighted = {k: v * (loss_weights or {}).get(k, 1.0) for k, v in losses.items()}
            loss = sum(weighted.values())
            finite = torch.isfinite(loss.detach()).float()
            if world > 1:  # every rank stops together (one raising alone would leave the others in a collective)
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            if not finite:
                raise FloatingPointError(f"non-finite loss at epoch {epoch}, iteration {i}: "
                                         f"{ {k: float(v) for k, v in losses.items()} }; lower the LR?")
            probe = world == 1 and cfg.grad_norm_every and i % cfg.grad_norm_every == 0
            norms = loss_gradient_norms(weighted, _probe_parameters(model)) if probe else {}
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            values = {k: v.detach() for k, v in losses.items()} | {"loss": loss.detach()}
            if world > 1:  # log the global batch's losses, not rank 0's share
                stacked = torch.stack([v.float() for v in values.values()])
                torch.distributed.all_reduce(stacked)
                values = dict(zip(values, stacked / world))
            values = {k: float(v) for k, v in values.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            for k, v in norms.items():
                norm_sums[k] = norm_sums.get(k, 0.0) + v
            probes += bool(norms)
            if log and (i % cfg.log_every == 0 or i == iters_per_epoch - 1 or norms):
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                log.write(json.dumps({"epoch": epoch, "iter": epoch * iters_per_epoch + i,
                                      "lr": optimizer.param_groups[0]["lr"], **values, **norms}) + "\n")
                log.flush()
        n = max(1, i + 1)
        summary = {"epoch": epoch, **{k: v / n for k, v in sums.items()},
                   **{k: v / probes for k, v in norm_sums.items()},
                   "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t0}
        if on_epoch_end is not None:
            summary |= on_epoch_end(epoch, unwrap(model)) or {}
        if rank == 0:
            log.write(json.dumps({"summary": True, **summary}) + "\n")
            log.flush()
            _append_csv(out_dir / "metrics.csv", summary)
            atomic_save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                          "rng": _rng_state(), "config": asdict(cfg), "summary": summary}, ckpt_path)
        if world > 1:
            torch.distributed.barrier()  # nobody resumes from a checkpoint rank 0 is still writing
        if stop_after == epoch + 1 < cfg.epochs:
            if log:
                log.close()
            raise TrainingStopped(f"stopped after epoch {epoch + 1} of {cfg.epochs} as ${STOP_VARIABLE} asks; "
                                  f"called again, training resumes from {ckpt_path}")
    if log:
        log.close()
    return summary


class TrainingStopped(Exception):
    """Training stopped on purpose after an epoch's checkpoint (``$GLAMD_STOP_AFTER_EPOCH``)."""


class GlobalBatchShards(torch.utils.data.Sampler):
    """One rank's share of the single-process order. Global batch k of a run on N processes holds
    the images of batch k of a one-process run with the same ``batch_size`` and seed -- the same
    permutation, cut into batches, each split into N consecutive chunks (torch's DistributedSampler
    deals images round-robin from a permutation of its own). A last, short batch is filled up from
    the start of the permutation, so every rank takes the same number of steps; there the two runs
    differ. So do random augmentations, which each rank draws from its own seed."""

    def __init__(self, size: int, batch_size: int, world: int, rank: int, generator: torch.Generator):
        self.per_rank = batch_size // world
        self.batches = math.ceil(size / batch_size)
        self.size, self.batch_size, self.rank = size, batch_size, rank
        self.order = torch.randperm(size, generator=generator).tolist()  # what RandomSampler yields

    def __iter__(self):
        order = self.order * math.ceil(self.batches * self.batch_size / self.size)
        for k in range(self.batches):
            start = k * self.batch_size + self.rank * self.per_rank
            yield from order[start:start + self.per_rank]

    def __len__(self) -> int:
        return self.batches * self.per_rank


def _probe_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The student's backbone + FPN (torchvision detectors keep both in ``.backbone``)."""
    detector = getattr(model, "student", model)
    return [p for p in detector.backbone.parameters() if p.requires_grad]


def loss_gradient_norms(losses: dict[str, torch.Tensor], params: list[nn.Parameter]) -> dict[str, float]:
    """L2 norm of the gradient on ``params`` of the detection loss (every term not named
    ``distill_*``) and of each distillation term, without touching ``.grad``."""
    groups = {"detection": sum(v for k, v in losses.items() if not k.startswith("distill_"))}
    groups |= {k: v for k, v in losses.items() if k.startswith("distill_")}
    norms = {}
    for name, term in groups.items():
        if not torch.is_tensor(term) or not term.requires_grad:
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        squares = [(g.detach().float() ** 2).sum() for g in grads if g is not None]
        norms[f"grad_norm_{name}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


def read_log(jsonl: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``. A torn last line -- what a full disk, a power loss or a kill
    mid-write leaves -- is dropped with a warning naming the file; damage anywhere else is an error
    naming the file and line."""
    lines = [line for line in Path(jsonl).read_text().splitlines() if line.strip()]
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if n < len(lines):
                raise ValueError(f"{jsonl}, line {n}, is not JSON ({exc}); only a torn last line can be repaired. "
                                 "Delete the run's folder to train it again") from exc
            warnings.warn(f"{jsonl}: its last line is torn (a write that never finished); dropped", stacklevel=2)
    return rows


def _drop_logs_after(out_dir: Path, start_epoch: int) -> None:
    """Keep only the log lines of the epochs the checkpoint holds.

    Logs are written before the epoch's checkpoint, so a run killed in between (or mid-epoch)
    would log the epoch it repeats on resume twice."""
    jsonl, table = out_dir / "metrics.jsonl", out_dir / "metrics.csv"
    if jsonl.exists():
        rows = [row for row in read_log(jsonl) if row["epoch"] < start_epoch]
        atomic_write_text(jsonl, "".join(json.dumps(row) + "\n" for row in rows))
    if table.exists():
        with table.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)
        if rows and (None in rows[-1].values() or not rows[-1].get("epoch", "").strip().isdigit()):
            warnings.warn(f"{table}: its last row is torn (a write that never finished); dropped", stacklevel=2)
            rows = rows[:-1]
        rows = [r for r in rows if int(r["epoch"]) < start_epoch]
        if rows:
            tmp = table.with_name(f".{table.name}.partial")
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, table)
        else:
            table.unlink()


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


# -- a finished run's weights and training time ---------------------------------------------------
def finished_run(run: str | Path, runs_dir: Path | None) -> Path:
    """A finished run of the cache, by folder or name: a warm start's source. Missing or unfinished
    is an error naming it, raised before anything trains."""
    run = Path(run) if Path(run).is_absolute() or runs_dir is None else Path(runs_dir) / run
    if not (run / "eval.json").is_file() or not (run / CHECKPOINT).is_file():
        raise FileNotFoundError(f"warm start: {run.name} is not a finished run in {run.parent} (train it first: "
                                "the run a student starts from must be in the cache)")
    return run


def warm_start(model: torch.nn.Module, run: str | Path, runs_dir: Path | None = None) -> None:
    """Load a finished run's trained detector into ``model`` (a distilled run's student weights, without
    its adapters); the run by folder, or by name in ``runs_dir``. An unfinished run, or weights that do
    not fit -- another backbone or kind -- are an error naming the run."""
    run = finished_run(run, runs_dir)
    state = read_checkpoint(run / CHECKPOINT)["model"]
    if any(k.startswith("student.") for k in state):  # a Distiller's trainable: keep the student's weights
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"warm start from {Path(run).name}: its weights do not fit this detector ({first} ...); "
                         "start a student from a run of the same kind and backbone") from None


def training_seconds(run_dir: Path) -> float:
    """Sum of per-epoch times, so a resumed run reports its full training cost."""
    per_epoch = {}
    for row in read_log(run_dir / "metrics.jsonl"):
        if row.get("summary"):
            per_epoch[row["epoch"]] = row["epoch_seconds"]
    return float(sum(per_epoch.values()))
