"""Second round of misuse: the run cache deletes only runs, damaged teacher-cache entries are
repaired (never served, never fatal), and late or unclear failures now fail early and by name."""

import errno
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glamd_core import runs
from glamd_core.__main__ import main as cli
from glamd_core.detectors import build_detector
from glamd_core.distill import DistillConfig
from glamd_core.engine import STOP_VARIABLE, TrainConfig, TrainingStopped, stop_after_epoch, train
from glamd_core.experiments import Experiment, clear_runs, is_run, list_runs
from glamd_core.files import atomic_save, read_checkpoint
from glamd_core.profiles import get_profile
from glamd_core.teacher_cache import MARKER, read_entry

REPO = Path(__file__).resolve().parents[2]
SMOKE = replace(get_profile("smoke"), teacher_backbone="resnet10t")  # seconds per run
HEX = "0123456789ab"


def _python(code, env=None, cwd=REPO):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})


# -- the run cache deletes and lists only runs ----------------------------------------------------
@pytest.mark.parametrize("value, expected", [("", "REPO/runs"), ("   ", "REPO/runs"), ("~/cache", "HOME/cache")])
def test_an_empty_runs_dir_variable_means_unset_and_tilde_is_expanded(tmp_path, value, expected):
    out = _python("from glamd_core.runs import RUNS_DIR; print(RUNS_DIR)",
                  env={"GLAMD_RUNS_DIR": value, "HOME": str(tmp_path)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected.replace("REPO", str(REPO)).replace("HOME", str(tmp_path))


def _not_a_cache(tmp_path):
    """A working folder the cache variable may point at by mistake: code, notes, a folder named
    like a run but not one, and one real run."""
    folder = tmp_path / "work"
    for f in ("src/main.py", "notes/todo.md", f"retinanet-x-s0-{HEX}/data.csv", "empty/.keep"):
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).write_text("precious")
    run = folder / f"retinanet-r-s0-{HEX[::-1]}"
    run.mkdir()
    (run / "config.json").write_text("{}")
    return folder, run


def test_clear_all_removes_only_runs_whatever_folder_it_is_pointed_at(tmp_path):
    folder, run = _not_a_cache(tmp_path)
    listed = _python("from glamd_core.__main__ import main; main(['runs', 'list'])", env={"GLAMD_RUNS_DIR": str(folder)})
    assert listed.returncode == 0, listed.stderr
    assert run.name in listed.stdout and "src" not in listed.stdout and f"retinanet-x-s0-{HEX}" not in listed.stdout
    cleared = _python("from glamd_core.__main__ import main; main(['runs', 'clear', '--all'])",
                      env={"GLAMD_RUNS_DIR": str(folder)})
    assert cleared.returncode == 0, cleared.stderr
    assert "removed 1 run(s)" in cleared.stdout and not run.exists()
    for f in ("src/main.py", "notes/todo.md", f"retinanet-x-s0-{HEX}/data.csv", "empty/.keep"):
        assert (folder / f).read_text() == "precious"
    assert folder.is_dir()


def test_is_run_needs_a_run_name_and_a_config_or_lock(tmp_path):
    for name, content, expected in [(f"a-s0-{HEX}", "config.json", True), (f"a-s0-{HEX}", ".lock", True),
                                    (f"a-s0-{HEX}", "other.txt", False), ("a-s0-notakey", "config.json", False)]:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        for f in d.iterdir():
            f.unlink()
        (d / content).write_text("{}")
        assert is_run(d) is expected, (name, content)


@pytest.mark.parametrize("pattern", ["/etc/*", "../*", "..", ".", "", "a/../../*"])
def test_list_refuses_patterns_that_leave_the_cache(tmp_path, pattern, capsys):
    with pytest.raises(ValueError, match="not a path"):
        list_runs(tmp_path, pattern)
    with pytest.raises(SystemExit):
        cli(["runs", "list", "--pattern", pattern])
    assert "not a path" in capsys.readouterr().err


# -- teacher-output cache: damaged entries are repaired, never served --------------------------------
def _distil(tmp_path):
    return runs.train_distilled("retinanet", SMOKE.teacher_backbone, SMOKE.student_backbone, SMOKE, DistillConfig(),
                                runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")


def _student_weights(tmp_path, result):
    return read_checkpoint(tmp_path / "runs" / result["run_dir"] / "last.pt")["model"]


def _damage(entries):
    """Every entry damaged, in turn: a changed tensor value under the old checksum, another input's
    entry under this name, truncated, empty, random bytes."""
    other = entries[-1].read_bytes()
    for i, path in enumerate(entries[:-1]):
        how = i % 5
        if how == 0:
            data = torch.load(path, weights_only=True)
            data["features"][0].view(-1)[0] += 1.0
            torch.save(data, path)
        elif how == 1:
            path.write_bytes(other)
        elif how == 2:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif how == 3:
            path.write_bytes(b"")
        else:
            path.write_bytes(os.urandom(2048))
    return entries[:-1]


def test_damaged_teacher_cache_entries_are_repaired_and_the_run_is_unchanged(tmp_path):
    first = _distil(tmp_path)
    expected = _student_weights(tmp_path, first)
    cache = next((tmp_path / "runs" / first["teacher_run"] / "teacher_cache").glob("train-*"))
    damaged = _damage(sorted(cache.glob("*.pt")))
    assert all(read_entry(p)[0] is None for p in damaged)

    removed, _ = clear_runs(tmp_path / "runs", first["run_dir"])
    assert removed == [first["run_dir"]]
    with pytest.warns(UserWarning, match="teacher cache entry .* recomputed from the teacher") as caught:
        second = _distil(tmp_path)
    named = {Path(str(w.message).split(" is ")[0].removeprefix("teacher cache entry ")) for w in caught
             if "teacher cache entry" in str(w.message)}
    assert named and named <= set(damaged)
    assert second["teacher_cache_batches"]["entries_repaired"] == len(named)
    assert all(read_entry(p)[0] is not None for p in named)  # rewritten whole
    got = _student_weights(tmp_path, second)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert second["metrics"] == first["metrics"]

    # a torn completion marker: the cache is incomplete, rebuilt (keeping what checks out), not a crash
    (cache / MARKER).write_text((cache / MARKER).read_text()[:20])
    clear_runs(tmp_path / "runs", first["run_dir"])
    with pytest.warns(UserWarning, match=f"{MARKER} cannot be read"):
        third = _distil(tmp_path)
    assert json.loads((cache / MARKER).read_text())["entries"] == len(list(cache.glob("*.pt")))
    got = _student_weights(tmp_path, third)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert all(read_entry(p)[0] is not None for p in cache.glob("*.pt"))


_STUDENT_CHILD = """
import sys, time
from dataclasses import replace
from glamd_core import runs
from glamd_core.distill import DistillConfig
from glamd_core.profiles import get_profile
profile = replace(get_profile("smoke"), teacher_backbone="resnet10t")
original = runs.teacher_cache_of
def slow_cache(*args, **kwargs):
    print("building", flush=True)
    time.sleep(60)
    return original(*args, **kwargs)
runs.teacher_cache_of = slow_cache
runs.train_distilled("retinanet", "resnet10t", profile.student_backbone, profile, DistillConfig(),
                     runs_dir=sys.argv[1], data_dir=sys.argv[2])
"""


def test_clearing_a_teacher_while_a_student_uses_it_leaves_the_teacher(tmp_path):
    teacher = runs.train_detector("retinanet", "resnet10t", SMOKE.for_teacher(), 0, tmp_path / "runs",
                                  data_dir=tmp_path / "data")
    child = subprocess.Popen([sys.executable, "-c", _STUDENT_CHILD, str(tmp_path / "runs"), str(tmp_path / "data")],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "building", child.stderr.read()
        removed, busy = clear_runs(tmp_path / "runs", "retinanet-resnet10t-s0-*")
        assert removed == [] and busy == [teacher["run_dir"]]
        assert (tmp_path / "runs" / teacher["run_dir"] / "last.pt").is_file()
    finally:
        child.kill()
        child.wait()
    removed, busy = clear_runs(tmp_path / "runs", "retinanet-resnet10t-s0-*")  # nobody reads it now
    assert removed == [teacher["run_dir"]] and busy == []


# -- settings and variables fail before anything trains, naming themselves ---------------------------
@pytest.mark.parametrize("seed", [-1, 2**32, 2**63 - 1, 10**30, 1.5, True])
def test_out_of_range_seeds_fail_when_made_and_name_the_seed(seed):
    with pytest.raises(ValueError, match="seed must be an integer from 0 to"):
        Experiment("retinanet", "glamd", "smoke", seed=seed)
    with pytest.raises(ValueError, match="TrainConfig.seed"):
        TrainConfig(seed=seed)
    Experiment("retinanet", "glamd", "smoke", seed=2**32 - 1)  # the largest seed is fine


@pytest.mark.parametrize("argv, named", [
    (["--seed", "9223372036854775807"], "seed"),
    (["--alpha", "1e308"], "alpha"),
    (["--method", "none", "--teacher-checkpoint", "teacher.pt"], "teacher_checkpoint"),
])
def test_cli_names_a_bad_setting_before_training(monkeypatch, capsys, argv, named):
    monkeypatch.setattr("glamd_core.experiments.run", lambda *a, **k: pytest.fail("must not train"))
    argv = ["run", "--profile", "smoke", *(["--method", "glamd"] if "--method" not in argv else []), *argv]
    with pytest.raises(SystemExit):
        cli(argv)
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "0"])
def test_a_bad_stop_variable_fails_before_a_run_folder_exists(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv(STOP_VARIABLE, value)
    with pytest.raises(ValueError, match=STOP_VARIABLE):
        runs.train_detector("retinanet", "resnet10t", SMOKE, 0, tmp_path / "runs", data_dir=tmp_path / "data")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    monkeypatch.setattr("glamd_core.experiments.run", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(SystemExit):
        cli(["run", "--profile", "smoke"])
    assert STOP_VARIABLE in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [("", None), ("  ", None), ("2", 2), (" 3 ", 3)])
def test_an_empty_stop_variable_means_unset(monkeypatch, value, expected):
    monkeypatch.setenv(STOP_VARIABLE, value)
    assert stop_after_epoch() == expected


@pytest.mark.parametrize("content", [[1, 2], torch.zeros(3), "weights"])
def test_a_checkpoint_that_holds_no_weights_is_named(tmp_path, content):
    path = tmp_path / "teacher.pt"
    torch.save(content, path)
    with pytest.raises(TypeError, match=f"{path} holds a {type(content).__name__}, not detector weights"):
        build_detector("retinanet", "resnet10t", 3, **SMOKE.detector, checkpoint=path)


# -- full disks and torn logs -----------------------------------------------------------------------
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a 'disk'")


@needs_dev_full
def test_a_full_disk_says_so_names_the_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "last.pt"
    (tmp_path / ".last.pt.partial").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(OSError, match=f"no space left on device while writing {target}") as caught:
        atomic_save({"x": torch.zeros(1000)}, target)
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / ".last.pt.partial").exists() and not (tmp_path / ".last.pt.partial").is_symlink()
    assert not target.exists()


@needs_dev_full
def test_a_full_disk_during_a_checkpoint_save_stops_training_by_name(tmp_path, synthetic_root):
    from glamd_core.data import VOCDetection, train_transforms

    ds = VOCDetection(synthetic_root, "train", transforms=train_transforms(), skip_ignored=True)
    model = build_detector("retinanet", "resnet10t", ds.num_classes, **SMOKE.detector)
    (tmp_path / ".last.pt.partial").symlink_to("/dev/full")
    with pytest.raises(OSError, match="no space left on device while writing .*last.pt"):
        train(model, ds, TrainConfig(epochs=1, batch_size=4, warmup_iters=1, progress=False), tmp_path)
    assert not (tmp_path / ".last.pt.partial").is_symlink() and not (tmp_path / ".last.pt.partial").exists()


def test_a_torn_last_log_line_is_dropped_on_resume_with_a_warning(tmp_path, synthetic_root, monkeypatch):
    from glamd_core.data import VOCDetection, train_transforms

    ds = VOCDetection(synthetic_root, "train", transforms=train_transforms(), skip_ignored=True)
    cfg = TrainConfig(epochs=2, batch_size=4, warmup_iters=1, progress=False, log_every=1)

    def model():
        torch.manual_seed(0)
        return build_detector("retinanet", "resnet10t", ds.num_classes, **SMOKE.detector)

    monkeypatch.setenv(STOP_VARIABLE, "1")
    with pytest.raises(TrainingStopped):
        train(model(), ds, cfg, tmp_path)
    monkeypatch.delenv(STOP_VARIABLE)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 1, "iter": 3, "lo')  # what a full disk or a power loss leaves
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("1,0.5")
    with pytest.warns(UserWarning, match="metrics.jsonl: its last line is torn"):
        train(model(), ds, cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r.get("summary")] == [0, 1]
    import pandas as pd

    assert pd.read_csv(tmp_path / "metrics.csv").epoch.tolist() == [0, 1]


def test_damage_in_the_middle_of_a_log_is_named(tmp_path):
    from glamd_core.engine import read_log

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl, line 2, is not JSON"):
        read_log(tmp_path / "metrics.jsonl")
