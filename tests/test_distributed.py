"""The DDP path, run for real with two CPU processes over gloo (NCCL's twin on CPU)."""

import os
import socket

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


def _worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_detector("retinanet", "resnet10t", 10, **TINY)
    ds = VOCDetection(root, "train", transforms=train_transforms(), skip_ignored=True)
    train(model, ds, TrainConfig(epochs=2, batch_size=2, warmup_iters=1, progress=False), out)
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
    # 12 images, 2 replicas x batch 2 -> 3 iterations per epoch, logged by rank 0 only
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"summary"' in line for line in lines) == 2
