import numpy as np
import pytest
import torch
from torch import nn

from glamd_core.data import VOCDetection, eval_transforms
from glamd_core.data.base import DetectionDataset, ImageRecord
from glamd_core.evaluation import coco_metrics, evaluate, to_coco_results, voc07_map


def _dataset(boxes_per_image, labels_per_image, ignore_per_image=None):
    records = []
    for i, (b, lab) in enumerate(zip(boxes_per_image, labels_per_image)):
        ign = None if ignore_per_image is None else np.asarray(ignore_per_image[i], dtype=bool)
        records.append(ImageRecord(path=None, image_id=i, width=100, height=100,
                                   boxes=np.asarray(b, dtype=np.float32).reshape(-1, 4),
                                   labels=np.asarray(lab, dtype=np.int64), ignore=ign))
    return DetectionDataset(records, ["a", "b"], None, None, False, "test")


def _pred(image_id, boxes, scores, labels):
    return {"image_id": image_id, "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=np.float32), "labels": np.asarray(labels)}


def test_perfect_detections_score_one():
    ds = _dataset([[[10, 10, 50, 60], [60, 5, 90, 20]], [[0, 0, 99, 99]]], [[1, 2], [1]])
    preds = [_pred(r.image_id, r.boxes, np.ones(len(r.labels)), r.labels) for r in ds.records]
    m = coco_metrics(ds.coco_gt(), to_coco_results(preds, ds))
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert voc07_map(ds, preds)["mAP50"] == pytest.approx(1.0)


def test_hand_checked_case():
    """Two ground-truth boxes; detections TP (0.9), FP (0.8), TP (0.7).

    recall    = [.5, .5, 1.], precision = [1, .5, .667]
    VOC07 11-point: r in {0..0.5} -> 1 (6 points), r in {0.6..1} -> 2/3 (5 points)  => (6 + 10/3) / 11
    COCO 101-point with the precision envelope [1, 2/3, 2/3]: 51 points at 1, 50 at 2/3; the TPs are
    exact boxes, so every IoU threshold gives the same => AP = AP50 = (51 + 100/3) / 101
    """
    ds = _dataset([[[10, 10, 30, 30]], [[50, 50, 80, 90]]], [[1], [1]])
    preds = [_pred(0, [[10, 10, 30, 30], [60, 60, 70, 70]], [0.9, 0.8], [1, 1]),
             _pred(1, [[50, 50, 80, 90]], [0.7], [1])]
    assert voc07_map(ds, preds)["mAP50"] == pytest.approx((6 + 10 / 3) / 11)
    m = coco_metrics(ds.coco_gt(), to_coco_results(preds, ds))
    assert m["AP"] == pytest.approx((51 + 100 / 3) / 101, abs=1e-6)
    assert m["AP50"] == pytest.approx((51 + 100 / 3) / 101, abs=1e-6)


def test_difficult_boxes_are_neither_found_nor_missed():
    ds = _dataset([[[10, 10, 30, 30], [50, 50, 90, 90]]], [[1, 1]], [[False, True]])
    # A detection on the difficult box would be an FP if it counted; a missing one would lower recall.
    with_difficult = [_pred(0, [[50, 50, 90, 90], [10, 10, 30, 30]], [0.9, 0.8], [1, 1])]
    without = [_pred(0, [[10, 10, 30, 30]], [0.8], [1])]
    assert voc07_map(ds, with_difficult)["mAP50"] == pytest.approx(1.0)
    assert voc07_map(ds, without)["mAP50"] == pytest.approx(1.0)
    # Duplicates are FPs; a hit on a difficult box is skipped: TP, FP(dup), ignored, TP
    ds2 = _dataset([[[10, 10, 30, 30], [50, 50, 90, 90], [60, 5, 90, 30]]], [[1, 1, 1]], [[False, True, False]])
    dets = [_pred(0, [[10, 10, 30, 30], [10, 10, 30, 31], [50, 50, 90, 90], [60, 5, 90, 30]],
                  [0.9, 0.85, 0.8, 0.7], [1, 1, 1, 1])]
    assert voc07_map(ds2, dets)["mAP50"] == pytest.approx((6 + 10 / 3) / 11)


class _Oracle(nn.Module):
    """Returns the ground truth of the images it is shown, in dataset order."""

    def __init__(self, ds):
        super().__init__()
        self.queue = [(r.boxes, r.labels) for r in ds.records]

    def forward(self, images):
        out = []
        for _ in images:
            b, lab = self.queue.pop(0)
            out.append({"boxes": torch.as_tensor(b), "scores": torch.ones(len(lab)), "labels": torch.as_tensor(lab)})
        return out


def test_evaluate_end_to_end_writes_coco_results(synthetic_root, tmp_path):
    ds = VOCDetection(synthetic_root, "val", transforms=eval_transforms())
    m = evaluate(_Oracle(ds), ds, batch_size=3, results_json=tmp_path / "det.json", progress=False)
    assert m["AP"] == pytest.approx(1.0) and m["VOC07_mAP50"] == pytest.approx(1.0)
    import json
    dets = json.loads((tmp_path / "det.json").read_text())
    assert len(dets) == sum(len(r.labels) for r in ds.records)
    assert set(dets[0]) == {"image_id", "category_id", "bbox", "score"}


class _OracleWithBackground(_Oracle):
    """The ground truth plus a confident box labelled 0 (background) per image, as a barely trained
    RetinaNet can output."""

    def forward(self, images):
        out = super().forward(images)
        for o in out:
            o["boxes"] = torch.cat([o["boxes"], torch.tensor([[1.0, 1.0, 30.0, 30.0]])])
            o["scores"] = torch.cat([o["scores"], torch.ones(1)])
            o["labels"] = torch.cat([o["labels"], torch.zeros(1, dtype=o["labels"].dtype)])
        return out


def test_background_labelled_boxes_are_not_detections(synthetic_root, tmp_path):
    ds = VOCDetection(synthetic_root, "val", transforms=eval_transforms())
    m = evaluate(_OracleWithBackground(ds), ds, batch_size=3, results_json=tmp_path / "det.json", progress=False)
    assert m["AP"] == pytest.approx(1.0)
    import json
    dets = json.loads((tmp_path / "det.json").read_text())
    assert len(dets) == sum(len(r.labels) for r in ds.records)
