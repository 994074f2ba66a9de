"""Files written whole or not at all, and checkpoints read with errors that name them.

A run can be killed at any instant (Ctrl-C, SIGKILL, a machine shutdown). Everything a later call
reads back -- checkpoints, ``eval.json``, results tables, executed notebooks -- is first written
beside its destination and then renamed over it (``os.replace`` is atomic on one filesystem), so a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: data/, runs/, results/ by default


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (same folder, so same filesystem)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def env_path(variable: str, default: str | Path) -> Path:
    """A folder named by an environment variable: unset, empty or blank means ``default`` (an empty
    value must never become ``Path("")``, the current directory); ``~`` is expanded."""
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else Path(default)


def _write_whole(path: Path, write) -> None:
    """``write(file)`` into the partial file, then rename it over ``path``. On failure the partial
    file is removed (a half-written checkpoint must not keep a full disk full), and a full disk
    says so, naming the file."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:  # through a Python file: a full disk raises OSError(ENOSPC), not a torch enforce error
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}; its partial file was "
                          f"removed. Free space (e.g. `python -m glamd_core runs clear --pattern ...`) and run "
                          "again: training resumes from the last complete checkpoint", str(path)) from exc
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _write_whole(Path(path), lambda f: f.write(text.encode()))


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` through a partial file."""
    _write_whole(Path(path), lambda f: torch.save(obj, f))


def read_checkpoint(path: str | Path, map_location="cpu"):
    """``torch.load`` whose errors name the file and what to do (torch's own say only "failed
    finding central directory" for a truncated file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise RuntimeError(f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated or "
                           f"not a torch checkpoint ({exc}). Delete it to train again from scratch.") from exc


def replace_dir(staging: Path, target: Path) -> None:
    """Put the folder ``staging`` in the place of ``target`` (which may not exist).

    Two renames: ``target`` -> ``.<name>.old``, ``staging`` -> ``target``; a kill between them leaves
    ``.<name>.old``, which :func:`recover_dir` puts back. The old folder is deleted last.
    """
    staging, target = Path(staging), Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: Path) -> None:
    """Undo a :func:`replace_dir` that was killed between its two renames."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)


def config_key(config: dict) -> str:
    """12 hex digits of the sha256 of ``config`` as sorted JSON: a run's key, a dataset folder's name."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


# -- locks: one process trains a run, generates a dataset or builds a teacher cache; the others wait --
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
