"""Evaluation fed broken detections: a clear error or pycocotools' own numbers, never a quiet wrong score."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.io import write_png

from glamd_core.data.base import DetectionDataset, ImageRecord
from glamd_core.evaluation import COCO_METRICS, coco_eval, coco_metrics, evaluate, to_coco_results, voc07_map


def _dataset(boxes_per_image, labels_per_image, size=100, paths=None, source="hand-made gt"):
    records = [ImageRecord(path=None if paths is None else paths[i], image_id=i, width=size, height=size,
                           boxes=np.asarray(b, dtype=np.float32).reshape(-1, 4), labels=np.asarray(lab, dtype=np.int64))
               for i, (b, lab) in enumerate(zip(boxes_per_image, labels_per_image))]
    return DetectionDataset(records, ["a", "b"], None, None, False, source)


def _pred(image_id, boxes, scores, labels):
    return {"image_id": image_id, "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=np.float32), "labels": np.asarray(labels)}


def _two_images():
    return _dataset([[[10, 10, 30, 30]], [[50, 50, 80, 90]]], [[1], [1]])


@pytest.mark.parametrize("box, score", [([10, 10, math.nan, 30], 0.9), ([10, 10, math.inf, 30], 0.9),
                                        ([10, 10, 30, 30], math.nan)])
def test_non_finite_detection_is_an_error_not_a_hit(box, score):
    """A NaN box used to match everything and a NaN score to vanish: a broken model must not get a number."""
    ds = _two_images()
    preds = [_pred(0, [[10, 10, 30, 30]], [0.8], [1]), _pred(1, [box, box], [score, score], [1, 1])]
    with pytest.raises(ValueError, match=r"2 detection\(s\).*non-finite.*image 1"):
        coco_metrics(ds.coco_gt(), to_coco_results(preds, ds))
    with pytest.raises(ValueError, match=r"2 detection\(s\).*non-finite.*image 1"):
        voc07_map(ds, preds)


class _NaNModel(nn.Module):
    def forward(self, images):
        return [{"boxes": torch.full((1, 4), math.nan), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}
                for _ in images]


def test_evaluate_rejects_a_model_that_outputs_nan(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(paths[-1]))
    ds = _dataset([[[1, 1, 5, 5]], [[2, 2, 6, 6]]], [[1], [2]], size=8, paths=paths)
    with pytest.raises(ValueError, match=r"2 detection\(s\).*non-finite.*image 0"):
        evaluate(_NaNModel(), ds, batch_size=2, progress=False)


def test_zero_detections_follow_pycocotools_empty_bucket_convention():
    """Only large boxes: APs/APm are -1 (no ground truth there), AP/APl 0.0, with or without detections."""
    ds = _dataset([[[0, 0, 150, 150]], [[20, 20, 190, 180]]], [[1], [2]], size=200)
    gt = ds.coco_gt()
    empty = coco_metrics(gt, [])
    assert empty == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": -1.0, "APm": -1.0, "APl": 0.0}
    # One detection that hits nothing scores the same as none: the empty result set is really evaluated.
    miss = coco_metrics(gt, [{"image_id": 0, "category_id": 2, "bbox": [0, 0, 150, 150], "score": 0.9}])
    assert miss == empty
    ev = coco_eval(gt, [])
    assert ev is not None and list(ev.stats[:6]) == [empty[k] for k in COCO_METRICS]


def test_unknown_image_id_names_it_and_the_ground_truth():
    ds = _two_images()
    results = [{"image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9} for i in (0, 7, 9, 9)]
    with pytest.raises(ValueError, match=r"unknown image id\(s\).*7.*ground truth \(2 images"):
        coco_metrics(ds.coco_gt(), results)  # no name given: described by its size
    with pytest.raises(ValueError, match=r"2 unknown image id\(s\).*7, 9.*hand-made gt.*2 images"):
        coco_metrics(ds.coco_gt(), results, source="hand-made gt")
    with pytest.raises(ValueError, match=r"1 unknown image id\(s\).*\b5\b.*hand-made gt"):
        voc07_map(ds, [_pred(0, [[10, 10, 30, 30]], [0.9], [1]), _pred(5, [[10, 10, 30, 30]], [0.9], [1])])


def test_unknown_category_id_is_named():
    """pycocotools silently drops detections of a category the ground truth lacks."""
    ds = _two_images()
    results = [{"image_id": 0, "category_id": 42, "bbox": [10, 10, 20, 20], "score": 0.9}]
    with pytest.raises(ValueError, match=r"unknown category id\(s\).*42"):
        coco_metrics(ds.coco_gt(), results)
    with pytest.raises(ValueError, match=r"unknown label\(s\).*\b3\b"):
        voc07_map(ds, [_pred(0, [[10, 10, 30, 30]], [0.9], [3])])


@pytest.mark.parametrize("bbox", [[30, 10, -20, 20], [30, 30, -20, -20]])
def test_negative_box_size_is_rejected(bbox):
    """pycocotools would take it (IoU 0; area w*h, so a half-negative box leaves every size range unseen)."""
    ds = _two_images()
    with pytest.raises(ValueError, match=r"1 detection\(s\).*negative width or height.*image 0"):
        coco_metrics(ds.coco_gt(), [{"image_id": 0, "category_id": 1, "bbox": bbox, "score": 0.9}])
    x, y, w, h = bbox
    with pytest.raises(ValueError, match=r"1 detection\(s\).*negative width or height.*image 0"):
        voc07_map(ds, [_pred(0, [[x, y, x + w, y + h]], [0.9], [1])])
