"""Measure the `cpu` profile against its calibration goals, in one run on this machine.

Goals: on 2 cores, a teacher reaches COCO AP50 >= 0.5 on the synthetic test split, the
student trained the same way is >= 3 AP points below it, and one student run takes <= 10 minutes.

    python benchmarks/cpu_calibration.py [--kinds retinanet faster_rcnn] [--fresh] [--methods glamd defeat]

``--methods`` also trains (or fetches) a distilled student per kind and method at seed 0, with the
profile's chosen settings, into ``distilled.{csv,md}`` beside the baselines.

Runs are cached in runs/ like every other run; --fresh trains into a temporary runs folder so the
times are measured now, on this machine.
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

from glamd_core.detectors import KINDS
from glamd_core.profiles import get_profile
from glamd_core.reproduce import run_baselines
from glamd_core.calibration import setting_of
from glamd_core.experiments import Experiment, results_dir, results_frame, run_all, write_results
from glamd_core.runs import RUNS_DIR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--fresh", action="store_true", help="train into a temporary runs folder")
    p.add_argument("--methods", nargs="*", default=[], choices=["global", "glamd", "defeat"],
                   help="distilled students to add, at the profile's chosen settings (seed 0)")
    a = p.parse_args()
    profile = get_profile(a.profile)
    runs = Path(tempfile.mkdtemp(prefix="glamd-calib-")) if a.fresh else RUNS_DIR
    print(f"profile={profile.name} threads={torch.get_num_threads()} runs={runs}")
    table = run_baselines(profile, a.kinds, seeds=profile.seeds[:1], runs_dir=runs,
                          out_dir=results_dir("cpu_calibration", profile.name))
    print(table.drop(columns=["run"]).to_string(index=False))
    ok = True
    for kind in a.kinds:
        t = table[(table.kind == kind) & (table.role == "teacher")].iloc[0]
        s = table[(table.kind == kind) & (table.role == "student")].iloc[0]
        checks = {
            f"teacher AP50 {t['AP50 test']:.1f} >= 50 (test)": t["AP50 test"] >= 50,
            f"teacher AP - student AP = {t['AP test'] - s['AP test']:.1f} >= 3 points (test)":
                t["AP test"] - s["AP test"] >= 3,
            f"student training {s.train_minutes:.1f} min <= 10": s.train_minutes <= 10,
        }
        for text, passed in checks.items():
            print(f"{kind:12s} {'PASS' if passed else 'FAIL'}  {text}")
            ok &= bool(passed)
    print("all goals met" if ok else "some goals not met")
    if a.methods:
        t0 = time.perf_counter()
        seed = profile.seeds[0]
        experiments = [Experiment(kind, method, profile.name, seed=seed) for kind in a.kinds for method in a.methods]
        frame = results_frame(run_all(experiments, workers=1, runs_dir=runs))
        settings = [setting_of(e.distill_config()) for e in experiments]
        frame.insert(2, "setting", settings)
        write_results("cpu_calibration", profile, [seed], time.perf_counter() - t0, {"distilled": frame},
                      out_dir=results_dir("cpu_calibration", profile.name), split="test")
        print(frame.drop(columns=["run"]).to_string(index=False))


if __name__ == "__main__":
    main()
