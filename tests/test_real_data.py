"""The paper profiles' path through the run cache: real VOC (07+12) and COCO layouts, found by
parameter / environment variable, ImageNet backbones from local files, per-kind settings."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from glamd_core.data import splits as data_splits
from glamd_core import profiles, run_key, runs
from glamd_core.experiments import Experiment, run
from glamd_core.paper_check import write_coco, write_voc, write_weights
from glamd_core.profiles import PROFILES, get_profile

SMOKE = get_profile("smoke")


def _voc_devkit(root, tmp_path):
    """VOCdevkit/VOC2007 (trainval 6, test 4) and VOC2012 (trainval 6) at 64 px."""
    return write_voc(root, tmp_path, 64, 64, trainval=6, test=4)


def _coco(root, tmp_path):
    """coco/annotations/instances_{train,val}2017.json with train2017/ (8) and val2017/ (4) at 64 px."""
    return write_coco(root, tmp_path, 64, 64, train=8, val=4)


def _tiny(name):
    """The paper profile ``name`` at smoke size on CPU: its data spec, splits and weights path unchanged."""
    paper = get_profile(name)
    return replace(paper, name=f"tiny_{name}", detector=SMOKE.detector, train=SMOKE.train,
                   teacher_backbone=SMOKE.teacher_backbone, student_backbone=SMOKE.student_backbone, by_kind={})


@pytest.mark.parametrize("name,make,count", [("paper_voc", _voc_devkit, 12), ("paper_coco", _coco, 8)])
def test_a_paper_profile_trains_and_distils_on_its_real_layout(tmp_path, monkeypatch, name, make, count):
    root = make(tmp_path / "dataset", tmp_path)
    monkeypatch.setitem(PROFILES, f"tiny_{name}", _tiny(name))
    monkeypatch.setenv("GLAMD_WEIGHTS", str(write_weights(tmp_path / "weights", ("resnet18", "resnet10t"))))
    monkeypatch.setenv(get_profile(name).data.env, str(root))  # found by its environment variable
    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    profile = get_profile(f"tiny_{name}")
    assert data_splits.load_split(profile, root, "train").__len__() == count  # VOC: 6 + 6 trainval images, 07+12
    teacher = run(Experiment("retinanet", "teacher", f"tiny_{name}"), **kw)
    student = run(Experiment("retinanet", "glamd", f"tiny_{name}"), **kw)
    for r in (teacher, student):
        assert set(r["metrics"]) == {"test"}  # no val split in real data; test is reported
        assert 0 <= r["metrics"]["test"]["AP"] <= 1
    config = json.loads((tmp_path / "runs" / student["run_dir"] / "config.json").read_text())
    # keyed by what the data is, not where it is mounted; the starting weights by file name and size
    assert config["data"].startswith(profile.data.layout) and str(root) not in config["data"]
    size = (tmp_path / "weights" / "resnet10t.pth").stat().st_size
    assert config["pretrained_backbone"] == f"resnet10t.pth {size} bytes"
    # the same dataset elsewhere, given by data_root: the same run, found, not retrained
    moved = shutil.move(root, tmp_path / "moved")
    monkeypatch.delenv(get_profile(name).data.env)
    again = run(Experiment("retinanet", "glamd", f"tiny_{name}"), data_root=moved, **kw)
    assert again["run_dir"] == student["run_dir"] and again["metrics"] == student["metrics"]


def test_the_student_starts_from_the_local_imagenet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("GLAMD_WEIGHTS", str(write_weights(tmp_path / "weights", ("resnet10t",))))
    saved = torch.load(tmp_path / "weights" / "resnet10t.pth")
    spec = runs.run_spec("retinanet", "resnet10t", replace(SMOKE, pretrained_backbones=True), runs_dir=tmp_path / "runs",
                         data_dir=tmp_path / "data")
    model = runs.build_detector("retinanet", "resnet10t", 3, **spec.detector)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["conv1.0.weight"], saved["conv1.0.weight"])
    assert replace(spec, profile=SMOKE).detector == SMOKE.detector  # profiles without pretrained backbones


def test_missing_real_data_and_weights_say_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.delenv("GLAMD_COCO_ROOT", raising=False)
    monkeypatch.delenv("GLAMD_VOC_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="(?s)COCO dataset not found.*instances_train2017.json.*GLAMD_COCO_ROOT"):
        data_splits.dataset_root(get_profile("paper_coco"), data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="(?s)VOC2012.*trainval.txt.*data_root"):
        data_splits.dataset_root(get_profile("paper_voc"), data_root=tmp_path / "VOCdevkit")
    # naming where a run would live needs no data
    assert data_splits.dataset_root(get_profile("paper_voc"), data_dir=tmp_path, generate=False) == tmp_path / "VOCdevkit"
    monkeypatch.setenv("GLAMD_WEIGHTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"(?s)resnet50.*{tmp_path}/resnet50.safetensors.*GLAMD_WEIGHTS"):
        run_key.backbone_weights("resnet50")


def test_paper_profiles_as_data():
    voc, coco = get_profile("paper_voc"), get_profile("paper_coco")
    assert data_splits.splits(voc) == {"train": "VOC2007/trainval+VOC2012/trainval", "test": "VOC2007/test"}
    assert data_splits.splits(coco) == {"train": "train2017", "test": "val2017"}
    assert (voc.teacher_backbone, voc.student_backbone) == ("resnet34", "resnet18")
    # per kind: RetinaNet's ResNeXt101 teacher at mmdetection's RetinaNet lr; the R-CNNs' ResNet101 at 0.02
    assert Experiment("retinanet", "teacher", "paper_coco").teacher_backbone == "resnext101_64x4d"
    assert Experiment("retinanet", "none", "paper_coco").resolved_profile().train.lr == 0.01
    for kind in ("faster_rcnn", "cascade_rcnn"):
        exp = Experiment(kind, "glamd", "paper_coco")
        assert (exp.teacher_backbone, exp.student_backbone, exp.resolved_profile().train.lr) == ("resnet101", "resnet50", 0.02)
        assert exp.distill_config().loss_form == "reference"  # no val split to tune on: the published form
        assert not exp.distill_config().teacher_cache  # terabytes at this size: the teacher runs online
    assert coco.detector["image_size"] == 800 and coco.detector["max_size"] == 1333
    # ImageNet-initialised backbones keep their BN statistics (2 images per GPU would be noise)
    model = runs.build_detector("retinanet", "resnet10t", 3, **(SMOKE.detector | dict(frozen_bn=voc.detector["frozen_bn"])))
    kinds = {type(m).__name__ for m in model.backbone.body.modules()}
    assert "FrozenBatchNorm2d" in kinds and "BatchNorm2d" not in kinds
    model.train()
    before = {k: v.clone() for k, v in model.backbone.body.state_dict().items()}
    model([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([1])}])
    assert all(torch.equal(before[k], v) for k, v in model.backbone.body.state_dict().items())  # no statistics move
    # the stem and stage 1 are not trained (mmdetection's frozen_stages=1); the rest is
    model = runs.build_detector("retinanet", "resnet10t", 3, **(SMOKE.detector | dict(frozen_stages=voc.detector["frozen_stages"])))
    trains = {name: any(p.requires_grad for p in child.parameters()) for name, child in model.backbone.body.named_children()
              if any(True for _ in child.parameters())}
    assert trains == {"conv1": False, "bn1": False, "layer1": False, "layer2": True, "layer3": True, "layer4": True}
    with pytest.raises(ValueError, match="frozen_stages=5"):
        runs.build_detector("retinanet", "resnet10t", 3, **(SMOKE.detector | dict(frozen_stages=5)))
    assert profiles.PROFILES["cpu"].for_kind("retinanet") is profiles.PROFILES["cpu"]
