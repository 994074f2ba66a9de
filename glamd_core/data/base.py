"""What VOC and COCO datasets share: parsed records, tv_tensors targets, a COCO ground truth."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file


@dataclass
class ImageRecord:
    """One image's annotation, parsed once when the dataset is built (so bad files fail early)."""

    path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # N x 4 float32, XYXY in pixels (continuous coordinates, right/bottom exclusive)
    labels: np.ndarray  # N int64, 1-based contiguous (0 is the detectors' background)
    ignore: np.ndarray = field(default=None)  # N bool: VOC "difficult" or COCO "iscrowd"

    def __post_init__(self):
        if self.ignore is None:
            self.ignore = np.zeros(len(self.labels), dtype=bool)


def clip_and_filter(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image; return clipped boxes and the mask of non-degenerate ones."""
    boxes = boxes.reshape(-1, 4).astype(np.float32).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, keep


class DetectionDataset(Dataset):
    """Base class: ``records`` + ``classes``; returns ``(tv_tensors.Image, target)``.

    ``target`` holds ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY), ``labels``, ``ignore`` (VOC
    difficult / COCO crowd, which evaluation ignores) and ``image_id``. With ``skip_ignored=True``
    ignored boxes are left out of the target, which is what training wants.
    """

    def __init__(self, records: list[ImageRecord], classes: list[str], supercategories: list[str] | None,
                 transforms: Callable | None, skip_ignored: bool, source: str):
        self.records = records
        self.classes = list(classes)
        self.supercategories = list(supercategories) if supercategories else ["none"] * len(self.classes)
        self.transforms = transforms
        self.skip_ignored = skip_ignored
        self.source = source

    @property
    def num_classes(self) -> int:
        """Foreground classes + background, the number torchvision's detectors are built with."""
        return len(self.classes) + 1

    def label_to_category_id(self, label: int) -> int:
        """The category id written in COCO results json for a contiguous label."""
        return int(label)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        try:
            image = decode_image(read_file(str(rec.path)), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as exc:
            raise RuntimeError(f"cannot read image {rec.path}: {exc}") from exc
        h, w = image.shape[-2:]
        keep = ~rec.ignore if self.skip_ignored else np.ones(len(rec.labels), dtype=bool)
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(rec.boxes[keep]).reshape(-1, 4),
                                              format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(rec.labels[keep]).long(),
            "ignore": torch.from_numpy(rec.ignore[keep]),
            "image_id": rec.image_id,
        }
        image = tv_tensors.Image(image)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_gt(self):
        """The ground truth as a pycocotools ``COCO`` object (ignored boxes marked ``iscrowd``)."""
        from pycocotools.coco import COCO

        images, anns = [], []
        for rec in self.records:
            images.append({"id": rec.image_id, "width": rec.width, "height": rec.height})
            for box, label, ign in zip(rec.boxes, rec.labels, rec.ignore):
                x1, y1, x2, y2 = (float(v) for v in box)
                anns.append({"id": len(anns) + 1, "image_id": rec.image_id,
                             "category_id": self.label_to_category_id(int(label)),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "iscrowd": int(ign)})
        cats = [{"id": self.label_to_category_id(i + 1), "name": n, "supercategory": s}
                for i, (n, s) in enumerate(zip(self.classes, self.supercategories))]
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt


def warn_dropped(dropped: int, source: str) -> None:
    if dropped:
        warnings.warn(f"{source}: dropped {dropped} degenerate box(es) (zero width or height after "
                      "clipping to the image)", stacklevel=3)


def check_images_exist(records: list[ImageRecord], source: str) -> None:
    missing = [r.path for r in records if not r.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: {len(missing)} image file(s) missing, first: {missing[0]}")


def collate(batch):
    """Detection batches are lists: images differ in size and targets in box count."""
    return tuple(zip(*batch))
