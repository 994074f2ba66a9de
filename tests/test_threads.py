"""One thread is the canonical CPU set-up (issue #27): every way of training a run -- the `run` CLI,
a `run_all` worker, a notebook in-process -- gives the same weights under the same key, and any
other thread count is a different run under a different key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glamd_core import runs
from glamd_core.engine import CHECKPOINT, TrainConfig
from glamd_core.experiments import Experiment, list_runs, results_frame, run, run_all, run_dir
from glamd_core.profiles import get_profile

REPO = Path(__file__).resolve().parents[1]


def _weights(folder: Path) -> dict:
    state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=False)["model"]
    return {k: v for k, v in state.items()}


def _cli(runs_dir: Path, *args: str) -> None:
    from glamd_core import kernels

    env = os.environ | {"GLAMD_RUNS_DIR": str(runs_dir)}
    env.pop("OMP_NUM_THREADS", None)  # the CLI itself must pick one thread, not the environment
    if not kernels.state()["canonical"]:  # the CLI keeps this process's kernels, so both train the same run
        env[kernels.NATIVE_OPT_OUT] = "1"
    done = subprocess.run([sys.executable, "-m", "glamd_core", "run", "--profile", "smoke", "--kind", "retinanet",
                           "--method", "none", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_cli_and_a_pool_worker_train_the_same_weights_and_threads_are_keyed(tmp_path):
    exp = Experiment("retinanet", "none", "smoke", seed=0)
    _cli(tmp_path / "cli")
    [pooled] = run_all([exp], workers=2, runs_dir=tmp_path / "pool")  # a spawned worker process
    cli_run = run_dir(exp, runs_dir=tmp_path / "cli")
    assert pooled["run_dir"] == cli_run.name  # one key
    assert json.loads((cli_run / "eval.json").read_text())["threads"] == pooled["threads"] == 1
    a, b = _weights(cli_run), _weights(tmp_path / "pool" / pooled["run_dir"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    assert json.loads((cli_run / "eval.json").read_text())["metrics"] == pooled["metrics"]

    _cli(tmp_path / "cli", "--threads", "2")
    two = run_dir(Experiment("retinanet", "none", "smoke", seed=0, threads=2), runs_dir=tmp_path / "cli")
    assert two != cli_run and two.name.startswith("retinanet-") and (two / "eval.json").exists()
    assert json.loads((two / "eval.json").read_text())["threads"] == 2
    assert json.loads((two / "config.json").read_text())["train"]["threads"] == 2
    assert "threads" not in json.loads((cli_run / "config.json").read_text())["train"]  # 1: unkeyed
    listed = list_runs(tmp_path / "cli").set_index("run")["threads"]
    assert listed[cli_run.name] == 1 and listed[two.name] == 2
    assert results_frame([pooled | {"method": "none"}])["threads"].tolist() == [1]


def test_a_run_restores_the_callers_thread_count(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = run(Experiment("retinanet", "none", "smoke", seed=0), runs_dir=tmp_path)
        assert r["threads"] == 1 and torch.get_num_threads() == 2  # a notebook kernel keeps its own count
        # what the key does not cover is recorded beside the run
        assert r["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert {"cpu_model", "numpy", "pillow"} <= set(r["environment"])
    finally:
        torch.set_num_threads(before)


def test_one_thread_keeps_every_cached_key_and_other_counts_move_it(canonical_keys):
    cpu = get_profile("cpu")
    teacher = runs.run_dir_of("retinanet", "resnet34", cpu.for_teacher(), 0)
    assert teacher.name == "retinanet-resnet34-s0-3a24cb5abce8"
    assert run_dir(Experiment("retinanet", "teacher", "cpu", threads=1)) == teacher
    moved = run_dir(Experiment("retinanet", "teacher", "cpu", threads=2))
    assert moved.name.startswith("retinanet-resnet34-s0-") and moved != teacher
    # a student at 2 threads distils from a 2-thread teacher: the whole run at one count
    student2 = run_dir(Experiment("retinanet", "glamd", "cpu", threads=2))
    assert student2 != run_dir(Experiment("retinanet", "glamd", "cpu"))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_thread_count_is_named(bad):
    with pytest.raises(ValueError, match="threads"):
        Experiment("retinanet", "none", "smoke", threads=bad)
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=bad)
