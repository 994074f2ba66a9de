"""Trained runs opened up for the analysis notebooks: load a run's detector, compare teacher and
student FPN features patch by patch (the paper's Figs. 3-4), and compute the masks a teacher
produces at every FPN stage (Fig. 5)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import DetectionDataset, eval_transforms
from .detectors import TWO_STAGE_KINDS, build_detector
from .distill import Distiller
from .engine import CHECKPOINT
from .experiments import Experiment, run
from .files import read_checkpoint
from .masks import global_spatial_mask, local_spatial_mask, patch_sums
from .data.splits import DATA_DIR, dataset_root, load_split
from .runs import RUNS_DIR


@dataclass
class TrainedRun:
    experiment: Experiment
    result: dict  # the run's eval.json
    model: nn.Module  # the trained detector, eval mode
    adapters: nn.ModuleList | None  # distilled students: the student -> teacher adapters, per FPN level
    root: Path  # the dataset it was trained on

    def dataset(self, role: str = "test") -> DetectionDataset:
        """The run's ``role`` split (``train`` / ``val`` / ``test``) as the detector is evaluated on it."""
        return load_split(self.experiment.resolved_profile(), self.root, role, eval_transforms())


def load_run(exp: Experiment, runs_dir: Path = RUNS_DIR, data_dir: Path = DATA_DIR, data_root=None) -> TrainedRun:
    """``exp``'s trained detector from the run cache (trained first if missing). A distilled run's
    checkpoint holds the whole Distiller, so its adapters come back with the student."""
    result = run(exp, runs_dir, data_dir, data_root)
    profile = exp.resolved_profile()
    root = dataset_root(profile, data_root, data_dir)
    num_classes = load_split(profile, root, "train").num_classes
    state = read_checkpoint(Path(runs_dir) / result["run_dir"] / CHECKPOINT)["model"]
    if exp.method in ("teacher", "none"):
        backbone = exp.teacher_backbone if exp.method == "teacher" else exp.student_backbone
        model = build_detector(exp.kind, backbone, num_classes, **profile.detector)
        model.load_state_dict(state)
        return TrainedRun(exp, result, model.eval(), None, root)
    teacher = build_detector(exp.kind, exp.teacher_backbone, num_classes, **profile.detector)
    student = build_detector(exp.kind, exp.student_backbone, num_classes, **profile.detector)
    distiller = Distiller(teacher, student, exp.distill_config())
    distiller.load_state_dict(state)
    distiller.remove_hooks()
    return TrainedRun(exp, result, student.eval(), distiller.adapters, root)


@torch.no_grad()
def fpn_features(model: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    """The FPN maps (1 x C x H x W per level, finest first) the detector computes for one image."""
    batch, _ = model.transform([image])
    return list(model.backbone(batch.tensors).values())


def patch_l1(teacher: torch.Tensor, student: torch.Tensor, patch_size: int) -> torch.Tensor:
    """B x nh x nw: mean |T - S| over channels and each patch's cells (edge patches: their real cells)."""
    diff = (teacher - student).abs().mean(dim=1, keepdim=True)
    cells = patch_sums(torch.ones_like(diff), patch_size)
    return (patch_sums(diff, patch_size) / cells)[:, 0]


@torch.no_grad()
def feature_distances(teacher: TrainedRun, students: dict[str, TrainedRun], images: list[torch.Tensor],
                      patch_size: int = 7) -> tuple[dict, pd.DataFrame]:
    """Patch-wise L1 maps between the teacher's FPN features and each student's, and the mean L1
    per image and FPN stage.

    A distilled student is compared through its adapters (what its imitation loss brought close to
    the teacher); a student trained alone has none and is compared as it is, which needs equal FPN
    widths. Returns ``({(student, image, level): nh x nw map}, frame of image, level, student, L1)``.
    """
    maps, rows = {}, []
    for i, image in enumerate(images):
        t_feats = fpn_features(teacher.model, image)
        for name, s in students.items():
            s_feats = fpn_features(s.model, image)
            for level, (t, f) in enumerate(zip(t_feats, s_feats)):
                if s.adapters is not None:
                    f = s.adapters[level](f)
                if f.shape != t.shape:
                    raise ValueError(f"student {name!r} level {level}: {tuple(f.shape)} vs teacher {tuple(t.shape)}; "
                                     "a student trained alone must have the teacher's FPN width to be compared")
                maps[name, i, level] = patch_l1(t, f, patch_size)[0]
                rows.append({"image": i, "level": level, "student": name, "L1": float((t - f).abs().mean())})
    return maps, pd.DataFrame(rows)


@torch.no_grad()
def stage_masks(teacher: nn.Module, image: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> list[dict]:
    """Per FPN stage, the teacher's global and local (GLAM) spatial masks for one image, each
    H x W at that stage's resolution (numpy), plus the stage's stride in input pixels."""
    batch, _ = teacher.transform([image])
    out = []
    for feat in fpn_features(teacher, image):
        out.append({"global": global_spatial_mask(feat, temperature)[0, 0].numpy(),
                    "local": local_spatial_mask(feat, patch_size, temperature)[0, 0].numpy(),
                    "stride": batch.tensors.shape[-1] / feat.shape[-1]})
    return out


def mask_coverage(mask, boxes: torch.Tensor, stride: float) -> dict[str, float]:
    """Where a spatial mask (H x W, any non-negative weights) puts its weight relative to the
    ground-truth ``boxes`` (N x 4, XYXY image pixels) on a stride-``stride`` map. Cells belong to a box
    as in DeFeat's box mask (:func:`~glamd_core.methods.defeat.box_foreground_mask`: centre inside, or
    the box's own centre cell). Returns ``inside`` (the share of the mask's weight on box cells),
    ``area`` (the box cells' share of the map: what a uniform mask puts there) and ``boxes_holding``
    (the share of boxes whose own cells hold at least their area's share of the weight; NaN with no
    box)."""
    from .methods.defeat import box_foreground_mask

    weight = torch.as_tensor(mask, dtype=torch.float64)
    if weight.ndim != 2 or (weight < 0).any() or not torch.isfinite(weight).all() or weight.sum() <= 0:
        raise ValueError("mask must be an H x W map of finite, non-negative weights with a positive sum")
    weight = weight / weight.sum()
    h, w = weight.shape
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    union = box_foreground_mask([boxes], h, w, stride)[0, 0]
    holding = []
    for b in boxes:
        cells = box_foreground_mask([b[None]], h, w, stride)[0, 0]
        holding.append(float(weight[cells].sum()) >= float(cells.double().mean()) - 1e-12)
    return {"inside": float(weight[union].sum()), "area": float(union.double().mean()),
            "boxes_holding": float(np.mean(holding)) if holding else float("nan")}


@torch.no_grad()
def teacher_mask_coverage(teacher: TrainedRun, indices, patch_sizes=(7, 2), temperature: float = 0.5) -> pd.DataFrame:
    """Where each mask puts its weight on ``teacher``'s test images ``indices``, per FPN level
    (:func:`mask_coverage` per image): the teacher's global mask, GLAM (the mean of its global and
    local masks, as GLAMD weights its terms) at each of ``patch_sizes``, DeFeat's box mask (every box
    cell, equal weights) and the uniform mask (no preference: its share is the boxes' area). Masks
    are the teacher's alone: where its attention lies, before a student's is averaged in. One row per
    (image, level, mask): ``inside``, ``area``, ``boxes_holding``, ``lift`` (inside / area) and ``peak``
    (the heaviest cell's share of the weight). Images without a box are left out for every mask alike
    (where the boxes hold nothing, no mask has a share on them); how many is in ``.attrs["without_boxes"]``."""
    from .methods.defeat import box_foreground_mask

    dataset, model, rows, without = teacher.dataset("test"), teacher.model, [], 0
    for i in indices:
        image, target = dataset[i]
        batch, targets = model.transform([image], [{k: v for k, v in target.items() if k in ("boxes", "labels")}])
        boxes = targets[0]["boxes"]
        if len(boxes) == 0:
            without += 1
            continue
        for level, feat in enumerate(model.backbone(batch.tensors).values()):
            stride = batch.tensors.shape[-1] / feat.shape[-1]
            glob = global_spatial_mask(feat, temperature)[0, 0]
            masks = {"global": glob}
            for p in patch_sizes:
                masks[f"GLAM, patch {p}"] = 0.5 * (glob + local_spatial_mask(feat, p, temperature)[0, 0])
            masks["DeFeat boxes"] = box_foreground_mask([boxes], *feat.shape[-2:], stride)[0, 0].double()
            masks["uniform"] = torch.ones_like(glob)
            for name, m in masks.items():
                cov = mask_coverage(m, boxes, stride)
                rows.append({"image": int(i), "level": level, "mask": name, **cov,
                             "lift": cov["inside"] / cov["area"] if cov["area"] else float("nan"),
                             "peak": float(m.max() / m.sum())})
    if not rows:
        raise ValueError(f"none of the {without} test image(s) {list(indices)[:10]} holds a box: no mask has a share "
                         "on boxes to measure; draw more images (n_images)")
    out = pd.DataFrame(rows)
    out.attrs["without_boxes"] = without
    return out


def coverage_summary(coverage: pd.DataFrame) -> pd.DataFrame:
    """:func:`teacher_mask_coverage` averaged over images per (level, mask), in the masks' order."""
    order = list(dict.fromkeys(coverage["mask"]))
    out = (coverage.groupby(["level", "mask"], sort=False)[["inside", "area", "lift", "boxes_holding", "peak"]]
           .mean().reset_index())
    out["mask"] = pd.Categorical(out["mask"], order, ordered=True)
    return out.sort_values(["level", "mask"]).reset_index(drop=True)


def teachers_mask_coverage(teachers: list[Experiment], n_images: int, sample_seed: int = 0, patch_sizes=(7, 2),
                           data_root=None) -> pd.DataFrame:
    """09's first reading: :func:`coverage_summary` of each teacher's masks on ``n_images`` test images
    (at most the split's; drawn with ``sample_seed``), at the temperature its kind distils with. One
    row per (kind, level ``P3``..., mask), with the images drawn and how many of them had no box."""
    from .profiles import get_profile

    out = []
    for exp in teachers:
        teacher = load_run(exp, data_root=data_root)
        test = teacher.dataset("test")
        distill = get_profile(exp.profile).distill_for(exp.kind, "glamd")
        temperature = distill.resolved(two_stage=exp.kind in TWO_STAGE_KINDS).temperature
        indices = sample_indices(len(test), min(n_images, len(test)), sample_seed)
        per_image = teacher_mask_coverage(teacher, indices, patch_sizes=patch_sizes, temperature=temperature)
        out.append(coverage_summary(per_image).assign(kind=exp.kind, temperature=temperature, images=len(indices),
                                                      without_boxes=per_image.attrs["without_boxes"]))
    out = pd.concat(out, ignore_index=True)
    out["level"] = out["level"].map(lambda i: f"P{i + 3}")
    return out


def mask_samples(teacher: TrainedRun, n_images: int, sample_seed: int, patch_size: int, temperature: float,
                 photo: bool = True) -> tuple[list[int], list[tuple[str, torch.Tensor]], list]:
    """08's images and the teacher's masks on them: ``n_images`` test images (at most the split's, drawn
    with ``sample_seed``) and, with ``photo``, matplotlib's sample photograph (an image unlike the
    synthetic ones); returns the test indices, ``(name, image)`` pairs and :func:`stage_masks` of each."""
    test = teacher.dataset("test")
    indices = sample_indices(len(test), min(n_images, len(test)), sample_seed)
    samples = [(f"test image {i}", test[i][0].as_subclass(torch.Tensor)) for i in indices]
    if photo:
        import matplotlib.cbook
        from PIL import Image
        from torchvision.transforms.v2 import functional as TF

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        samples.append(("grace_hopper.jpg", TF.to_dtype(TF.pil_to_tensor(Image.open(path).convert("RGB")), torch.float32,
                                                        scale=True)))
    return indices, samples, [stage_masks(teacher.model, image, patch_size, temperature) for _, image in samples]


def sample_indices(n_total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` distinct indices out of ``n_total``, drawn with ``seed``."""
    if not 0 < n <= n_total:
        raise ValueError(f"cannot draw {n} samples out of {n_total}")
    return sorted(np.random.default_rng(seed).choice(n_total, size=n, replace=False).tolist())


def error_bands_of_runs(experiments: list[Experiment], results: list[dict], runs_dir: Path = RUNS_DIR,
                        data_dir: Path = DATA_DIR, data_root=None, split: str = "test") -> tuple[pd.DataFrame, dict]:
    """:func:`~glamd_core.evaluation.error_analysis` of every run's saved ``split`` detections.
    Returns a long frame (kind, method, seed, band, AP in percent) and ``{run_dir: band frame}``."""
    import json

    from .evaluation import error_analysis

    rows, frames, truths = [], {}, {}
    for exp, r in zip(experiments, results):
        profile = exp.resolved_profile()
        root = dataset_root(profile, data_root, data_dir)
        if root not in truths:
            truths[root] = load_split(profile, root, split).coco_gt()
        path = Path(runs_dir) / r["run_dir"] / f"detections_{split}.json"
        frame = error_analysis(truths[root], json.loads(path.read_text()))
        frames[r["run_dir"]] = frame
        rows += [{"kind": exp.kind, "method": exp.method, "seed": exp.seed, "band": band, "AP": 100 * ap}
                 for band, ap in frame.AP.items()]
    return pd.DataFrame(rows), frames


def error_losses(bands: pd.DataFrame, order=None) -> pd.DataFrame:
    """The AP lost to each error type, from cocoapi's cumulative bands: band k's PR area already
    forgives every error type of the bands before it, so the AP one type costs is the difference of
    adjacent bands (``Loc - C50``: poor localisation; ``C50 - C75``: loose localisation; ...). A gain
    at C50 carries into every later band, so only these differences say which errors a model makes
    fewer of. ``bands``: long rows (any id columns, ``band``, ``AP``); returns the same id columns
    with ``error`` (``"<band> - <previous band>"``) and ``AP lost``."""
    from .evaluation import BANDS

    order = list(order or BANDS)
    unknown = set(bands.band) - set(order)
    if unknown:
        raise ValueError(f"unknown bands {sorted(unknown)}; cocoapi's are {order}")
    ids = [c for c in bands.columns if c not in ("band", "AP")]
    twice = bands.duplicated([*ids, "band"])
    if twice.any():  # a duplicated run would otherwise be hidden by the pivot
        raise ValueError(f"error_losses: a band given twice for {bands.loc[twice, [*ids, 'band']].values.tolist()[:3]}")
    wide = bands.pivot_table(index=ids, columns="band", values="AP", aggfunc="first")
    missing = [b for b in order if b not in wide.columns]
    if missing:
        raise ValueError(f"bands {missing} are missing; the losses need every band of {order}")
    lost = pd.DataFrame({f"{b} - {a}": wide[b] - wide[a] for a, b in zip(order, order[1:])}, index=wide.index)
    return lost.stack().rename("AP lost").rename_axis([*ids, "error"]).reset_index()


def error_scales(bands: pd.DataFrame, order=None) -> pd.DataFrame:
    """Each error type on both scales (Fig. 2's claims read both): ``AP lost`` (:func:`error_losses`) and
    ``share kept``, the stricter band's AP over the looser one's (C75 / C50 for ``C50 - C75``), the part
    of its AP a model keeps across that type whatever its level (NaN where the looser band is 0)."""
    from .evaluation import BANDS

    order = list(order or BANDS)
    lost = error_losses(bands, order)
    ids = [c for c in bands.columns if c not in ("band", "AP")]
    wide = bands.pivot_table(index=ids, columns="band", values="AP", aggfunc="first")
    kept = pd.DataFrame({f"{b} - {a}": wide[a] / wide[b].where(wide[b] > 0) for a, b in zip(order, order[1:])},
                        index=wide.index)
    kept = kept.stack(future_stack=True).rename("share kept").rename_axis([*ids, "error"]).reset_index()
    return lost.merge(kept, on=[*ids, "error"], how="left")


def mean_bands(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Band frames averaged over runs (seeds): AP and PR curves."""
    out = frames[0].copy()
    out["AP"] = np.mean([f.AP.values for f in frames], axis=0)
    out["precision"] = list(np.mean([np.stack(f.precision.values) for f in frames], axis=0))
    out.attrs["recall"] = frames[0].attrs["recall"]
    return out


def fpn_map_sides(profile: str, kind: str = "retinanet") -> dict[str, tuple[int, int]]:
    """{level: (H, W)} of the FPN maps a ``profile``-sized square image gives ``kind``'s student
    (P3..P7 for RetinaNet): what a patch size means at this image size. Measured on an untrained
    detector, so it follows the detector's transform and padding rather than a formula."""
    exp = Experiment(kind, "none", profile)
    p = exp.resolved_profile()
    model = build_detector(kind, exp.student_backbone, 2, **p.detector).eval()
    side = int(p.detector.get("image_size", 800))
    maps = fpn_features(model, torch.zeros(3, side, side))
    first = round(math.log2(side / maps[0].shape[-2]))  # P<k> has stride 2^k; the rest follow one by one
    return {f"P{first + i}": tuple(m.shape[-2:]) for i, m in enumerate(maps)}


@dataclass
class DistanceScreen:
    """07's one-seed screen: the runs loaded, the test images drawn, the maps and the distances."""

    teacher: TrainedRun
    students: dict
    indices: list[int]
    images: list
    patch_size: int
    maps: dict
    distances: pd.DataFrame


STUDENT_NAMES = {"none": "student alone", "global": "global mask", "glamd": "GLAMD"}


def distance_screen(experiments: list[Experiment], n_images: int, sample_seed: int = 0, patch_size: int | None = None,
                    data_root=None) -> DistanceScreen:
    """:func:`feature_distances` of :func:`plans.feature_distance_experiments`' runs (the teacher, then its
    students by method, named by :data:`STUDENT_NAMES`) on ``n_images`` test images drawn with
    ``sample_seed``, at ``patch_size`` (None: the GLAMD student's patch)."""
    teacher, *students = [load_run(e, data_root=data_root) for e in experiments]
    students = {STUDENT_NAMES[s.experiment.method]: s for s in students}
    patch_size = patch_size or students["GLAMD"].experiment.distill_config().patch_size
    test = teacher.dataset("test")
    indices = sample_indices(len(test), min(n_images, len(test)), sample_seed)
    images = [test[i][0] for i in indices]
    maps, distances = feature_distances(teacher, students, images, patch_size)
    return DistanceScreen(teacher, students, indices, images, patch_size, maps, distances)


def distances_by_seed(teacher: TrainedRun, pairs: dict, images: list[torch.Tensor], patch_size: int,
                      map_sides: dict) -> pd.DataFrame:
    """Figs. 3-4's claims read over training seeds: per seed, each student's mean L1 to ``teacher`` over
    the same ``images``, per FPN level (named P3...). ``pairs``: {seed: {student name: TrainedRun}}. A
    level whose map fits in one ``patch_size`` patch is marked ``untestable`` (GLAM is the global mask
    there by construction), which :func:`glamd_core.claims.judge` reads."""
    names = list(map_sides)
    frames = [feature_distances(teacher, students, images, patch_size)[1].assign(seed=seed)
              for seed, students in pairs.items()]
    out = pd.concat(frames, ignore_index=True).groupby(["level", "student", "seed"]).L1.mean().reset_index()
    out["level"] = [names[int(i)] for i in out.level]
    out["untestable"] = ["" if max(map_sides[lvl]) > patch_size else
                         f"{lvl} fits in one {patch_size}-cell patch, where GLAM is the global mask" for lvl in out.level]
    return out


def screen_differences(distances: pd.DataFrame, map_sides: dict, row: str = "GLAMD",
                       baseline: str = "global mask") -> pd.DataFrame:
    """The one-seed screen of Figs. 3-4 (:func:`feature_distances`' frame): per level, ``row`` -
    ``baseline`` in mean L1 over the images, and on how many images ``row`` is nearer the teacher."""
    names = list(map_sides)
    pivot = distances[distances.student.isin([row, baseline])].pivot_table(index=["level", "image"], columns="student",
                                                                           values="L1")
    diff = (pivot[row] - pivot[baseline]).groupby(level="level")
    return pd.DataFrame({"level": [names[int(i)] for i in diff.mean().index], "mean": diff.mean().values,
                         "lower": diff.apply(lambda d: int((d < 0).sum())).values, "images": diff.size().values})


def cells_holding(mask, share: float = 0.5) -> float:
    """The fraction of a mask's cells that hold ``share`` of its weight (smaller: more concentrated)."""
    v = np.sort(np.asarray(mask, dtype=float).ravel())[::-1]
    return float((np.cumsum(v) < share * v.sum()).mean())


def mask_spread(samples, masks) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 5 in numbers: per image (``samples``: ``(name, image)``) and FPN level, the fraction of cells
    holding half of the global and of the local mask's weight (``masks``: :func:`stage_masks` per image);
    and its summary per level, mean over images, with the first image's map size."""
    rows = [{"image": name, "level": level, "mask": part, "cells holding half the weight": cells_holding(m[part])}
            for (name, _), per_stage in zip(samples, masks) for level, m in enumerate(per_stage)
            for part in ("global", "local")]
    spread = pd.DataFrame(rows)
    summary = spread.pivot_table(index="level", columns="mask", values="cells holding half the weight").round(3)
    summary["map (test images)"] = [f"{m['global'].shape[0]}x{m['global'].shape[1]}" for m in masks[0]]
    return spread, summary
