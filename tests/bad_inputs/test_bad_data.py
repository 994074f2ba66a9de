"""Broken VOC / COCO inputs fail at construction naming file and record, or are repaired with a
warning naming the files."""

import json
import re
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from glamd_core.data import COCODetection, VOCDetection
from glamd_core.data.base import clip_and_filter
from glamd_core.evaluation import coco_metrics, to_coco_results


def _coco(tmp_path, annotations, images=None, size=(20, 10)):
    """A one-category COCO file; every listed image file that does not exist is drawn at ``size``."""
    images = [{"id": 7, "file_name": "a.jpg", "width": 20, "height": 10}] if images is None else images
    for img in images:
        if isinstance(img.get("file_name"), str) and not (tmp_path / img["file_name"]).exists():
            Image.new("RGB", size, (90, 60, 30)).save(tmp_path / img["file_name"])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "categories": [{"id": 3, "name": "thing"}],
                               "annotations": annotations}))
    return ann


def _box(ann_id, bbox, image_id=7, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": 3, "bbox": bbox, "iscrowd": 0, **extra}


def _synthetic_coco(tmp_path, synthetic_root, edit):
    """The fixture's val json, changed by ``edit(data)``, next to the fixture's images."""
    data = json.loads((synthetic_root / "annotations/instances_val.json").read_text())
    edit(data)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return synthetic_root / "JPEGImages", ann


def _voc(root, files, split="train"):
    """VOC layout with ``files = {stem: (xml_size, image_size, objects_xml)}``; classes cat, dog."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / f"ImageSets/Main/{split}.txt").write_text("".join(f"{s}\n" for s in files))
    for stem, (xml_size, image_size, objects) in files.items():
        (root / f"Annotations/{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{xml_size[0]}</width>"
            f"<height>{xml_size[1]}</height><depth>3</depth></size>{objects}</annotation>")
        Image.new("RGB", image_size, (10, 20, 30)).save(root / f"JPEGImages/{stem}.jpg")
    return root


def _obj(name, x1, y1, x2, y2):
    return (f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _perfect(ds):
    preds = [{"image_id": r.image_id, "boxes": r.boxes, "scores": np.ones(len(r.labels)), "labels": r.labels}
             for r in ds.records]
    return coco_metrics(ds.coco_gt(), to_coco_results(preds, ds))


# 1. duplicate image ids

def test_coco_duplicate_image_ids_are_an_error(tmp_path, synthetic_root):
    def dup(data):
        data["images"][2]["id"] = data["images"][0]["id"]

    image_dir, ann = _synthetic_coco(tmp_path, synthetic_root, dup)
    dup_id = json.loads(ann.read_text())["images"][0]["id"]
    with pytest.raises(ValueError, match=rf"ann\.json: 1 image id\(s\) used by more than one image .*: {dup_id}$"):
        COCODetection(image_dir, ann)


# 2. dropped boxes and the evaluation ground truth

def test_coco_nan_inf_and_negative_width_boxes_are_dropped_and_named(tmp_path):
    ann = _coco(tmp_path, [_box(1, [1, 1, 5, 5]), _box(2, [float("nan"), 1, 5, 5]),
                           _box(3, [2, 2, float("inf"), 3]), _box(4, [8, 2, -3, 4]), _box(5, [1, None, 2, 2])])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = COCODetection(tmp_path, ann)
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"ann\.json: dropped 3 non-finite .*a\.jpg \(image 7\): 3 boxes "
                         r"\(annotation 2 \(image 7\), annotation 3 \(image 7\), annotation 5 \(image 7\)\)", m)
               for m in messages), messages
    assert any(re.search(r"ann\.json: dropped 1 degenerate .*a\.jpg \(image 7\): 1 box \(annotation 4", m)
               for m in messages), messages
    assert ds.records[0].boxes.tolist() == [[1, 1, 6, 6]]


def test_clip_and_filter_never_keeps_non_finite_boxes():
    boxes = np.array([[0, 0, np.inf, 5], [-np.inf, 0, 3, 3], [np.nan, 0, 3, 3], [1, 1, 3, 3]])
    clipped, keep = clip_and_filter(boxes, 10, 10)
    assert keep.tolist() == [False, False, False, True] and clipped[3].tolist() == [1, 1, 3, 3]


def test_coco_gt_is_the_validated_records_and_perfect_predictions_score_one(tmp_path, synthetic_root):
    def corrupt(data):
        first = data["images"][0]["id"]
        data["annotations"] += [_box(9001, [float("nan"), 3, 10, 10], first, category_id=2, area=70),
                                _box(9002, [20, 3, -10, 10], first, category_id=2, area=70)]

    image_dir, ann = _synthetic_coco(tmp_path, synthetic_root, corrupt)
    with (pytest.warns(UserWarning, match=r"ann\.json: dropped 1 degenerate .*annotation 9002"),
          pytest.warns(UserWarning, match=r"ann\.json: dropped 1 non-finite .*annotation 9001")):
        ds = COCODetection(image_dir, ann)
    gt = ds.coco_gt()
    assert len(gt.anns) == sum(len(r.labels) for r in ds.records) == len(json.loads(ann.read_text())["annotations"]) - 2
    assert sorted(gt.getImgIds()) == sorted(r.image_id for r in ds.records)
    m = _perfect(ds)
    assert m["AP"] == 1.0 and m["AP50"] == 1.0 and m["AP75"] == 1.0


def test_coco_gt_keeps_cocos_area_and_falls_back_to_the_box_area(tmp_path):
    """COCO's size buckets use the segmentation area, which can put a box in another bucket."""
    ann = _coco(tmp_path, [_box(1, [0, 0, 40, 40], area=900.0), _box(2, [0, 0, 10, 10]),
                           _box(3, [0, 0, 20, 20], area=float("nan"))], size=(64, 64),
                images=[{"id": 7, "file_name": "a.jpg", "width": 64, "height": 64}])
    with pytest.warns(UserWarning, match=r"ann\.json: 1 annotation\(s\) with an invalid 'area'.*annotation 3"):
        ds = COCODetection(tmp_path, ann)
    gt = ds.coco_gt()
    assert [a["area"] for a in gt.dataset["annotations"]] == [900.0, 100.0, 400.0]
    assert [a["bbox"] for a in gt.dataset["annotations"]] == [[0, 0, 40, 40], [0, 0, 10, 10], [0, 0, 20, 20]]
    m = _perfect(ds)
    assert m["AP"] == 1.0 and m["APs"] == 1.0 and m["APm"] == -1.0  # 40x40 box, area 900: small


# 3. annotations of unknown images

def test_coco_annotation_of_an_unknown_image_is_an_error(tmp_path):
    ann = _coco(tmp_path, [_box(1, [1, 1, 5, 5]), _box(999, [1, 1, 5, 5], image_id=12345)])
    with pytest.raises(ValueError, match=r"ann\.json: 1 malformed annotation\(s\): annotation 999: "
                                         r"image_id 12345 is not in 'images'"):
        COCODetection(tmp_path, ann)


# 4. malformed annotation and image entries

@pytest.mark.parametrize("annotation, expected", [
    ({"id": 5, "image_id": 7, "category_id": 3}, r"annotation 5 \(image 7\): no 'bbox'"),
    (_box(5, [1, 2, 3]), r"annotation 5 \(image 7\): 'bbox' is not 4 numbers \(\[1, 2, 3\]\)"),
    (_box(5, "1 2 3 4"), r"annotation 5 \(image 7\): 'bbox' is not 4 numbers"),
    (_box(5, [1, 2, 3, "4"]), r"annotation 5 \(image 7\): 'bbox' is not 4 numbers"),
    ({"id": 5, "category_id": 3, "bbox": [1, 1, 2, 2]}, r"annotation 5: image_id None is not in 'images'"),
])
def test_coco_malformed_annotation_is_an_error(tmp_path, annotation, expected):
    ann = _coco(tmp_path, [_box(1, [1, 1, 5, 5]), annotation])
    with pytest.raises(ValueError, match=r"ann\.json: 1 malformed annotation\(s\): " + expected):
        COCODetection(tmp_path, ann)


@pytest.mark.parametrize("drop, expected", [
    ("width", r"image 7: no 'width'"), ("height", r"image 7: no 'height'"),
    ("file_name", r"image 7: no 'file_name'"), ("id", r"images\[1\]: 'id' missing or not an integer \(None\)"),
])
def test_coco_malformed_image_entry_is_an_error(tmp_path, drop, expected):
    images = [{"id": 6, "file_name": "b.jpg", "width": 20, "height": 10},
              {"id": 7, "file_name": "a.jpg", "width": 20, "height": 10}]
    ann = _coco(tmp_path, [_box(1, [1, 1, 5, 5], image_id=6)], images=images)
    data = json.loads(ann.read_text())
    del data["images"][1][drop]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"ann\.json: 1 malformed image entr\(ies\): " + expected):
        COCODetection(tmp_path, ann)


# 5. VOC <size> that disagrees with the image

def test_voc_size_is_read_from_the_image_and_a_wrong_xml_size_is_named(tmp_path):
    objects = "".join(_obj("cat", x, 5, x + 8, 20) for x in (1, 21, 41, 51, 61))
    root = _voc(tmp_path / "voc", {"ok": ((80, 60), (80, 60), objects), "wrong": ((40, 30), (80, 60), objects)})
    with pytest.warns(UserWarning, match=r"1 annotation size\(s\) differ .*: wrong\.jpg \(Annotations/wrong\.xml\): "
                                         r"40x30, image 80x60$"):
        ds = VOCDetection(root, "train", classes=["cat"])
    for rec in ds.records:
        assert (rec.width, rec.height) == (80, 60) and len(rec.labels) == 5
    assert ds.records[1].boxes[:, 2].tolist() == [9, 29, 49, 59, 69]


# 6. dropped-box warnings name the files

def test_voc_dropped_box_warning_names_each_file_and_its_count(tmp_path):
    outside = _obj("cat", 50, 1, 60, 5)  # right of the 40 px image: nothing left after clipping
    root = _voc(tmp_path / "voc", {"a": ((40, 30), (40, 30), _obj("cat", 1, 1, 5, 5) + outside + outside),
                                   "b": ((40, 30), (40, 30), _obj("dog", 1, 1, 5, 5)),
                                   "c": ((40, 30), (40, 30), _obj("cat", 10, 1, 4, 5))})  # xmax < xmin
    with pytest.warns(UserWarning, match=r"\[train\]: dropped 3 degenerate box\(es\) .* in 2 image\(s\): "
                                         r"a\.jpg \(Annotations/a\.xml\): 2 boxes, c\.jpg \(Annotations/c\.xml\): 1 box$"):
        ds = VOCDetection(root, "train", classes=["cat", "dog"])
    assert [len(r.labels) for r in ds.records] == [1, 1, 0]


def test_voc_non_finite_coordinates_are_dropped_and_named(tmp_path):
    root = _voc(tmp_path / "voc", {"a": ((40, 30), (40, 30), _obj("cat", 1, 1, 5, 5) + _obj("cat", 1, 1, "inf", 5))})
    with pytest.warns(UserWarning, match=r"dropped 1 non-finite .*a\.jpg \(Annotations/a\.xml\): 1 box$"):
        ds = VOCDetection(root, "train", classes=["cat"])
    assert ds.records[0].boxes.tolist() == [[0, 0, 5, 5]]


def test_coco_dropped_box_warning_names_image_files_and_annotation_ids(tmp_path):
    images = [{"id": i, "file_name": f"{n}.jpg", "width": 20, "height": 10} for i, n in ((1, "a"), (2, "b"))]
    ann = _coco(tmp_path, [_box(10, [1, 1, 4, 4], 1), _box(11, [30, 1, 4, 4], 1), _box(12, [1, 1, 0, 4], 2),
                           _box(13, [1, 1, 3, 3], 2), _box(14, [1, 12, 3, 3], 2)], images=images)
    with pytest.warns(UserWarning, match=r"ann\.json: dropped 3 degenerate .* in 2 image\(s\): "
                                         r"a\.jpg \(image 1\): 1 box \(annotation 11 \(image 1\)\), "
                                         r"b\.jpg \(image 2\): 2 boxes \(annotation 12 \(image 2\), annotation 14"):
        ds = COCODetection(tmp_path, ann)
    assert [len(r.labels) for r in ds.records] == [1, 1]


# 7. empty, truncated and unreadable images

def _break(path, how):
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) * 3 // 4], "garbage": b"not an image" * 10,
                      "padded": data + b"\0" * 16}[how])


_BROKEN = {"empty": r"empty file \(0 bytes\)", "truncated": r"JPEG without end-of-image marker FF D9, truncated",
           "garbage": "header unreadable"}


@pytest.mark.parametrize("how", list(_BROKEN) + ["padded"])
def test_voc_broken_images_fail_at_construction(tmp_path, synthetic_root, how):
    root = shutil.copytree(synthetic_root, tmp_path / "voc")
    _break(root / "JPEGImages/val_000002.jpg", how)
    if how == "padded":  # bytes after the end marker are harmless
        assert len(VOCDetection(root, "val")) == 4
        return
    with pytest.raises(ValueError, match=r"\[val\]: 1 image file\(s\) empty, unreadable or truncated: "
                                         rf".*val_000002\.jpg \(Annotations/val_000002\.xml\): {_BROKEN[how]}"):
        VOCDetection(root, "val")


@pytest.mark.parametrize("how", list(_BROKEN))
def test_coco_broken_images_fail_at_construction(tmp_path, synthetic_root, how):
    images = shutil.copytree(synthetic_root / "JPEGImages", tmp_path / "images")
    ann = synthetic_root / "annotations/instances_val.json"
    entry = json.loads(ann.read_text())["images"][1]
    _break(images / entry["file_name"], how)
    with pytest.raises(ValueError, match=rf"instances_val\.json: 1 image file\(s\) .*{entry['file_name']} "
                                         rf"\(image {entry['id']}\): {_BROKEN[how]}"):
        COCODetection(images, ann)


def test_truncated_png_fails_at_construction(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    ann = _coco(tmp_path, [], images=[{"id": 7, "file_name": "p.png", "width": 40, "height": 40}])
    assert len(COCODetection(tmp_path, ann)) == 1
    _break(tmp_path / "p.png", "truncated")
    with pytest.raises(ValueError, match=r"p\.png \(image 7\): PNG without IEND chunk"):
        COCODetection(tmp_path, ann)


# 8. empty splits

def test_empty_voc_split_is_an_error(tmp_path, synthetic_root):
    root = shutil.copytree(synthetic_root, tmp_path / "voc")
    (root / "ImageSets/Main/empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"VOC split file .*ImageSets/Main/empty\.txt lists no image"):
        VOCDetection(root, "empty")


def test_coco_file_without_images_is_an_error(tmp_path):
    ann = _coco(tmp_path, [], images=[])
    with pytest.raises(ValueError, match=r"ann\.json: 'images' is empty"):
        COCODetection(tmp_path, ann)
