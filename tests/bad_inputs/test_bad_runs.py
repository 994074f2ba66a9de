"""Run cache, settings, checkpoints and results under misuse and kills: nothing is deleted that
should not be, bad settings fail before training and by name, and files are written whole."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from glamd_core import files, runs
from glamd_core.__main__ import main as cli
from glamd_core.detectors import build_detector
from glamd_core.distill import DistillConfig
from glamd_core.engine import TrainConfig, train
from glamd_core.experiments import clear_runs, write_results
from glamd_core.files import atomic_save
from glamd_core.profiles import get_profile

REPO = Path(__file__).resolve().parents[2]
TINY = dict(image_size=64, fpn_channels=32, rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=50,
            rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=32,
            rpn_batch_size_per_image=32, box_representation_size=64)


RUN_A, RUN_B = "retinanet-a-s0-123123123123", "retinanet-b-s1-456456456456"


def _fake_cache(tmp_path):
    """A checkout-like folder with a run cache of three runs beside code that must survive."""
    for keep in ("glamd_core/x.py", "results/table.md", ".git/HEAD"):
        (tmp_path / keep).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / keep).write_text("precious")
    cache = tmp_path / "runs"
    for name in (RUN_A, RUN_B, "faster_rcnn-a-s0-789789789789"):
        (cache / name).mkdir(parents=True)
        (cache / name / "config.json").write_text("{}")
        (cache / name / "eval.json").write_text("{}")
    return cache


def _survivors(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())


def test_clear_without_a_pattern_deletes_nothing_and_asks_for_one(tmp_path, capsys):
    cache = _fake_cache(tmp_path)
    before = _survivors(tmp_path)
    with pytest.raises(ValueError, match="pattern.*--all"):
        clear_runs(cache)
    with pytest.raises(SystemExit):  # refused before any folder is looked at
        cli(["runs", "clear"])
    assert "--all" in capsys.readouterr().err
    assert _survivors(tmp_path) == before
    removed, busy = clear_runs(cache, everything=True)
    assert len(removed) == 3 and busy == [] and not list(cache.iterdir())
    assert {"glamd_core/x.py", "results/table.md", ".git/HEAD"} <= set(_survivors(tmp_path))


@pytest.mark.parametrize("pattern", ["../*", "..", "../glamd_core", "*/..", "/etc", "retinanet-*/../../*", ""])
def test_clear_never_leaves_the_run_cache(tmp_path, pattern):
    cache = _fake_cache(tmp_path)
    before = _survivors(tmp_path)
    with pytest.raises(ValueError, match="not a path"):
        clear_runs(cache, pattern)
    assert _survivors(tmp_path) == before


def test_clear_does_not_follow_a_symlink_out_of_the_cache(tmp_path):
    cache = _fake_cache(tmp_path)
    (cache / "retinanet-link").symlink_to(tmp_path / "glamd_core", target_is_directory=True)
    removed, _ = clear_runs(cache, "retinanet-*")
    assert removed == [RUN_A, RUN_B]
    assert (tmp_path / "glamd_core" / "x.py").read_text() == "precious"


def test_clear_leaves_a_run_that_another_process_is_training(tmp_path):
    cache = _fake_cache(tmp_path)
    training = cache / RUN_A
    (training / "eval.json").unlink()  # unfinished
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from glamd_core.files import exclusive
        with exclusive({str(training / '.lock')!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed, busy = clear_runs(cache, "retinanet-*")
        assert removed == [RUN_B] and busy == [RUN_A]
        assert training.is_dir()
    finally:
        holder.kill()
        holder.wait()
    removed, busy = clear_runs(cache, "retinanet-*")  # the lock is free again
    assert removed == [RUN_A] and busy == []


@pytest.mark.parametrize("setting, value", [
    ("temperature", -1.0), ("temperature", 0.0), ("temperature", float("nan")), ("roi_temperature", 0.0),
    ("patch_size", 3.0), ("patch_size", True), ("patch_size", 0), ("alpha", float("inf")), ("beta", -1.0),
    ("distill_roi", "yes"),
])
def test_bad_distillation_settings_fail_when_made_and_name_themselves(setting, value):
    with pytest.raises(ValueError, match=f"DistillConfig.{setting} must be"):
        DistillConfig(**{setting: value})


def test_equal_settings_are_one_run_key():
    import numpy as np
    from dataclasses import asdict

    a, b = DistillConfig(alpha=1, patch_size=np.int64(7)), DistillConfig(alpha=1.0, patch_size=7)
    assert files.config_key(asdict(a)) == files.config_key(asdict(b))
    # a setting left to its loss form's default and the same value spelled out: one run
    profile = get_profile("smoke")

    def where(distill, p=profile):
        return runs.run_dir_of("retinanet", p.student_backbone, p, 0, Path("/nonexistent/runs"), distill=distill,
                               teacher_backbone=p.teacher_backbone, data_dir=Path("/nonexistent/data"))

    assert where(DistillConfig()) == where(DistillConfig(temperature=0.5, channel_mask=True, distill_roi=True))
    assert where(DistillConfig(loss_form="reference")) == where(DistillConfig(loss_form="reference", temperature=0.1))
    assert where(DistillConfig(loss_form="reference")) != where(DistillConfig())
    # logging settings that leave training unchanged are not part of a run's key
    assert where(DistillConfig()) == where(DistillConfig(), profile.with_train(grad_norm_every=None, progress=True))
    with pytest.raises(ValueError, match="grad_norm_every"):
        TrainConfig(grad_norm_every=0)


def test_cli_rejects_a_bad_setting_before_training(monkeypatch, capsys):
    monkeypatch.setattr("glamd_core.experiments.run", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(SystemExit):
        cli(["run", "--method", "glamd", "--temperature", "-1", "--profile", "smoke"])
    assert "temperature" in capsys.readouterr().err


def test_a_pair_that_cannot_be_distilled_fails_before_the_teacher_trains(tmp_path, monkeypatch):
    """RetinaNet's FPN (P3-P7) and a distiller that insists on other levels: found in a second."""
    monkeypatch.setattr(runs, "train_detector", lambda *a, **k: pytest.fail("the teacher must not train"))

    def refuse(*args, **kwargs):
        raise ValueError("teacher and student must have the same FPN levels")

    monkeypatch.setattr("glamd_core.distill.Distiller", refuse)
    profile = get_profile("smoke")
    with pytest.raises(ValueError, match="same FPN levels"):
        runs.train_distilled("retinanet", "resnet18", "resnet10t", profile, DistillConfig(), runs_dir=tmp_path / "runs",
                             data_dir=tmp_path / "data")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, monkeypatch):
    profile = get_profile("smoke")

    def build(spec, num_classes):
        raise RuntimeError("bad detector option")

    monkeypatch.setattr(runs, "_build", build)
    spec = runs.run_spec("retinanet", profile.student_backbone, profile, 0, tmp_path / "runs", data_dir=tmp_path / "data")
    with pytest.raises(RuntimeError, match="bad detector option"):
        runs.execute(spec)
    assert not list((tmp_path / "runs").iterdir())


def test_a_truncated_checkpoint_is_named(tmp_path):
    model = build_detector("retinanet", "resnet10t", 3, **TINY)
    path = tmp_path / "last.pt"
    atomic_save({"model": model.state_dict(), "epoch": 0, "config": {"epochs": 1}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=f"cannot read checkpoint {path}.*truncated"):
        build_detector("retinanet", "resnet10t", 3, **TINY, checkpoint=path)
    with pytest.raises(RuntimeError, match=f"cannot read checkpoint {path}"):
        train(model, [], TrainConfig(epochs=1, progress=False), tmp_path)


# -- kills ------------------------------------------------------------------------------------
# Each child process kills itself with SIGKILL at the worst moment (patched into its own copy of
# the library), as a machine shutdown or the OOM killer would.

_TRAIN_CHILD = """
import os, signal, sys, torch
from glamd_core import engine
from glamd_core.data import VOCDetection, train_transforms
from glamd_core.detectors import build_detector
root, out, kill_after_epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
original = engine._append_csv
def append_then_die(path, row):
    original(path, row)
    if row["epoch"] == kill_after_epoch:
        os.kill(os.getpid(), signal.SIGKILL)  # after the epoch's log lines, before its checkpoint
engine._append_csv = append_then_die
torch.manual_seed(0)
torch.set_num_threads(1)
model = build_detector("retinanet", "resnet10t", 10, **{TINY})
ds = VOCDetection(root, "train", transforms=train_transforms(), skip_ignored=True)
engine.train(model, ds, engine.TrainConfig(epochs=3, batch_size=4, warmup_iters=2, progress=False, log_every=1), out)
torch.save(model.state_dict(), os.path.join(out, "final.pt"))
"""


def _child(script, *args):
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, capture_output=True, text=True)


def test_sigkill_between_an_epochs_logs_and_its_checkpoint_resumes_exactly(synthetic_root, tmp_path):
    script = _TRAIN_CHILD.replace("{TINY}", repr(TINY))
    straight = _child(script, synthetic_root, tmp_path / "a", -1)
    assert straight.returncode == 0, straight.stderr
    killed = _child(script, synthetic_root, tmp_path / "b", 1)
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["epoch"] == 0  # epoch 1 logged, not saved
    resumed = _child(script, synthetic_root, tmp_path / "b", -1)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "final.pt")
    b = torch.load(tmp_path / "b" / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = pd.read_csv(tmp_path / "b" / "metrics.csv").epoch.tolist()
    assert epochs == [0, 1, 2]  # the repeated epoch is logged once
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    straight_lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x.get("iter"), x.get("summary")) for x in lines] == \
        [(x["epoch"], x.get("iter"), x.get("summary")) for x in straight_lines]


_RESULTS_CHILD = """
import os, signal, sys
import pandas as pd
from glamd_core import experiments
from glamd_core.profiles import get_profile
out, version, die = sys.argv[1], sys.argv[2], sys.argv[3] == "die"
tables = {stem: pd.DataFrame({"version": [version]}) for stem in ("table", "runs")}
if die:
    written = []
    original = pd.DataFrame.to_markdown
    def to_markdown_then_die(self, *a, **k):
        written.append(1)
        if len(written) == 2:  # the first table is written, the second is being written
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *a, **k)
    pd.DataFrame.to_markdown = to_markdown_then_die
experiments.write_results("t", get_profile("smoke"), [0], 1.0, tables, out_dir=out, version=version)
"""


def test_sigkill_while_writing_results_leaves_the_old_set_whole(tmp_path):
    out = tmp_path / "results" / "t"
    assert _child(_RESULTS_CHILD, out, "old", "live").returncode == 0
    (out / "benchmark.txt").write_text("kept")  # a file written by someone else is carried over
    (out / "t.ipynb").write_text("the old executed notebook")
    killed = _child(_RESULTS_CHILD, out, "new", "die")
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((out / "manifest.json").read_text())["version"] == "old"
    for stem in ("table", "runs"):
        assert pd.read_csv(out / f"{stem}.csv").version.tolist() == ["old"]
        assert "old" in (out / f"{stem}.md").read_text()
    assert _child(_RESULTS_CHILD, out, "new", "live").returncode == 0  # the next call cleans up and writes
    assert json.loads((out / "manifest.json").read_text())["version"] == "new"
    assert pd.read_csv(out / "runs.csv").version.tolist() == ["new"]
    assert (out / "benchmark.txt").read_text() == "kept" and not (out / "t.ipynb").exists()
    # no partial folder left behind (the write lock beside it stays, git-ignored, like every lock)
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")) == ["t"]


def test_a_kill_between_the_folder_swaps_is_undone(tmp_path):
    out = tmp_path / "t"
    (tmp_path / ".t.old").mkdir()
    (tmp_path / ".t.old" / "table.csv").write_text("version\nold\n")
    write_results("t", get_profile("smoke"), [0], 1.0, {"runs": pd.DataFrame({"version": ["new"]})}, out_dir=out)
    assert (out / "table.csv").read_text() == "version\nold\n"  # recovered, then carried over
    assert pd.read_csv(out / "runs.csv").version.tolist() == ["new"]


def test_a_warm_start_from_a_run_not_in_the_cache_fails_before_the_teacher_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "_run", lambda *a, **k: pytest.fail("nothing may train"))
    profile = get_profile("smoke")
    spec = runs.run_spec("retinanet", profile.student_backbone, profile, 0, tmp_path / "runs", data_dir=tmp_path / "data",
                         distill=DistillConfig(), teacher_backbone=profile.teacher_backbone, init="retinanet-missing-s0-0")
    with pytest.raises(FileNotFoundError, match="retinanet-missing-s0-0 is not a finished run"):
        runs.execute(spec)
    with pytest.raises(ValueError, match="imported checkpoint is evaluated, not distilled"):
        runs.run_spec("retinanet", profile.student_backbone, profile, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data",
                      distill=DistillConfig(), imported=tmp_path / "x.pt")
