"""The DDP path, run for real with two CPU processes over gloo (NCCL's twin on CPU)."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from glamd_core.data import VOCDetection, train_transforms
from glamd_core.detectors import build_detector
from glamd_core.engine import TrainConfig, train

from test_detectors import TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, root, out, sync_bn=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_detector("retinanet", "resnet10t", 10, **TINY)
    ds = VOCDetection(root, "train", transforms=train_transforms(), skip_ignored=True)
    train(model, ds, TrainConfig(epochs=2, batch_size=4, warmup_iters=1, progress=False, sync_bn=sync_bn), out)
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_ddp_training_keeps_replicas_identical(synthetic_root, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(synthetic_root), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for k in a:
        if "running" in k or "num_batches" in k:  # BN statistics are per replica (no SyncBN)
            continue
        assert torch.equal(a[k], b[k]), k
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    # 12 images, global batch 4 = 2 replicas x 2 -> 3 iterations per epoch, logged by rank 0 only
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"summary"' in line for line in lines) == 2
    assert max(json.loads(line).get("iter", -1) for line in lines) == 2 * 3 - 1


def _run_cache_worker(rank, world, port, runs_dir, data_dir, out):
    """torchrun's environment by hand: one distilled run through the run cache (its teacher first)."""
    import json

    from glamd_core.analysis import load_run
    from glamd_core.evaluation import predict
    from glamd_core.experiments import Experiment, run

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    result = run(Experiment("retinanet", "glamd", "smoke"), runs_dir=runs_dir, data_dir=data_dir)
    with open(f"{out}/result{rank}.json", "w") as f:
        json.dump(result, f)
    trained = load_run(Experiment("retinanet", "glamd", "smoke"), runs_dir=runs_dir, data_dir=data_dir)
    trained.model.score_thresh = 0.0  # every detection, so the comparison sees many boxes
    seen = []
    trained.model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    torch.save(predict(trained.model, trained.dataset("test"), batch_size=3, progress=False), f"{out}/preds{rank}.pt")
    with open(f"{out}/predicted{rank}.json", "w") as f:
        json.dump(sum(seen), f)  # images this rank ran the model on
    torch.distributed.destroy_process_group()


def test_torchrun_trains_a_distilled_run_once_and_evaluates_it_sharded(tmp_path):
    """Two gloo ranks ask the run cache for a distilled student: the teacher and the student are
    each trained once (DDP, rank 0 writing), every rank gets rank 0's result, and the evaluation
    sharded over the ranks and gathered equals a single-process evaluation of the same checkpoint."""
    import json

    from glamd_core.analysis import load_run
    from glamd_core.evaluation import evaluate, predict
    from glamd_core.experiments import Experiment, run

    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    mp.spawn(_run_cache_worker, args=(2, _free_port(), str(kw["runs_dir"]), str(kw["data_dir"]), str(tmp_path)),
             nprocs=2, join=True)
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    runs = sorted(p.name for p in kw["runs_dir"].iterdir())
    assert len(runs) == 2 and any("-glamd-" in r for r in runs)  # the teacher and the student, nothing else
    for r in runs:
        lines = (kw["runs_dir"] / r / "metrics.jsonl").read_text().splitlines()
        assert sum('"summary"' in line for line in lines) == 1  # one epoch, written once (rank 0)
    # the same run asked for again in this (single) process: found, not retrained
    again = run(Experiment("retinanet", "glamd", "smoke"), **kw)
    assert again["run_dir"] == results[0]["run_dir"] and again["metrics"] == results[0]["metrics"]
    trained = load_run(Experiment("retinanet", "glamd", "smoke"), **kw)
    single = evaluate(trained.model, trained.dataset("test"), batch_size=8, progress=False)
    for name, value in results[0]["metrics"]["test"].items():
        assert single[name] == pytest.approx(value, abs=1e-6), name
    trained.model.score_thresh = 0.0
    alone = predict(trained.model, trained.dataset("test"), batch_size=3, progress=False)
    assert [json.loads((tmp_path / f"predicted{r}.json").read_text()) for r in (0, 1)] == [4, 4]  # sharded
    for rank in (0, 1):  # each rank predicted half the images; every rank holds all of them, in order
        gathered = torch.load(tmp_path / f"preds{rank}.pt", weights_only=False)
        assert [p["image_id"] for p in gathered] == [p["image_id"] for p in alone] and len(alone) == 8
        assert sum(len(p["boxes"]) for p in alone) > 0
        for g, a in zip(gathered, alone):
            assert g["boxes"].shape == a["boxes"].shape
            assert np.allclose(g["boxes"], a["boxes"], atol=1e-4) and np.allclose(g["scores"], a["scores"], atol=1e-5)


def test_sync_batchnorm_is_refused_on_cpu_with_a_clear_error():
    """torch's SyncBatchNorm under DDP runs on GPU modules only: on CPU the setting fails by name
    when the config is made, not deep inside DDP after the run's folder exists."""
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        TrainConfig(sync_bn=True)
    assert TrainConfig(sync_bn=True, device="cuda").sync_bn


def test_global_batch_shards_are_the_single_process_batches_split():
    """Rank r of N gets, per step, the r-th consecutive chunk of the one-process batch; a short last
    batch is filled from the start of the order, so every rank steps the same number of times."""
    from glamd_core.engine import GlobalBatchShards

    for size, batch, world in ((12, 4, 2), (5, 4, 2), (3, 4, 2), (7, 16, 4), (1, 8, 8)):
        order = torch.randperm(size, generator=torch.Generator().manual_seed(9)).tolist()
        shards = [list(GlobalBatchShards(size, batch, world, r, torch.Generator().manual_seed(9))) for r in range(world)]
        per = batch // world
        steps = -(-size // batch)
        assert all(len(sh) == steps * per == len(GlobalBatchShards(size, batch, world, 0, torch.Generator()))
                   for sh in shards)
        padded = (order * (steps * batch))[:steps * batch]
        for k in range(steps):
            assert sum((sh[k * per:(k + 1) * per] for sh in shards), []) == padded[k * batch:(k + 1) * batch]
        if size % batch == 0:  # no padding: every image once per epoch
            assert sorted(sum(shards, [])) == list(range(size))


def _same_batches_worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    _train_frozen_bn(root, out)
    torch.distributed.destroy_process_group()


def _train_frozen_bn(root, out):
    """RetinaNet with frozen BN (the paper profiles' setting), no flips: per-image losses and nothing
    that depends on how a global batch is split between processes."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_detector("retinanet", "resnet10t", 10, **(TINY | dict(frozen_bn=True)))
    ds = VOCDetection(root, "train", transforms=train_transforms(hflip=0.0), skip_ignored=True)
    train(model, ds, TrainConfig(epochs=2, batch_size=4, warmup_iters=1, progress=False), out)
    return model


def test_two_processes_at_global_batch_4_match_one_process_at_batch_4(synthetic_root, tmp_path):
    """The same global batches (GlobalBatchShards) and per-image losses averaged: the DDP run and the
    single-process run take the same steps; they differ only by float rounding (convolutions over 2
    images instead of 4, gradients summed across ranks), here below 1e-4 in every weight."""
    mp.spawn(_same_batches_worker, args=(2, _free_port(), str(synthetic_root), str(tmp_path)), nprocs=2, join=True)
    alone = tmp_path / "alone"
    _train_frozen_bn(str(synthetic_root), alone)
    ddp, one = (torch.load(d / "last.pt", weights_only=False) for d in (tmp_path, alone))
    worst = max(float((ddp["model"][k].float() - one["model"][k].float()).abs().max()) for k in one["model"])
    torch.manual_seed(0)
    start = build_detector("retinanet", "resnet10t", 10, **(TINY | dict(frozen_bn=True))).state_dict()
    moved = max(float((one["model"][k].float() - start[k].float()).abs().max()) for k in start)
    assert worst < 1e-4 and moved > 1e-3, (worst, moved)  # training moved the weights; both runs alike
    assert ddp["summary"]["loss"] == pytest.approx(one["summary"]["loss"], rel=1e-4)
