"""``make paper-check``: the paper's settings, end to end, on CPU, in a few minutes.

There is no GPU and no real VOC / COCO here, so this proves the paper path on what we can make:
a few synthetic images written in the real **VOC and COCO layouts at the paper's image sizes**
(1000 x 600 and 1333 x 800), random ImageNet-weight files in ``$GLAMD_WEIGHTS``, and the profiles
``paper_voc_dryrun`` / ``paper_coco_dryrun`` -- the paper profiles with only the length cut
(``profiles.dry_run``). Every step goes through the public commands, under ``torchrun`` with 2
processes (gloo):

1. ``paper_voc_dryrun``, RetinaNet ResNet34 -> ResNet18, GLAMD: the teacher trains and is evaluated,
   the student stops after epoch 1 (``$GLAMD_STOP_AFTER_EPOCH``, as a job hitting its wall-time limit);
2. the same command again: the student resumes from its checkpoint, finishes and is evaluated;
3. ``paper_coco_dryrun``, Faster R-CNN ResNet101 -> ResNet50, GLAMD, its teacher imported from a
   checkpoint file (``--teacher-checkpoint``, as a teacher trained elsewhere);
4. ``notebooks/08_mask_visualization`` through papermill at ``paper_voc_dryrun``.

The backbones are the paper's own for VOC and for COCO's two-stage detectors; COCO's RetinaNet
(a ResNeXt101-64x4d teacher) is left out for time -- its path differs from Faster R-CNN's only in
the detector kind, which step 1 covers. Everything is written to a temporary folder (runs
included); the repository's ``runs/`` is not touched. Prints each step's wall time; exits non-zero
if any step fails or its outputs are not what the step must leave.

    python -m glamd_core.paper_check [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

from PIL import Image

BUDGET_SECONDS = 6 * 60
REPO_ROOT = Path(__file__).resolve().parents[1]


def _widen(folder: Path, width: int, height: int) -> None:
    """Pad every square synthetic image on the right to ``width`` x ``height`` (the boxes stay
    valid) and rewrite the sizes in its VOC XML and COCO json."""
    for jpg in (folder / "JPEGImages").glob("*.jpg"):
        img = Image.open(jpg).convert("RGB")
        assert img.height == height, (jpg, img.size)
        canvas = Image.new("RGB", (width, height), (124, 116, 104))
        canvas.paste(img, (0, 0))
        canvas.save(jpg, quality=92)
    for xml in (folder / "Annotations").glob("*.xml"):
        tree = ET.parse(xml)
        tree.find("size/width").text = str(width)
        tree.write(xml)
    for js in (folder / "annotations").glob("*.json"):
        coco = json.loads(js.read_text())
        for image in coco["images"]:
            image["width"] = width
        js.write_text(json.dumps(coco))


def write_voc(root: Path, work: Path, width: int = 1000, height: int = 600, trainval: int = 3, test: int = 2) -> Path:
    """``VOCdevkit/VOC2007`` (``trainval``, ``test``) and ``VOC2012`` (``trainval``) images of
    ``width`` x ``height``."""
    from .data import SyntheticSpec, generate

    for year, seed, num_test in (("VOC2007", 1, test), ("VOC2012", 2, 0)):
        src = generate(work / f"src{year}", SyntheticSpec(num_train=trainval, num_val=0, num_test=num_test,
                                                          image_size=height, seed=seed), progress=False)
        if width != height:
            _widen(src, width, height)
        shutil.copytree(src, root / year)
        main = root / year / "ImageSets" / "Main"
        shutil.copy(main / "train.txt", main / "trainval.txt")
    return root


def write_coco(root: Path, work: Path, width: int = 1333, height: int = 800, train: int = 6, val: int = 2) -> Path:
    """``coco/annotations/instances_{train,val}2017.json`` with ``train2017/`` and ``val2017/`` images
    of ``width`` x ``height``."""
    from .data import SyntheticSpec, generate

    src = generate(work / "srccoco", SyntheticSpec(num_train=train, num_val=val, num_test=0, image_size=height,
                                                   seed=3), progress=False)
    if width != height:
        _widen(src, width, height)
    (root / "annotations").mkdir(parents=True)
    for split, name in (("train", "train2017"), ("val", "val2017")):
        shutil.copy(src / "annotations" / f"instances_{split}.json", root / "annotations" / f"instances_{name}.json")
        shutil.copytree(src / "JPEGImages", root / name)
    return root


def write_weights(folder: Path, names) -> Path:
    """Random 'ImageNet' weights under the documented file names (nothing can be downloaded here)."""
    import timm
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.manual_seed(0)
        torch.save(timm.create_model(name, pretrained=False).state_dict(), folder / f"{name}.pth")
    return folder


def write_teacher_checkpoint(path: Path, profile_name: str, kind: str, coco_root: Path) -> Path:
    """A detector 'trained elsewhere' (random weights) in the paper profile's teacher architecture."""
    import torch

    from .detectors import build_detector
    from .profiles import get_profile
    from .data.splits import load_split

    profile = get_profile(profile_name).for_kind(kind)
    classes = load_split(profile, coco_root, "train").num_classes
    torch.manual_seed(0)
    model = build_detector(kind, profile.teacher_backbone, classes, **profile.detector)
    torch.save(model.state_dict(), path)
    return path


class Check:
    def __init__(self, env: dict):
        self.env, self.rows, self.failures = env, [], []

    def step(self, name: str, command: list[str], extra_env: dict | None = None) -> None:
        print(f"\n=== {name}\n$ {' '.join(command)}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.run(command, cwd=REPO_ROOT, env=self.env | (extra_env or {})).returncode
        seconds = time.perf_counter() - t0
        self.rows.append((name, seconds, code))
        if code:
            self.failures.append(f"{name}: exit code {code}")

    def expect(self, what: str, ok: bool) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failures.append(what)


def _runs(runs_dir: Path, pattern: str) -> list[Path]:
    return sorted(p for p in runs_dir.glob(pattern) if p.is_dir())


def _epochs_logged(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    head = lines[0].split(",")
    return [int(line.split(",")[head.index("epoch")]) for line in lines[1:]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (data, runs) for inspection")
    a = p.parse_args(argv)
    import torch

    from .engine import CHECKPOINT
    from .files import read_checkpoint

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="glamd-paper-check-"))
    runs_dir = work / "runs"
    # One training step per epoch (global batch 2: one image per rank): every path -- training, the stop
    # and the resume, sharded evaluation -- runs as with more images, at a third of the time.
    voc = write_voc(work / "VOCdevkit", work, trainval=1, test=2)  # VOC07+12 trainval: 2 images
    coco = write_coco(work / "coco", work, train=2, val=2)
    weights = write_weights(work / "weights", ("resnet18", "resnet34", "resnet50", "resnet101"))
    env = dict(os.environ, GLAMD_RUNS_DIR=str(runs_dir), GLAMD_WEIGHTS=str(weights), GLAMD_VOC_ROOT=str(voc),
               GLAMD_COCO_ROOT=str(coco), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    teacher_ckpt = write_teacher_checkpoint(work / "teacher_elsewhere.pt", "paper_coco_dryrun", "faster_rcnn", coco)
    setup_seconds = time.perf_counter() - t_start
    print(f"data, weights and a teacher checkpoint written to {work} in {setup_seconds:.0f} s")

    check = Check(env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "glamd_core", "run"]
    voc_run = torchrun + ["--profile", "paper_voc_dryrun", "--kind", "retinanet", "--method", "glamd"]
    check.step("VOC: teacher, then GLAMD student stopped after epoch 1", voc_run, {"GLAMD_STOP_AFTER_EPOCH": "1"})
    students = _runs(runs_dir, "retinanet-resnet18-glamd-*")
    check.expect("the VOC teacher finished (eval.json)",
                 any((r / "eval.json").exists() for r in _runs(runs_dir, "retinanet-resnet34-s0-*")))
    stopped = students and (students[0] / CHECKPOINT).exists() and not (students[0] / "eval.json").exists()
    check.expect("the student stopped with a checkpoint and no result", bool(stopped))
    if stopped:
        check.expect("its checkpoint holds epoch 1 of 2",
                     read_checkpoint(students[0] / CHECKPOINT, map_location="cpu")["epoch"] == 0)

    check.step("VOC: the same command resumes the student and evaluates it", voc_run)
    if students:
        done = students[0] / "eval.json"
        check.expect("the student finished (eval.json)", done.exists())
        check.expect("each epoch logged once across the two calls", _epochs_logged(students[0]) == [0, 1])
        if done.exists():
            ap = json.loads(done.read_text())["metrics"]["test"]["AP"]
            check.expect(f"test AP {ap:.4f} evaluated (sharded over both ranks)", 0.0 <= ap <= 1.0)

    check.step("COCO: imported Faster R-CNN ResNet101 teacher -> GLAMD ResNet50 student",
               torchrun + ["--profile", "paper_coco_dryrun", "--kind", "faster_rcnn", "--method", "glamd",
                           "--teacher-checkpoint", str(teacher_ckpt)])
    coco_students = _runs(runs_dir, "faster_rcnn-resnet50-glamd-*")
    check.expect("the COCO student finished (eval.json)",
                 bool(coco_students) and (coco_students[0] / "eval.json").exists())
    check.expect("the teacher was imported, not trained",
                 any(not (r / "metrics.csv").exists() and (r / "eval.json").exists()
                     for r in _runs(runs_dir, "faster_rcnn-resnet101-*")))

    notebook = "08_mask_visualization"
    check.step(f"papermill: {notebook} at paper_voc_dryrun",
               [sys.executable, "-m", "glamd_core", "reproduce", "--profile", "paper_voc_dryrun", notebook])
    from .experiments import results_dir

    out = results_dir(notebook, "paper_voc_dryrun", create=False)
    check.expect(f"{out.relative_to(REPO_ROOT)} holds the executed notebook and its manifest",
                 (out / f"{notebook}.ipynb").exists() and (out / "manifest.json").exists())

    total = time.perf_counter() - t_start
    print(f"\npaper check on {torch.get_num_threads()} threads, 2 torchrun processes x 1 thread:")
    print(f"  {'set-up (data at real size, weights, teacher checkpoint)':68s} {setup_seconds:6.0f} s")
    for name, seconds, code in check.rows:
        print(f"  {name:68s} {seconds:6.0f} s{'' if code == 0 else f'  (exit {code})'}")
    print(f"  {'total':68s} {total:6.0f} s  (budget {BUDGET_SECONDS} s: {'met' if total <= BUDGET_SECONDS else 'NOT met'})")
    if a.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if check.failures:
        print("paper check FAILED:", *check.failures, sep="\n  ")
        return 1
    print("paper check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
