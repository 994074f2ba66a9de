import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from glamd_core.data import COCODetection, SyntheticSpec, VOCDetection, generate, train_transforms
from glamd_core.data.synthetic import CLASSES, main as synthetic_main, render_image

from conftest import TINY


def _voc_coco(root, split):
    return (VOCDetection(root, split),
            COCODetection(root / "JPEGImages", root / "annotations" / f"instances_{split}.json"))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_round_trip_voc_and_coco_give_the_generators_boxes(synthetic_root, split):
    voc, coco = _voc_coco(synthetic_root, split)
    assert len(voc) == len(coco) == {"train": TINY.num_train, "val": TINY.num_val, "test": TINY.num_test}[split]
    assert voc.classes == coco.classes == list(CLASSES)
    for i in range(len(voc)):
        _, objects = render_image(TINY, split, i)
        expected = torch.tensor([o["box"] for o in objects], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([voc.classes.index(o["name"]) + 1 for o in objects], dtype=torch.int64)
        (iv, tv), (ic, tc) = voc[i], coco[i]
        assert torch.equal(iv, ic)
        assert iv.shape == (3, TINY.image_size, TINY.image_size) and iv.dtype == torch.uint8
        for t in (tv, tc):
            assert torch.equal(t["boxes"].as_subclass(torch.Tensor), expected)
            assert torch.equal(t["labels"], labels)


def test_splits_share_no_image(synthetic_root):
    """Each image is drawn from a generator seeded by (seed, split, index): the held-out test split
    is new images, not copies of train or val ones."""
    pixels = {}
    for split in ("train", "val", "test"):
        for rec in VOCDetection(synthetic_root, split).records:
            pixels.setdefault(rec.path.read_bytes(), []).append(rec.path.name)
    assert all(len(names) == 1 for names in pixels.values())
    assert len(pixels) == TINY.num_train + TINY.num_val + TINY.num_test


def test_same_arguments_give_identical_annotations(tmp_path):
    spec = SyntheticSpec(num_train=5, num_val=2, image_size=64, seed=11)
    a, b = generate(tmp_path / "a", spec, progress=False), generate(tmp_path / "b", spec, progress=False)
    for rel in ["annotations/instances_train.json", "annotations/instances_val.json",
                "Annotations/train_000003.xml", "ImageSets/Main/val.txt"]:
        assert (a / rel).read_text() == (b / rel).read_text()
    c = generate(tmp_path / "c", SyntheticSpec(num_train=5, num_val=2, image_size=64, seed=12), progress=False)
    assert (a / "annotations/instances_train.json").read_text() != (c / "annotations/instances_train.json").read_text()


def test_cli_writes_voc_and_coco_layout(tmp_path):
    synthetic_main(["--out", str(tmp_path / "d"), "--num-train", "3", "--num-val", "2", "--image-size", "48",
                    "--seed", "1"])
    d = tmp_path / "d"
    assert len(list((d / "JPEGImages").glob("*.jpg"))) == 5
    assert (d / "ImageSets/Main/train.txt").read_text().split() == ["train_000000", "train_000001", "train_000002"]
    coco = json.loads((d / "annotations/instances_val.json").read_text())
    assert {c["supercategory"] for c in coco["categories"]} == set(CLASSES.values())


def test_dataset_has_the_structure_the_experiments_need():
    """Classes, supercategories, COCO size buckets, empty images, several objects per image."""
    assert len(CLASSES) >= 8 and len(set(CLASSES.values())) >= 3
    spec = SyntheticSpec(image_size=128)
    areas, counts = [], []
    for i in range(300):
        _, objs = render_image(spec, "train", i)
        counts.append(len(objs))
        areas += [(o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1]) for o in objs]
    areas = np.asarray(areas)
    # COCO buckets: small < 32^2 <= medium < 96^2 <= large
    assert (areas < 32**2).mean() > 0.3
    assert ((areas >= 32**2) & (areas < 96**2)).mean() > 0.1
    assert (areas >= 96**2).sum() > 0
    assert 0 < counts.count(0) < 60
    assert max(counts) >= 4


def _write_voc(root: Path, objects_xml: str, classes=("cat", "dog"), size=(40, 30), image=True):
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    (root / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/Main/train.txt").write_text("img1\n")
    (root / "Annotations/img1.xml").write_text(
        f"<annotation><filename>img1.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{objects_xml}</annotation>")
    if image:
        from PIL import Image
        Image.new("RGB", size, (10, 20, 30)).save(root / "JPEGImages/img1.jpg")
    return root


def _obj(name, x1, y1, x2, y2, difficult=0):
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def test_voc_known_content_clipping_difficult_and_degenerate(tmp_path):
    root = _write_voc(tmp_path / "voc", _obj("cat", 1, 1, 10, 20) + _obj("dog", 30, 5, 60, 25, difficult=1)
                      + _obj("cat", 50, 5, 70, 10))
    with pytest.warns(UserWarning, match="dropped 1 degenerate"):
        ds = VOCDetection(root, "train", classes=["cat", "dog"])
    _, t = ds[0]
    # 1-based inclusive (1..10) -> continuous [0, 10); the dog box is clipped to the 40 px width.
    assert t["boxes"].tolist() == [[0, 0, 10, 20], [29, 4, 40, 25]]
    assert t["labels"].tolist() == [1, 2]
    assert t["ignore"].tolist() == [False, True]
    with pytest.warns(UserWarning, match="dropped 1 degenerate"):
        _, t_train = VOCDetection(root, "train", classes=["cat", "dog"], skip_ignored=True)[0]
    assert t_train["labels"].tolist() == [1]
    gt = ds.coco_gt()
    assert [a["iscrowd"] for a in gt.dataset["annotations"]] == [0, 1]


def test_image_without_objects_is_allowed(tmp_path):
    root = _write_voc(tmp_path / "voc", "")
    image, t = VOCDetection(root, "train", classes=["cat"])[0]
    assert image.shape == (3, 30, 40) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_voc_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)nowhere.*VOCtrainval.*data/VOCdevkit"):
        VOCDetection(tmp_path / "nowhere", "train")
    root = _write_voc(tmp_path / "unknown", _obj("zebra", 1, 1, 5, 5))
    with pytest.raises(ValueError, match="img1.xml.*unknown class 'zebra'"):
        VOCDetection(root, "train", classes=["cat"])
    root = _write_voc(tmp_path / "broken", _obj("cat", 1, 1, 5, 5))
    (root / "Annotations/img1.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="cannot parse VOC annotation .*img1.xml"):
        VOCDetection(root, "train", classes=["cat"])
    root = _write_voc(tmp_path / "noimage", _obj("cat", 1, 1, 5, 5), image=False)
    with pytest.raises(FileNotFoundError, match="image file.*missing.*img1.jpg"):
        VOCDetection(root, "train", classes=["cat"])
    with pytest.raises(FileNotFoundError, match="split file .*test.txt"):
        VOCDetection(root, "test", classes=["cat"])


def test_coco_bad_inputs_name_the_path(tmp_path, synthetic_root):
    with pytest.raises(FileNotFoundError, match="(?s)missing.json.*annotations_trainval2017"):
        COCODetection(tmp_path, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot parse COCO annotation file .*bad.json"):
        COCODetection(tmp_path, bad)
    data = json.loads((synthetic_root / "annotations/instances_val.json").read_text())
    images_dir = tmp_path / "images"
    shutil.copytree(synthetic_root / "JPEGImages", images_dir)
    (images_dir / data["images"][1]["file_name"]).unlink()
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match=f"image file.*missing.*{data['images'][1]['file_name']}"):
        COCODetection(images_dir, ann)
    data["annotations"].append({"id": 999, "image_id": data["images"][0]["id"], "category_id": 77,
                                "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0})
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown category_id 77"):
        COCODetection(synthetic_root / "JPEGImages", ann)


def test_coco_clips_drops_and_maps_noncontiguous_category_ids(tmp_path):
    from PIL import Image
    Image.new("RGB", (20, 10)).save(tmp_path / "a.jpg")
    data = {"images": [{"id": 7, "file_name": "a.jpg", "width": 20, "height": 10}],
            "categories": [{"id": 90, "name": "late"}, {"id": 3, "name": "early"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 90, "bbox": [15, 2, 10, 5], "iscrowd": 0},
                {"id": 2, "image_id": 7, "category_id": 3, "bbox": [4, 4, 0, 3], "iscrowd": 0},
                {"id": 3, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2], "iscrowd": 1}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="dropped 1 degenerate"):
        ds = COCODetection(tmp_path, tmp_path / "a.json")
    assert ds.classes == ["early", "late"]
    _, t = ds[0]
    assert t["boxes"].tolist() == [[15, 2, 20, 7], [1, 1, 3, 3]]
    assert t["labels"].tolist() == [2, 1] and t["ignore"].tolist() == [False, True]
    assert [ds.label_to_category_id(v) for v in (1, 2)] == [3, 90]


def test_train_transforms_flip_boxes_with_the_image(synthetic_root):
    ds = VOCDetection(synthetic_root, "train", transforms=train_transforms(hflip=1.0))
    plain = VOCDetection(synthetic_root, "train")
    i = next(k for k in range(len(ds)) if len(plain.records[k].labels))
    (im, t), (im0, t0) = ds[i], plain[i]
    assert im.dtype == torch.float32 and im.max() <= 1.0
    assert torch.allclose(im, im0.flip(-1).float() / 255)
    w = im.shape[-1]
    b0 = t0["boxes"].as_subclass(torch.Tensor)
    assert torch.equal(t["boxes"].as_subclass(torch.Tensor), torch.stack([w - b0[:, 2], b0[:, 1], w - b0[:, 0], b0[:, 3]], 1))
    assert torch.equal(t["labels"], t0["labels"])
