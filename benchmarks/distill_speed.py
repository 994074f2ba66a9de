"""Speed of the GLAM masks and of a distillation step, measured in one run on this machine (CPU).

Prints three ratios (issue #3's goals in brackets):
1. GLAM mask time / global mask time on P3-P7 shaped features            (<= 1.5)
2. loop reference / vectorized local masks (the tests' reference)      (>= 50x)
3. one KD training step / (student step + teacher forward), RetinaNet   (<= 1.10)
and, to put (1) in context, what GLAM's extra mask time is as a share of that KD step.

    python benchmarks/distill_speed.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from glamd_core.detectors import build_detector
from glamd_core.distill import Distiller, DistillConfig
from glamd_core.masks import glam, local_channel_mask, local_spatial_mask
from glamd_core.profiles import get_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_masks import ref_local_channel, ref_local_spatial  # noqa: E402


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved_best(fns, repeats: int) -> list[float]:
    """Minimum wall time of each of ``fns`` over ``repeats`` rounds that call them in turn, after a
    warm-up round."""
    times = [[] for _ in fns]
    for i in range(repeats + 1):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            if i:
                ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def pyramid(batch, channels, image_h, image_w):
    return [torch.randn(batch, channels, -(-image_h // s), -(-image_w // s)) for s in (8, 16, 32, 64, 128)]


def mask_ratio(feats, repeats):
    """Best-of times of ``glam`` in GLAMD mode and in global mode on the same pyramid. The student
    maps are made before timing, and the two modes alternate so that a busy spell of the machine
    hits both."""
    students = [0.9 * f + 0.1 * torch.randn_like(f) for f in feats]
    times = {"global": [], "both": []}
    for i in range(repeats + 1):  # the first round is a warm-up
        for mode in times:
            t0 = time.perf_counter()
            for t, s in zip(feats, students):
                glam(t, s, mode, 7, 0.5)
            if i:
                times[mode].append(time.perf_counter() - t0)
    return min(times["both"]), min(times["global"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    for name, feats in (("paper scale: 2 x 256 x P3-P7 of 800x1216", pyramid(2, 256, 800, 1216)),
                        ("cpu profile: 8 x 64 x P3-P7 of 128x128", pyramid(8, 64, 128, 128))):
        t_glam, t_global = mask_ratio(feats, max(3, a.repeats // 4) if "paper" in name else a.repeats)
        extra_mask_time = t_glam - t_global  # the last pyramid is the KD step's below (same batch, size, width)
        print(f"[1] {name}: GLAM {1e3 * t_glam:.2f} ms, global {1e3 * t_global:.2f} ms, "
              f"ratio {t_glam / t_global:.2f} (goal <= 1.5)")

    f = torch.randn(2, 16, 20, 20, dtype=torch.float64)
    t_fast = best_of(lambda: (local_spatial_mask(f, 7), local_channel_mask(f, 7)), a.repeats)
    t_ref = best_of(lambda: (ref_local_spatial(f, 7, 0.5), ref_local_channel(f, 7, 0.5)), 2)
    print(f"[2] local masks on 2x16x20x20: loop reference {1e3 * t_ref:.1f} ms, vectorized {1e3 * t_fast:.3f} ms, "
          f"speed-up {t_ref / t_fast:.0f}x (goal >= 50x)")

    profile = get_profile("cpu")
    opts = profile.detector
    teacher = build_detector("retinanet", profile.teacher_backbone, 10, **opts)
    student = build_detector("retinanet", profile.student_backbone, 10, **opts)
    size = opts["image_size"]
    images = [torch.rand(3, size, size) for _ in range(profile.train.batch_size)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 90.0, 44.0]]),
                "labels": torch.tensor([1, 5])} for _ in images]
    distiller = Distiller(teacher, student, DistillConfig(method="glamd")).train()
    opt_kd = torch.optim.AdamW([q for q in distiller.parameters() if q.requires_grad], 1e-4)
    opt_s = torch.optim.AdamW(student.parameters(), 1e-4)

    def step(model, opt):
        def run():
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return run

    def teacher_forward():
        with torch.no_grad():
            batch, _ = teacher.transform(images)
            teacher.head(list(teacher.backbone(batch.tensors).values()))

    # Interleaved rounds, best of each, as for the masks: a busy spell of the machine hits all three.
    t_kd, t_student, t_teacher = interleaved_best(
        [step(distiller, opt_kd), step(student, opt_s), teacher_forward], max(3, a.repeats // 2))
    print(f"[3] RetinaNet {profile.teacher_backbone}->{profile.student_backbone}, batch {len(images)} at {size} px: "
          f"KD step {1e3 * t_kd:.0f} ms, student step {1e3 * t_student:.0f} ms, teacher forward {1e3 * t_teacher:.0f} ms, "
          f"ratio {t_kd / (t_student + t_teacher):.3f} (goal <= 1.10)")
    print(f"[3] in context: GLAM's extra mask time over the global mask, {1e3 * extra_mask_time:.2f} ms, "
          f"is {100 * extra_mask_time / t_kd:.2f} % of that KD step")


if __name__ == "__main__":
    main()
