"""The speed goals of distillation, all measured side by side in one run on this machine.

    python -m benchmarks [--epochs 2] [--repeats 12] [--out results/benchmarks]   (or: make bench)

1. distilled run / plain student run, wall time (``cpu`` profile, same kind and seed, teacher-output
   cache on and already built by an earlier distilled run of the same teacher) ...... goal <= 1.3
2. GLAMD KD step / global-mask (Zhang & Ma) KD step (cache on) ...................... goal <= 1.05
3. KD step / (student step + teacher forward), cache off ............................. goal <= 1.10
4. per-patch loop / vectorized local masks ............................................ goal >= 50x

(1) trains short runs into an empty temporary run cache: per detector kind a teacher (not timed),
one distilled run that builds the teacher-output cache (timed, reported as context), then the plain
student and the distilled student of seed 0. (2)-(3) time single RetinaNet training steps at the
``cpu`` profile's batch, in interleaved rounds (best of each) so a busy spell of the machine hits
every variant alike. Writes the printed report and the figures as json to ``--out``.
"""

from __future__ import annotations

from glamd_core.kernels import exec_canonical

if __name__ == "__main__":  # before torch starts: benchmarks that train run on the canonical kernels
    exec_canonical()

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import timm
import torch
import torchvision

from glamd_core.detectors import build_detector
from glamd_core.distill import DistillConfig, Distiller
from glamd_core.engine import loss_gradient_norms
from glamd_core.experiments import Experiment, run
from glamd_core.masks import local_channel_mask, local_spatial_mask
from glamd_core.profiles import get_profile
from glamd_core.data.splits import dataset_root
from glamd_core.files import REPO_ROOT, git_commit
from glamd_core.teacher_cache import build_teacher_cache

GOALS = {  # key: (what, comparison, bound)
    "distilled_over_plain_run": ("distilled run / plain student run, wall time", "<=", 1.3),
    "glamd_over_global_kd_step": ("GLAMD KD step / global-mask KD step", "<=", 1.05),
    "kd_step_over_student_plus_teacher": ("KD step / (student step + teacher forward), cache off", "<=", 1.10),
    "loop_over_vectorized_masks": ("per-patch loop / vectorized local masks", ">=", 50.0),
}


def interleaved_best(fns: dict, repeats: int) -> dict:
    """Best wall time of each function over ``repeats`` rounds that call them in turn (after a warm-up round)."""
    times = {name: [] for name in fns}
    for i in range(repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


# -- 4. masks -----------------------------------------------------------------------------------
def loop_local_masks(f: torch.Tensor, p: int, t: float):
    """Local spatial and channel masks, one patch, one cell, one channel at a time in Python: what
    the vectorized masks replace."""
    b, c, h, w = f.shape
    spatial, channel = torch.zeros(b, 1, h, w, dtype=f.dtype), torch.zeros(b, c, h, w, dtype=f.dtype)
    for i in range(b):
        for y0 in range(0, h, p):
            for x0 in range(0, w, p):
                cells = [(y, x) for y in range(y0, min(y0 + p, h)) for x in range(x0, min(x0 + p, w))]
                s = {yx: math.exp(sum(abs(float(f[i, k, yx[0], yx[1]])) for k in range(c)) / c / t) for yx in cells}
                total = sum(s.values())
                for (y, x), v in s.items():
                    spatial[i, 0, y, x] = len(cells) * v / total
                g = [math.exp(sum(abs(float(f[i, k, y, x])) for y, x in cells) / len(cells) / t) for k in range(c)]
                total = sum(g)
                for k in range(c):
                    for y, x in cells:
                        channel[i, k, y, x] = c * g[k] / total
    return spatial, channel


def masks_speedup(repeats: int) -> tuple[dict, str]:
    f = torch.randn(2, 16, 20, 20, dtype=torch.float64)
    loop = loop_local_masks(f, 7, 0.5)
    fast = (local_spatial_mask(f, 7, 0.5), local_channel_mask(f, 7, 0.5))
    for a, b in zip(loop, fast):  # the two must agree before their speeds are compared
        torch.testing.assert_close(a, b)
    t = interleaved_best({"loop": lambda: loop_local_masks(f, 7, 0.5),
                          "vectorized": lambda: (local_spatial_mask(f, 7, 0.5), local_channel_mask(f, 7, 0.5))},
                         max(2, repeats // 4))
    ratio = t["loop"] / t["vectorized"]
    return {"loop_over_vectorized_masks": ratio}, (
        f"local masks of 2x16x20x20 (float64, p = 7): loop {1e3 * t['loop']:.1f} ms, "
        f"vectorized {1e3 * t['vectorized']:.3f} ms")


# -- 2, 3. training steps ---------------------------------------------------------------------------
def step_ratios(repeats: int) -> tuple[dict, str]:
    profile = get_profile("cpu")
    opts = profile.detector
    torch.manual_seed(0)
    teacher = build_detector("retinanet", profile.teacher_backbone, 10, **opts).eval()
    size = opts["image_size"]
    images = [torch.rand(3, size, size) for _ in range(profile.train.batch_size)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 90.0, 44.0]]),
                "labels": torch.tensor([1, 5])} for _ in images]
    students = {name: build_detector("retinanet", profile.student_backbone, 10, **opts)
                for name in ("plain", "online", "glamd", "global")}
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_teacher_cache(teacher, images, Path(tmp) / "cache", len(images), progress=False)
        models = {
            "student step": students["plain"],
            "KD step, cache off": Distiller(teacher, students["online"], DistillConfig(method="glamd")),
            "GLAMD KD step": Distiller(teacher, students["glamd"], DistillConfig(method="glamd"), cache),
            "global KD step": Distiller(teacher, students["global"], DistillConfig(method="global"), cache),
        }

        def step(model):
            model.train()
            optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], 1e-4)

            def one():
                loss = sum(model(images, targets).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            return one

        probed = Distiller(teacher, build_detector("retinanet", profile.student_backbone, 10, **opts),
                           DistillConfig(method="glamd"), cache).train()
        probe_params = [q for q in probed.student.backbone.parameters() if q.requires_grad]

        def forward_and_probe():  # what TrainConfig.grad_norm_every adds to a step: the norms' backward passes
            loss_gradient_norms(probed(images, targets), probe_params)

        def forward_only():
            probed(images, targets)

        def teacher_forward():
            with torch.no_grad():
                batch, _ = teacher.transform(images)
                teacher.head(list(teacher.backbone(batch.tensors).values()))

        t = interleaved_best({**{k: step(m) for k, m in models.items()}, "teacher forward": teacher_forward,
                              "KD forward + gradient-norm probe": forward_and_probe, "KD forward": forward_only},
                             repeats)
        assert cache.misses == 0 and cache.hits > 0  # the cached steps really read the cache
    figures = {"glamd_over_global_kd_step": t["GLAMD KD step"] / t["global KD step"],
               "kd_step_over_student_plus_teacher": t["KD step, cache off"] / (t["student step"] + t["teacher forward"])}
    probe = t["KD forward + gradient-norm probe"] - t["KD forward"]
    every = profile.train.grad_norm_every
    detail = [f"RetinaNet {profile.teacher_backbone} -> {profile.student_backbone}, batch {len(images)} at {size} px: "
              + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in t.items()),
              f"gradient-norm probe (TrainConfig.grad_norm_every = {every}): {1e3 * probe:.1f} ms per probed step, "
              f"{100 * probe / every / t['GLAMD KD step']:.2f} % of training time at one probe per {every} GLAMD KD steps"]
    return figures, detail


# -- 1. whole runs --------------------------------------------------------------------------------
def run_ratios(epochs: int) -> tuple[dict, list[str]]:
    lines, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(runs_dir=Path(tmp) / "runs", data_dir=Path(tmp) / "data", progress=False)
        dataset_root(get_profile("cpu"), data_dir=kw["data_dir"])  # not timed
        for kind in ("retinanet", "faster_rcnn"):
            teacher = run(Experiment(kind, "teacher", "cpu", epochs=epochs), **kw)  # not timed
            timed = {}
            for label, exp in (("first distilled run (seed 1), builds the cache", Experiment(kind, "glamd", "cpu", 1, epochs=epochs)),
                               ("plain student (seed 0)", Experiment(kind, "none", "cpu", 0, epochs=epochs)),
                               ("distilled student (seed 0), cache built", Experiment(kind, "glamd", "cpu", 0, epochs=epochs))):
                t0 = time.perf_counter()
                result = run(exp, **kw)
                timed[label] = time.perf_counter() - t0
                if "distilled" in label:
                    assert result["teacher_cache_batches"]["online"] == 0, result["teacher_cache_batches"]
            ratio = timed["distilled student (seed 0), cache built"] / timed["plain student (seed 0)"]
            ratios[kind] = ratio
            lines.append(f"{kind}, {epochs} epoch(s), train + evaluate: "
                         + ", ".join(f"{k} {v:.1f} s" for k, v in timed.items())
                         + f" (teacher trained first in {teacher['train_seconds']:.0f} s, not timed here)")
    return {"distilled_over_plain_run": ratios}, lines


def verdict(key: str, value) -> str:
    what, op, bound = GOALS[key]
    values = value.values() if isinstance(value, dict) else [value]
    met = all(v <= bound for v in values) if op == "<=" else all(v >= bound for v in values)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.3f}"
    return f"| {what} | {op} {bound:g} | {shown} | {'met' if met else 'MISSED'} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="epochs of each timed run (and its teacher)")
    p.add_argument("--repeats", type=int, default=12, help="rounds of the step timings")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "benchmarks"),
                   help="folder for benchmarks.txt and benchmarks.json ('' to write nothing)")
    a = p.parse_args()
    header = [f"python -m benchmarks --epochs {a.epochs} --repeats {a.repeats}",
              f"commit {git_commit()}, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()} "
              f"{platform.processor() or ''} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
              f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
              f"timm {timm.__version__}"]
    print(*header, sep="\n", flush=True)
    figures, details = {}, []
    for measure in (lambda: masks_speedup(a.repeats), lambda: step_ratios(a.repeats), lambda: run_ratios(a.epochs)):
        values, detail = measure()
        figures |= values
        details += detail if isinstance(detail, list) else [detail]
        print(*(detail if isinstance(detail, list) else [detail]), sep="\n", flush=True)
    table = ["| goal | bound | measured | |", "| --- | --- | --- | --- |"] + [verdict(k, figures[k]) for k in GOALS]
    print(*table, sep="\n")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "benchmarks.txt").write_text("\n".join(header + [""] + details + [""] + table) + "\n")
        (out / "benchmarks.json").write_text(json.dumps(
            figures | {"goals": {k: f"{op} {bound:g}" for k, (_, op, bound) in GOALS.items()},
                       "commit": git_commit(), "threads": torch.get_num_threads(), "epochs": a.epochs,
                       "torch": torch.__version__, "machine": platform.machine(), "cores": os.cpu_count()}, indent=2) + "\n")
        print("wrote", out / "benchmarks.txt", "and benchmarks.json")


if __name__ == "__main__":
    main()
