"""COCO json reader (COCO 2017, and the embedded synthetic dataset's annotations/*.json)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .base import DetectionDataset, ImageRecord, box_areas, first_few, validate_records

_MISSING = (
    "COCO annotation file {ann} not found. This machine cannot download COCO: fetch train2017.zip, "
    "val2017.zip and annotations_trainval2017.zip from the COCO site, extract them under data/coco/ "
    "and pass image_dir='data/coco/val2017', ann_file='data/coco/annotations/instances_val2017.json'. "
    "For the embedded dataset run `python -m glamd_core.data.synthetic --out data/synthetic`."
)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _image_problem(img) -> str | None:
    if not isinstance(img, dict):
        return "is not an object"
    if not _is_int(img.get("id")):
        return f"'id' missing or not an integer ({_short(img.get('id'))})"
    absent = [k for k in ("file_name", "width", "height") if k not in img]
    if absent:
        return "no " + ", ".join(f"'{k}'" for k in absent)
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        return f"'file_name' is not a file name ({_short(img['file_name'])})"
    for k in ("width", "height"):
        if not (_is_number(img[k]) and img[k] > 0 and float(img[k]).is_integer()):
            return f"'{k}' is not a positive integer ({_short(img[k])})"
    return None


def _image_name(img, i: int) -> str:
    return f"image {img['id']}" if isinstance(img, dict) and _is_int(img.get("id")) else f"images[{i}]"


def _bbox_ok(b) -> bool:
    # null stands for NaN: JSON has no NaN, and strict writers (JavaScript among them) emit null.
    return isinstance(b, (list, tuple)) and len(b) == 4 and all(v is None or _is_number(v) for v in b)


def _load(ann_file: Path) -> tuple[list, list, list]:
    try:
        data = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot parse COCO annotation file {ann_file}: {exc!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"cannot parse COCO annotation file {ann_file}: top level is not an object")
    parts = [data.get(k, [] if k == "annotations" else None) for k in ("categories", "images", "annotations")]
    for key, part in zip(("categories", "images", "annotations"), parts):
        if not isinstance(part, list):
            raise ValueError(f"cannot parse COCO annotation file {ann_file}: '{key}' missing or not a list")
    return parts


class COCODetection(DetectionDataset):
    """``COCODetection(image_dir, ann_file)``; category ids are mapped to contiguous labels 1..K.

    The file is validated as a whole when the dataset is built: duplicate image ids, annotations
    of unknown images or categories and malformed entries are errors naming the file and the
    record. Image sizes come from the image files, non-finite and degenerate boxes are dropped
    (with a warning naming them), and crowd annotations are kept and flagged ``ignore``. The
    evaluation ground truth, :meth:`coco_gt`, is built from these records, so it holds exactly the
    boxes training sees; each keeps COCO's own ``area`` (the segmentation's, which the official
    size buckets use), or its box area where the file gives none.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms: Callable | None = None,
                 skip_ignored: bool = False):
        image_dir, ann_file = Path(image_dir), Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(_MISSING.format(ann=ann_file))
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {image_dir} not found (it should hold the "
                                    f"images listed in {ann_file})")
        cats, images, annotations = _load(ann_file)
        self.ann_file = ann_file
        cats = self._categories(cats, ann_file)
        self._check_images(images, ann_file)
        self._cat_ids = [c["id"] for c in cats]
        records, box_names = self._records(images, annotations, image_dir, ann_file)
        source = f"COCO {ann_file}"
        validate_records(records, [f"image {r.image_id}" for r in records], source, box_names)
        for rec in records:
            rec.areas = np.where(np.isnan(rec.areas), box_areas(rec.boxes), rec.areas)
        super().__init__(records, [c["name"] for c in cats], [c.get("supercategory", "none") for c in cats],
                         transforms, skip_ignored, source)

    @staticmethod
    def _categories(cats: list, ann_file: Path) -> list[dict]:
        bad = [f"categories[{i}]" for i, c in enumerate(cats)
               if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str))]
        if bad:
            raise ValueError(f"{ann_file}: {len(bad)} categor(ies) without an integer 'id' and a 'name': "
                             f"{first_few(bad)}")
        ids, counts = np.unique([c["id"] for c in cats], return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{ann_file}: duplicate category id(s) {first_few(ids[counts > 1].tolist())}")
        return sorted(cats, key=lambda c: c["id"])

    @staticmethod
    def _check_images(images: list, ann_file: Path) -> None:
        if not images:
            raise ValueError(f"{ann_file}: 'images' is empty, the dataset would have no sample")
        problems = [f"{_image_name(img, i)}: {p}" for i, img in enumerate(images) if (p := _image_problem(img))]
        if problems:
            raise ValueError(f"{ann_file}: {len(problems)} malformed image entr(ies): {first_few(problems)}")
        ids, counts = np.unique([img["id"] for img in images], return_counts=True)
        if (counts > 1).any():
            dup = ids[counts > 1].tolist()
            raise ValueError(f"{ann_file}: {len(dup)} image id(s) used by more than one image (their boxes "
                             f"would merge): {first_few(dup)}")

    def _records(self, images: list, annotations: list, image_dir: Path,
                 ann_file: Path) -> tuple[list[ImageRecord], list[list[str]]]:
        index_of = {img["id"]: k for k, img in enumerate(images)}
        label_of = {cid: i + 1 for i, cid in enumerate(self._cat_ids)}
        img_idx, labels, crowd, areas, bboxes, names = [], [], [], [], [], []
        problems, bad_area = [], []
        for i, a in enumerate(annotations):
            if not isinstance(a, dict):
                problems.append(f"annotations[{i}]: is not an object")
                continue
            name = f"annotation {a['id']}" if "id" in a else f"annotations[{i}]"
            iid, cid, box = a.get("image_id"), a.get("category_id"), a.get("bbox")
            if not (_is_int(iid) and iid in index_of):
                problems.append(f"{name}: image_id {_short(iid)} is not in 'images'")
                continue
            name = f"{name} (image {iid})"
            if not (_is_int(cid) and cid in label_of):
                problems.append(f"{name}: unknown category_id {_short(cid)}")
            elif "bbox" not in a:
                problems.append(f"{name}: no 'bbox'")
            elif not _bbox_ok(box):
                problems.append(f"{name}: 'bbox' is not 4 numbers ({_short(box)})")
            else:
                area = a.get("area")
                valid = _is_number(area) and math.isfinite(area) and area >= 0
                if "area" in a and not valid:
                    bad_area.append(name)
                img_idx.append(index_of[iid])
                labels.append(label_of[cid])
                crowd.append(bool(a.get("iscrowd", 0)))
                areas.append(area if valid else np.nan)
                bboxes.append(box)
                names.append(name)
        if problems:
            raise ValueError(f"{ann_file}: {len(problems)} malformed annotation(s): {first_few(problems)}")
        if bad_area:
            warnings.warn(f"COCO {ann_file}: {len(bad_area)} annotation(s) with an invalid 'area'; using the box "
                          f"area: {first_few(bad_area)}", stacklevel=3)
        img_idx, labels = np.asarray(img_idx, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        crowd, areas = np.asarray(crowd, dtype=bool), np.asarray(areas, dtype=np.float64)
        xywh = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        order = np.argsort(img_idx, kind="stable")
        bounds = np.searchsorted(img_idx[order], np.arange(len(images) + 1))
        records, box_names = [], []
        for k, img in enumerate(images):
            sel = order[bounds[k]:bounds[k + 1]]
            records.append(ImageRecord(image_dir / img["file_name"], img["id"], int(img["width"]),
                                       int(img["height"]), xyxy[sel], labels[sel], crowd[sel], areas[sel]))
            box_names.append([names[j] for j in sel])
        return records, box_names

    def label_to_category_id(self, label: int) -> int:
        return self._cat_ids[int(label) - 1]
