"""COCO AP through pycocotools, and the VOC2007 11-point mAP@0.5."""

from __future__ import annotations

import contextlib
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


def coco_eval(coco_gt, results: list[dict], verbose: bool = False):
    """Run COCOeval on ``results`` (COCO results format); return the evaluated ``COCOeval``."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return None
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_metrics(coco_gt, results: list[dict], verbose: bool = False) -> dict[str, float]:
    """AP, AP50, AP75, APs/m/l as fractions (pycocotools reports -1 for an empty size bucket)."""
    ev = coco_eval(coco_gt, results, verbose)
    if ev is None:  # no detection at all: every AP is 0 (pycocotools cannot load empty results)
        return dict.fromkeys(COCO_METRICS, 0.0)
    return {k: float(v) for k, v in zip(COCO_METRICS, ev.stats[:6])}


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP: mean over r in {0, .1, ..., 1} of max precision at recall >= r."""
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def voc07_map(dataset: DetectionDataset, preds: list[dict], iou_threshold: float = 0.5) -> dict:
    """VOC2007 mAP@0.5 with ``ignore`` (difficult) boxes neither rewarded nor penalised.

    IoU uses continuous coordinates (torchvision.ops.box_iou), not VOC's devkit "+1 pixel" areas;
    on large objects the two agree closely, on tiny ones ours is the stricter.
    Returns ``{"mAP50": ..., "per_class": {name: AP}}``; classes without ground truth are left out.
    """
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
    """COCO AP metrics and VOC07 mAP50 of ``model`` on ``dataset``; optionally save detections json."""
    preds = predict(model, dataset, batch_size, device, progress)
    results = to_coco_results(preds, dataset)
    if results_json is not None:
        Path(results_json).write_text(json.dumps(results))
    metrics = coco_metrics(dataset.coco_gt(), results)
    metrics["VOC07_mAP50"] = voc07_map(dataset, preds)["mAP50"]
    return metrics
