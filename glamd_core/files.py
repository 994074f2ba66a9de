"""Files written whole or not at all, and checkpoints read with errors that name them.

A run can be killed at any instant (Ctrl-C, SIGKILL, a machine shutdown). Everything a later call
reads back -- checkpoints, ``eval.json``, results tables, executed notebooks -- is first written
beside its destination and then renamed over it (``os.replace`` is atomic on one filesystem), so a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import shutil
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
