"""COCO AP through pycocotools, the VOC2007 11-point mAP@0.5, and the cocoapi error analysis (C75 ... FN)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from .data.base import DetectionDataset, collate, to_device

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@torch.no_grad()
def predict(model, dataset: DetectionDataset, batch_size: int = 8, device: str = "cpu",
            progress: bool = True) -> list[dict]:
    """Per image: ``{"image_id", "boxes" (N x 4 XYXY), "scores", "labels"}`` as numpy arrays, in
    dataset order. Under ``torch.distributed`` (torchrun) each rank predicts every world-th image and
    every rank gets all of them back (gathered), so predicting costs 1 / world of a single process."""
    rank, world = _rank_and_world()
    model.eval().to(device)
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, collate_fn=collate)
    preds = []
    for images, targets in tqdm(loader, desc="predict", disable=not progress or rank != 0, leave=False):
        images, _ = to_device(images, targets, device)
        for out, tgt in zip(model(images), targets):
            # Label 0 is the background. torchvision's RetinaNet keeps a sigmoid logit for it (never a
            # positive in training), so a barely trained one can still score it: not a detection.
            real = out["labels"] > 0
            preds.append({"image_id": tgt["image_id"],
                          **{k: out[k][real].cpu().numpy() for k in ("boxes", "scores", "labels")}})
    if world == 1:
        return preds
    shards = [None] * world
    torch.distributed.all_gather_object(shards, list(zip(indices, preds)))
    return [p for _, p in sorted((pair for shard in shards for pair in shard), key=lambda pair: pair[0])]


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def to_coco_results(preds: list[dict], dataset: DetectionDataset) -> list[dict]:
    return [{"image_id": int(p["image_id"]), "category_id": dataset.label_to_category_id(int(lab)),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)}
            for p in preds for b, s, lab in zip(p["boxes"], p["scores"], p["labels"])]


def check_detections(image_ids, boxes_xywh, scores, category_ids, known_images, known_categories,
                     gt_name: str, category_word: str = "category id") -> None:
    """Raise ``ValueError`` on detections no metric should be computed from; the one check both metrics share.

    Non-finite boxes or scores come from a broken model (a NaN box used to count as a hit, a NaN score
    vanished); ids the ground truth lacks made pycocotools fail with a bare assertion (images) or drop
    the detections silently (categories). A negative width or height is rejected too: our boxes are
    XYXY from detectors that never invert them, so it means a format mix-up, and pycocotools would
    score it inconsistently (IoU 0, area w*h: counted as a false positive when both sides are
    negative, outside every size range and so unseen when one is). Zero-size boxes are legal.
    """
    image_ids = np.asarray(image_ids).reshape(-1)
    boxes = np.asarray(boxes_xywh, dtype=float).reshape(-1, 4)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    bad = ~(np.isfinite(boxes).all(1) & np.isfinite(scores))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} detection(s) with a non-finite box or score (first in image "
                         f"{image_ids[bad][0]}): a broken model must not be scored")
    unknown = sorted(set(image_ids.tolist()) - set(known_images))
    if unknown:
        raise ValueError(f"{len(unknown)} unknown image id(s) in the detections, first {unknown[:5]}: "
                         f"not in {gt_name}")
    unknown = sorted(set(np.asarray(category_ids).reshape(-1).tolist()) - set(known_categories))
    if unknown:
        raise ValueError(f"unknown {category_word}(s) {unknown[:5]} in the detections: not in {gt_name}")
    bad = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} detection(s) with a negative width or height (first in image "
                         f"{image_ids[bad][0]}): boxes mixed up between XYXY and XYWH?")


def _gt_name(image_ids, source: str | None) -> str:
    ids = sorted(image_ids)
    size = f"{len(ids)} images, ids {ids[0]}..{ids[-1]}" if ids else "no images"
    return f"the ground truth of {source} ({size})" if source else f"the ground truth ({size})"


def check_coco_results(coco_gt, results: list[dict], source: str | None = None) -> None:
    """``check_detections`` on COCO-format results against ``coco_gt`` (``source`` names it in errors)."""
    image_ids = coco_gt.getImgIds()
    check_detections([r["image_id"] for r in results], [r["bbox"] for r in results], [r["score"] for r in results],
                     [r["category_id"] for r in results], image_ids, coco_gt.getCatIds(), _gt_name(image_ids, source))


def _empty_results(coco_gt):
    """What ``loadRes`` would build from no detections (it cannot: it reads the first result's keys)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                  "categories": copy.deepcopy(coco_gt.dataset["categories"])}
    dt.createIndex()
    return dt


def coco_eval(coco_gt, results: list[dict], verbose: bool = False, source: str | None = None):
    """Run COCOeval on ``results`` (COCO results format, checked first); return the evaluated ``COCOeval``.

    No detections is a real (empty) evaluation, so a size bucket reads -1 exactly when it has no
    ground truth, as it does with detections.
    """
    from pycocotools.cocoeval import COCOeval

    check_coco_results(coco_gt, results, source)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_metrics(coco_gt, results: list[dict], verbose: bool = False, source: str | None = None) -> dict[str, float]:
    """AP, AP50, AP75, APs/m/l as fractions (pycocotools reports -1 for an empty size bucket)."""
    ev = coco_eval(coco_gt, results, verbose, source)
    return {k: float(v) for k, v in zip(COCO_METRICS, ev.stats[:6])}


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP: mean over r in {0, .1, ..., 1} of max precision at recall >= r."""
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def _xyxy_to_xywh(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def voc07_map(dataset: DetectionDataset, preds: list[dict], iou_threshold: float = 0.5) -> dict:
    """VOC2007 mAP@0.5 with ``ignore`` (difficult) boxes neither rewarded nor penalised.

    IoU uses continuous coordinates (torchvision.ops.box_iou), not VOC's devkit "+1 pixel" areas;
    on large objects the two agree closely, on tiny ones ours is the stricter.
    Returns ``{"mAP50": ..., "per_class": {name: AP}}``; classes without ground truth are left out.
    ``preds`` go through ``check_detections`` first, like COCO results do.
    """
    if preds:
        check_detections(np.concatenate([np.full(len(p["scores"]), p["image_id"]) for p in preds]),
                         np.concatenate([_xyxy_to_xywh(p["boxes"]) for p in preds]),
                         np.concatenate([np.asarray(p["scores"]).reshape(-1) for p in preds]),
                         np.concatenate([np.asarray(p["labels"]).reshape(-1) for p in preds]),
                         [r.image_id for r in dataset.records], range(1, len(dataset.classes) + 1),
                         _gt_name([r.image_id for r in dataset.records], dataset.source), "label")
    by_id = {p["image_id"]: p for p in preds}
    per_class = {}
    for c, name in enumerate(dataset.classes, start=1):
        scores, hits, npos = [], [], 0
        for rec in dataset.records:
            gt_mask = rec.labels == c
            gt_boxes, gt_ign = torch.from_numpy(rec.boxes[gt_mask]), rec.ignore[gt_mask]
            npos += int((~gt_ign).sum())
            p = by_id.get(rec.image_id)
            if p is None:
                continue
            m = p["labels"] == c
            order = np.argsort(-p["scores"][m], kind="stable")
            det_boxes, det_scores = p["boxes"][m][order], p["scores"][m][order]
            used = np.zeros(len(gt_boxes), dtype=bool)
            ious = box_iou(torch.as_tensor(det_boxes).reshape(-1, 4).float(), gt_boxes.reshape(-1, 4)).numpy()
            for d in range(len(det_boxes)):
                j = int(ious[d].argmax()) if ious.shape[1] else -1
                if j >= 0 and ious[d, j] >= iou_threshold:
                    if gt_ign[j]:
                        continue  # matched a difficult box: ignored
                    scores.append(det_scores[d])
                    hits.append(not used[j])
                    used[j] = True
                else:
                    scores.append(det_scores[d])
                    hits.append(False)
        if npos == 0:
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = np.asarray(hits, dtype=float)[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
        per_class[name] = voc07_ap(recall, precision)
    return {"mAP50": float(np.mean(list(per_class.values()))) if per_class else 0.0, "per_class": per_class}


def evaluate(model, dataset: DetectionDataset, batch_size: int = 8, device: str = "cpu",
             results_json: str | Path | None = None, progress: bool = True) -> dict[str, float]:
    """COCO AP metrics (pycocotools) and VOC07 11-point mAP50 of ``model`` on ``dataset``.

    Args:
        model: a detector (or a Distiller) in any mode; evaluated in eval mode.
        dataset: a :class:`~glamd_core.data.DetectionDataset` (its ground truth as COCO).
        batch_size, device, progress: how it is run.
        results_json: where to save the detections as COCO results (rank 0 writes it under torchrun),
            written before they are checked, so a broken model's output can be looked at.

    Returns:
        {"AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07_mAP50"}, each in [0, 1], of the whole
        dataset (every rank returns the same under torchrun).
    """
    preds = predict(model, dataset, batch_size, device, progress)
    results = to_coco_results(preds, dataset)
    if results_json is not None and _rank_and_world()[0] == 0:
        Path(results_json).write_text(json.dumps(results))
    metrics = coco_metrics(dataset.coco_gt(), results, source=dataset.source)
    metrics["VOC07_mAP50"] = voc07_map(dataset, preds)["mAP50"]
    return metrics


# --- Error analysis ------------------------------------------------------------------------------
# Hoiem-style breakdown of detection errors, as the cocoapi's ``CocoEval.analyze`` (MATLAB) does it.
#
# Bands, each a PR curve at area "all" and 100 detections per image, averaged over categories:
#
# * ``C75`` / ``C50`` -- ordinary PR at IoU 0.75 / 0.5; ``Loc`` -- at IoU 0.1 (localisation errors forgiven);
# * ``Sim`` -- at IoU 0.1, category-agnostic, detections of class k only, the objects of k's
#   supercategory siblings present but *ignored* (a detection on them is neither TP nor FP);
# * ``Oth`` -- the same with every other class's objects ignored;
# * ``BG`` -- precision 1 wherever ``Oth`` reached the recall (all remaining false positives removed);
# * ``FN`` -- 1 everywhere (the area left is the missed objects).
#
# pycocotools' Python ``COCOeval`` overwrites each object's ``ignore`` with its ``iscrowd``; the
# MATLAB original honours both (``gtIg = iscrowd | ignore | outside area``). :class:`_IgnoringCOCOeval`
# does the same, without touching ``iscrowd`` (which would change the matching: a crowd region may
# absorb many detections). One departure: a category without ground truth (precision -1 in
# pycocotools) is left out of the mean over categories, as pycocotools' AP does, where the MATLAB
# code counts it as precision 0; the two agree on any dataset where every category has an object.



BANDS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
IGNORE_KEY = "analysis_ignore"  # the caller's ignore flag, kept where pycocotools does not overwrite it


def _ignoring_cocoeval():
    from pycocotools.cocoeval import COCOeval

    class _IgnoringCOCOeval(COCOeval):
        def _prepare(self):  # pycocotools writes iscrowd into "ignore"; the flag survives in IGNORE_KEY
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:
                    g["ignore"] = int(bool(g["ignore"]) or bool(g[IGNORE_KEY]))

    return _IgnoringCOCOeval


def _coco(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _load(gt, detections):
    from pycocotools.coco import COCO

    if isinstance(gt, (str, Path)):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt))
    gt = _coco(copy.deepcopy(gt if isinstance(gt, dict) else gt.dataset))  # never modify the caller's
    for a in gt.dataset["annotations"]:
        a[IGNORE_KEY] = int(bool(a.get("ignore", 0)))
    if isinstance(detections, (str, Path)):
        detections = json.loads(Path(detections).read_text())
    check_coco_results(gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(detections)) if detections else _empty_results(gt)
    return gt, dt


def _precision(gt, dt, iou_thresholds, use_cats: bool, cat_ids) -> np.ndarray:
    """COCOeval's precision [T, R, K] at area all, maxDets 100 (``ignore`` flags honoured)."""
    ev = _ignoring_cocoeval()(gt, dt, "bbox")
    ev.params.iouThrs = np.asarray(iou_thresholds, dtype=float)
    ev.params.maxDets = [100]
    ev.params.useCats = int(use_cats)
    ev.params.catIds = list(cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, 0]


def _with_ignored(gt, keep_cat, ignored_cats) -> object:
    """The ground truth restricted to ``keep_cat`` and ``ignored_cats``, the latter flagged ignore."""
    data = copy.deepcopy(gt.dataset)
    data["annotations"] = [dict(a, **{IGNORE_KEY: 1 if a["category_id"] != keep_cat else a[IGNORE_KEY]})
                           for a in data["annotations"] if a["category_id"] == keep_cat or a["category_id"] in ignored_cats]
    return _coco(data)


def _only(dt, cat_id):
    data = copy.deepcopy(dt.dataset)
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == cat_id]
    return _coco(data)


def error_analysis(gt, detections) -> "pd.DataFrame":
    """AP of each band (``BANDS``, in [0, 1]) as column ``AP``, its PR curve (precision at
    ``frame.attrs["recall"]``, averaged over categories) as column ``precision``.

    ``gt``: a COCO-format dict, annotation-file path or ``pycocotools.coco.COCO``; ``detections``:
    COCO result dicts or a results-file path. Objects may carry ``ignore: 1``, honoured as in the
    MATLAB original. The bands are cumulative (each >= the one before), as in the paper's plots.
    """
    gt, dt = _load(gt, detections)
    cat_ids = gt.getCatIds()
    has_gt = np.array([len(gt.getAnnIds(catIds=[c])) > 0 for c in cat_ids])
    if not has_gt.any():
        raise ValueError("the ground truth has no objects: nothing to analyse")
    ps = np.zeros((len(BANDS), 101, len(cat_ids)))
    ps[:3] = _precision(gt, dt, [0.75, 0.5, 0.1], True, cat_ids)
    cats = {c["id"]: c for c in gt.loadCats(cat_ids)}
    for k, cat in enumerate(cat_ids):
        if not has_gt[k]:
            continue
        siblings = {c for c in cat_ids if cats[c].get("supercategory") == cats[cat].get("supercategory")} - {cat}
        others = set(cat_ids) - {cat}
        mine = _only(dt, cat)
        for band, ignored in ((3, siblings), (4, others)):
            ps[band, :, k] = _precision(_with_ignored(gt, cat, ignored), mine, [0.1], False, cat_ids)[0, :, 0]
    ps[ps == -1] = 0
    ps[5] = ps[4] > 0
    ps[6] = 1
    curves = ps[:, :, has_gt].mean(axis=2)
    import pandas as pd

    frame = pd.DataFrame({"AP": curves.mean(axis=1), "precision": list(curves)}, index=pd.Index(BANDS, name="band"))
    frame.attrs["recall"] = np.linspace(0, 1, 101)
    return frame
