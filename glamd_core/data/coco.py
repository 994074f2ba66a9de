"""COCO json reader (COCO 2017, and the embedded synthetic dataset's annotations/*.json)."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from .base import DetectionDataset, ImageRecord, check_images_exist, clip_and_filter, warn_dropped

_MISSING = (
    "COCO annotation file {ann} not found. This machine cannot download COCO: fetch train2017.zip, "
    "val2017.zip and annotations_trainval2017.zip from the COCO site, extract them under data/coco/ "
    "and pass image_dir='data/coco/val2017', ann_file='data/coco/annotations/instances_val2017.json'. "
    "For the embedded dataset run `python -m glamd_core.data.synthetic --out data/synthetic`."
)


class COCODetection(DetectionDataset):
    """``COCODetection(image_dir, ann_file)``; category ids are mapped to contiguous labels 1..K.

    Crowd annotations are kept and flagged ``ignore``; the COCO ground truth used for evaluation
    is the annotation file itself, as in the official protocol.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms: Callable | None = None,
                 skip_ignored: bool = False):
        image_dir, ann_file = Path(image_dir), Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(_MISSING.format(ann=ann_file))
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {image_dir} not found (it should hold the "
                                    f"images listed in {ann_file})")
        try:
            data = json.loads(ann_file.read_text())
            cats = sorted(data["categories"], key=lambda c: c["id"])
            images = data["images"]
            annotations = data.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot parse COCO annotation file {ann_file}: {exc!r}") from exc
        self.ann_file = ann_file
        self._cat_ids = [c["id"] for c in cats]
        label_of = {cid: i + 1 for i, cid in enumerate(self._cat_ids)}
        per_image = defaultdict(list)
        for a in annotations:
            if a["category_id"] not in label_of:
                raise ValueError(f"{ann_file}: annotation {a.get('id')} has unknown category_id "
                                 f"{a['category_id']}")
            per_image[a["image_id"]].append(a)
        records, dropped = [], 0
        for img in images:
            anns = per_image.get(img["id"], [])
            xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            boxes, keep = clip_and_filter(xyxy, img["width"], img["height"])
            dropped += int((~keep).sum())
            records.append(ImageRecord(
                image_dir / img["file_name"], img["id"], img["width"], img["height"], boxes[keep],
                np.asarray([label_of[a["category_id"]] for a in anns], dtype=np.int64).reshape(-1)[keep],
                np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool).reshape(-1)[keep]))
        check_images_exist(records, f"COCO {image_dir}")
        warn_dropped(dropped, f"COCO {ann_file}")
        super().__init__(records, [c["name"] for c in cats], [c.get("supercategory", "none") for c in cats],
                         transforms, skip_ignored, f"COCO {ann_file}")

    def label_to_category_id(self, label: int) -> int:
        return self._cat_ids[int(label) - 1]

    def coco_gt(self):
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(self.ann_file))
