"""COCO AP through pycocotools, and the VOC2007 11-point mAP@0.5."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from .data.base import DetectionDataset, collate
from .engine import to_device

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@torch.no_grad()
def predict(model, dataset: DetectionDataset, batch_size: int = 8, device: str = "cpu",
            progress: bool = True) -> list[dict]:
    """Per image: ``{"image_id", "boxes" (N x 4 XYXY), "scores", "labels"}`` as numpy arrays."""
    model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    preds = []
    for images, targets in tqdm(loader, desc="predict", disable=not progress, leave=False):
        images, _ = to_device(images, targets, device)
        for out, tgt in zip(model(images), targets):
            preds.append({"image_id": tgt["image_id"], **{k: out[k].cpu().numpy() for k in ("boxes", "scores", "labels")}})
    return preds


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
    """COCO AP metrics and VOC07 mAP50 of ``model`` on ``dataset``; optionally save detections json.

    The json is written before the detections are checked, so a broken model's output can be looked at.
    """
    preds = predict(model, dataset, batch_size, device, progress)
    results = to_coco_results(preds, dataset)
    if results_json is not None:
        Path(results_json).write_text(json.dumps(results))
    metrics = coco_metrics(dataset.coco_gt(), results, source=dataset.source)
    metrics["VOC07_mAP50"] = voc07_map(dataset, preds)["mAP50"]
    return metrics
