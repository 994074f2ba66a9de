"""The main job, and the teacher / student baselines the profiles are calibrated with.

:func:`reproduce` executes every experiment notebook at a profile (each writes
``results/<notebook>/``). :func:`run_baselines` trains a profile's teachers and students and
tabulates their AP (``benchmarks/cpu_calibration.py``). Runs are cached in ``runs/`` (see
``glamd_core.runs``), so calling either again only re-tabulates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from .experiments import results_dir, write_results
from .profiles import Profile, get_profile
from .runs import DATA_DIR, REPO_ROOT, RUNS_DIR, splits, train_detector


def reproduce(profile: str = "cpu", names=(), workers: int | None = None, data_root: str | None = None) -> list[Path]:
    """Every notebook under ``notebooks/`` (or the ``names`` given) executed with papermill at
    ``profile``, training ``workers`` runs at once (None: the notebooks' default); returns the
    executed copies (``results/<name>/<name>.ipynb``). A profile without a val split (real data)
    skips the calibration notebook unless it is named: there is nothing to choose on."""
    if not names and "val" not in splits(get_profile(profile)):
        names = [p for p in notebook_paths() if p.stem != "00_calibration"]
    return run_notebooks(names, profile, workers, data_root)


NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(names=()) -> list[Path]:
    if not names:
        return sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    paths = []
    for n in names:
        p = Path(n)
        if not p.suffix:
            p = p.with_suffix(".ipynb")
        if not p.is_file():
            p = NOTEBOOK_DIR / p.name
        if not p.is_file():
            raise FileNotFoundError(f"no notebook {n!r} (looked in {NOTEBOOK_DIR})")
        paths.append(p)
    return paths


def run_notebooks(names=(), profile: str = "cpu", workers: int | None = None,
                  data_root: str | None = None) -> list[Path]:
    """Execute each notebook with ``-p profile <profile>`` (and ``-p workers <workers>`` when
    given: how many runs each trains at once); the executed copy is saved beside its results as
    ``results/<name>/<name>.ipynb`` (``results/_<profile>/...`` for scratch profiles)."""
    import papermill

    parameters = ({"profile": profile} | ({} if workers is None else {"workers": int(workers)})
                  | ({} if data_root is None else {"data_root": str(data_root)}))
    outs = []
    for path in notebook_paths(names):
        # papermill saves the notebook after every cell: run it beside results/<name>/ and move it in
        # only when it has finished, so a killed or failed run never leaves a half-executed copy there.
        # A failed run's copy stays at the partial path, for its traceback.
        where = results_dir(path.stem, profile, create=False)
        partial = where.with_name(f".{path.stem}.partial.ipynb")  # papermill wants the .ipynb suffix
        partial.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(path), str(partial), parameters=parameters, cwd=str(REPO_ROOT),
                                   progress_bar=True, kernel_name="python3")
        where.mkdir(parents=True, exist_ok=True)
        out = where / path.name
        os.replace(partial, out)
        outs.append(out)
    return outs


def run_baselines(profile: Profile, kinds=("retinanet", "faster_rcnn"), seeds=None,
                  runs_dir: Path = RUNS_DIR, out_dir: Path | None = None, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """Teacher (first seed) and student (every seed) per detector kind; returns one row per run,
    also written to ``out_dir`` (default ``results/00_baselines/``)."""
    seeds = tuple(seeds if seeds is not None else profile.seeds)
    t0 = time.perf_counter()
    rows = []
    for kind in kinds:
        p = profile.for_kind(kind)
        for role, backbone, role_seeds in (("teacher", p.teacher_backbone, seeds[:1]),
                                           ("student", p.student_backbone, seeds)):
            for seed in role_seeds:
                r = train_detector(kind, backbone, p.for_teacher() if role == "teacher" else p, seed,
                                   runs_dir, data_dir=data_dir)
                rows.append({"kind": kind, "role": role, "backbone": backbone, "seed": seed,
                             **{f"{k} {role}": round(100 * v, 2) for role in ("val", "test")
                                for k, v in r["metrics"].get(role, {}).items()},
                             "train_minutes": round(r["train_seconds"] / 60, 2), "run": r["run_dir"]})
    table = pd.DataFrame(rows)
    write_results("00_baselines", profile, seeds, time.perf_counter() - t0, {"table": table},
                  note="AP columns in percent (COCO AP@[.5:.95], AP50, ... via pycocotools; VOC07 11-point mAP@0.5).",
                  out_dir=out_dir, kinds=list(kinds))
    return table
