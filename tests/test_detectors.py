import pytest
import timm
import torch

from glamd_core import detectors
from glamd_core.detectors import build_detector, load_weights

TINY = dict(image_size=64, fpn_channels=32, rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=50,
            rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=32,
            rpn_batch_size_per_image=32, box_representation_size=64)


def _batch():
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    return images, targets


@pytest.mark.parametrize("kind,keys", [
    ("retinanet", {"classification", "bbox_regression"}),
    ("faster_rcnn", {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}),
])
def test_train_mode_gives_losses_and_eval_mode_gives_detections(kind, keys):
    model = build_detector(kind, "resnet18", num_classes=4, **TINY)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == keys
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        assert (o["labels"] >= 1).all() and (o["labels"] < 4).all()


def test_backbone_exposes_fpn_levels_with_the_right_strides():
    model = build_detector("retinanet", "resnet34", num_classes=3, **TINY)
    feats = model.backbone(torch.rand(1, 3, 64, 64))
    assert list(feats) == ["0", "1", "2", "p6", "p7"]
    assert [f.shape[-1] for f in feats.values()] == [8, 4, 2, 1, 1]
    assert all(f.shape[1] == 32 for f in feats.values())
    assert model.backbone.strides == (8, 16, 32)


def test_bad_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="unknown detector kind 'yolo'"):
        build_detector("yolo", "resnet18", 3)
    with pytest.raises(ValueError, match="unknown timm backbone 'resnet_nope'"):
        build_detector("retinanet", "resnet_nope", 3)
    with pytest.raises(TypeError, match="unknown detector option.*anchor_sise"):
        build_detector("retinanet", "resnet18", 3, anchor_sise=3)
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("retinanet", "resnet18", 1)
    with pytest.raises(ValueError, match="strides"):
        build_detector("retinanet", "resnet18", 3, out_indices=(1, 3, 4))


def test_pretrained_offline_explains_how_to_supply_weights(monkeypatch):
    real_create = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained and "pretrained_cfg_overlay" not in kw:
            raise OSError("Name or service not known")
        return real_create(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(detectors.timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="(?s)resnet18.*no access.*backbone_checkpoint='weights/resnet18"):
        build_detector("retinanet", "resnet18", 3, pretrained=True, **TINY)


def test_local_backbone_checkpoint_and_detector_checkpoint_are_loaded(tmp_path):
    src = timm.create_model("resnet18")
    torch.save(src.state_dict(), tmp_path / "resnet18.pth")
    model = build_detector("retinanet", "resnet18", 3, backbone_checkpoint=tmp_path / "resnet18.pth", **TINY)
    assert torch.equal(model.backbone.body.conv1.weight, src.conv1.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_detector("retinanet", "resnet18", 3, backbone_checkpoint=tmp_path / "missing.pth", **TINY)

    teacher = build_detector("faster_rcnn", "resnet18", 3, **TINY)
    torch.save({"model": teacher.state_dict(), "epoch": 3}, tmp_path / "teacher.pt")
    again = build_detector("faster_rcnn", "resnet18", 3, checkpoint=tmp_path / "teacher.pt", **TINY)
    for (k, a), (_, b) in zip(teacher.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    other = build_detector("faster_rcnn", "resnet34", 3, **TINY)
    with pytest.raises(RuntimeError, match="does not fit"):
        load_weights(other, tmp_path / "teacher.pt")
