"""Wall time of training several runs one after the other vs in parallel worker processes.

Trains the same experiments twice into two empty run caches, measured in one run on this machine:
once with ``run_all(workers=1)`` (one process, all cores as torch threads) and once with
``run_all(workers=N)`` (N processes, cores // N threads each). Prints the speed-up that
``default_workers`` relies on. Default: four students of the ``cpu`` profile (both detector
kinds, seeds 0 and 1) for one epoch each, which takes a few minutes on 2 cores.

    python benchmarks/parallel_runs.py [--epochs 1] [--workers 2]
"""

from __future__ import annotations

from glamd_core.kernels import exec_canonical

if __name__ == "__main__":  # before torch starts: benchmarks that train run on the canonical kernels
    exec_canonical()

import argparse
import tempfile
import time
from pathlib import Path

import torch

from glamd_core.experiments import Experiment, run_all
from glamd_core.data.splits import dataset_root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--profile", default="cpu")
    a = p.parse_args()
    experiments = [Experiment(kind, "none", a.profile, seed=s, epochs=a.epochs)
                   for kind in ("faster_rcnn", "retinanet") for s in (0, 1)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(experiments)} runs of "
          f"{a.epochs} epoch(s), profile {a.profile}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        dataset_root(experiments[0].resolved_profile(), data_dir=data_dir)  # not timed
        times, results = {}, {}
        for workers in (1, a.workers):
            t0 = time.perf_counter()
            results[workers] = run_all(experiments, workers=workers, runs_dir=Path(tmp) / f"runs-{workers}",
                                       data_dir=data_dir)
            times[workers] = time.perf_counter() - t0
            print(f"workers={workers}: {times[workers]:.1f} s wall, threads per run "
                  f"{sorted({r['threads'] for r in results[workers]})}")
    same = all(x["run_dir"] == y["run_dir"] for x, y in zip(results[1], results[a.workers]))
    print(f"same run keys in both caches: {same}")
    print(f"speed-up of {a.workers} workers over one process: {times[1] / times[a.workers]:.2f}x")


if __name__ == "__main__":
    main()
