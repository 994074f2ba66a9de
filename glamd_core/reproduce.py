"""The main job, and the teacher / student baselines the profiles are calibrated with.

:func:`reproduce` executes every experiment notebook at a profile (each writes
``results/<notebook>/``). :func:`run_baselines` trains a profile's teachers and students and
tabulates their AP (``benchmarks/cpu_calibration.py``). Runs are cached in ``runs/`` (see
``glamd_core.runs``), so calling either again only re-tabulates.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .experiments import write_results
from .profiles import Profile
from .runs import DATA_DIR, RUNS_DIR, train_detector


def reproduce(profile: str = "cpu", names=(), workers: int | None = None) -> list[Path]:
    """Every notebook under ``notebooks/`` (or the ``names`` given) executed with papermill at
    ``profile``, training ``workers`` runs at once (None: the notebooks' default); returns the
    executed copies (``results/<name>/<name>.ipynb``)."""
    from .notebooks import run_notebooks

    return run_notebooks(names, profile, workers)


def run_baselines(profile: Profile, kinds=("retinanet", "faster_rcnn"), seeds=None,
                  runs_dir: Path = RUNS_DIR, out_dir: Path | None = None, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """Teacher (first seed) and student (every seed) per detector kind; returns one row per run,
    also written to ``out_dir`` (default ``results/00_baselines/``)."""
    seeds = tuple(seeds if seeds is not None else profile.seeds)
    t0 = time.perf_counter()
    rows = []
    for kind in kinds:
        for role, backbone, role_seeds in (("teacher", profile.teacher_backbone, seeds[:1]),
                                           ("student", profile.student_backbone, seeds)):
            for seed in role_seeds:
                r = train_detector(kind, backbone, profile.for_teacher() if role == "teacher" else profile, seed,
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
