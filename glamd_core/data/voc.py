"""Pascal VOC layout reader (VOC2007/2012, and the embedded synthetic dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable
from xml.etree import ElementTree as ET

import numpy as np

from .base import DetectionDataset, ImageRecord, validate_records

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

_MISSING_ROOT = (
    "Pascal VOC root {root} not found (it must contain JPEGImages/, Annotations/ and "
    "ImageSets/Main/{split}.txt). This machine cannot download it: fetch VOCtrainval_06-Nov-2007.tar "
    "and VOCtest_06-Nov-2007.tar (and VOC2012 if wanted) from the PASCAL VOC site, extract them under "
    "data/VOCdevkit/ and pass root='data/VOCdevkit/VOC2007'. For the embedded dataset run "
    "`python -m glamd_core.data.synthetic --out data/synthetic`."
)


def _classes_for(root: Path, classes) -> list[str]:
    if classes is not None:
        return list(classes)
    listed = root / "classes.txt"  # written by our synthetic generator; real VOC has none
    if listed.is_file():
        return [c.strip() for c in listed.read_text().splitlines() if c.strip()]
    return list(VOC_CLASSES)


def _supercategories_for(root: Path, classes: list[str]) -> list[str] | None:
    spec = root / "annotations" / "instances_train.json"
    if (root / "classes.txt").is_file() and spec.is_file():
        import json

        cats = {c["name"]: c.get("supercategory", "none") for c in json.loads(spec.read_text())["categories"]}
        return [cats.get(c, "none") for c in classes]
    return None


def _int(node, tag: str, xml_path: Path) -> float:
    el = node.find(tag)
    if el is None or el.text is None:
        raise ValueError(f"{xml_path}: <{tag}> missing")
    try:
        return float(el.text)
    except ValueError as exc:
        raise ValueError(f"{xml_path}: <{tag}> is not a number: {el.text!r}") from exc


def _dim(v: float) -> int | float:
    return int(v) if v.is_integer() else v


class VOCDetection(DetectionDataset):
    """``VOCDetection(root, split)`` reads ``root/ImageSets/Main/{split}.txt`` and its XML files.

    Boxes become continuous XYXY pixels: VOC's 1-based inclusive ``xmin..xmax`` covers pixel
    columns ``xmin-1 .. xmax-1``, i.e. ``[xmin-1, xmax)``. ``difficult`` objects are kept and
    flagged ``ignore``, as the VOC protocol ignores them in evaluation. Image sizes come from the
    image files (an XML ``<size>`` that disagrees is overridden, with a warning naming the XML), and
    boxes are clipped to them; non-finite and degenerate boxes are dropped with a warning naming them.
    """

    def __init__(self, root: str | Path, split: str = "train", classes=None,
                 transforms: Callable | None = None, skip_ignored: bool = False):
        root = Path(root)
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not root.is_dir() or not (root / "Annotations").is_dir():
            raise FileNotFoundError(_MISSING_ROOT.format(root=root, split=split))
        if not split_file.is_file():
            raise FileNotFoundError(f"VOC split file {split_file} not found; splits present: "
                                    f"{sorted(p.stem for p in (root / 'ImageSets' / 'Main').glob('*.txt'))}")
        names = _classes_for(root, classes)
        index = {n: i + 1 for i, n in enumerate(names)}
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"VOC split file {split_file} lists no image")
        records = [self._parse(root, stem, image_id, index) for image_id, stem in enumerate(ids)]
        source = f"VOC {root} [{split}]"
        validate_records(records, [f"Annotations/{stem}.xml" for stem in ids], source)
        super().__init__(records, names, _supercategories_for(root, names), transforms, skip_ignored, source)

    @staticmethod
    def _parse(root: Path, stem: str, image_id: int, index: dict[str, int]) -> ImageRecord:
        """The XML's record, boxes unclipped; size is the XML's ``<size>`` (None if absent)."""
        xml_path = root / "Annotations" / f"{stem}.xml"
        try:
            tree = ET.parse(xml_path).getroot()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"annotation file {xml_path} missing") from exc
        except ET.ParseError as exc:
            raise ValueError(f"cannot parse VOC annotation {xml_path}: {exc}") from exc
        fname = tree.findtext("filename") or f"{stem}.jpg"
        size = tree.find("size")
        width = height = None
        if size is not None and size.findtext("width"):
            width, height = (_dim(_int(size, tag, xml_path)) for tag in ("width", "height"))
        boxes, labels, difficult = [], [], []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise ValueError(f"{xml_path}: unknown class {name!r}; known classes: {sorted(index)}")
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"{xml_path}: object {name!r} has no <bndbox>")
            boxes.append([_int(bb, "xmin", xml_path) - 1, _int(bb, "ymin", xml_path) - 1,
                          _int(bb, "xmax", xml_path), _int(bb, "ymax", xml_path)])
            labels.append(index[name])
            difficult.append((obj.findtext("difficult") or "0").strip() == "1")
        return ImageRecord(root / "JPEGImages" / fname, image_id, width, height,
                           np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                           np.asarray(labels, dtype=np.int64).reshape(-1),
                           np.asarray(difficult, dtype=bool).reshape(-1))
