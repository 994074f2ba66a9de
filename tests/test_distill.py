import copy

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from glamd_core.data import splits as data_splits
from glamd_core import losses as L
from glamd_core.data import VOCDetection, train_transforms
from glamd_core.data.base import collate
from glamd_core.detectors import build_detector
from glamd_core.distill import Distiller, DistillConfig
from glamd_core.data.base import to_device
from glamd_core.engine import TrainConfig, train

from test_detectors import TINY, _batch

DISTILL_KEYS = {"distill_feat", "distill_cls", "distill_loc"}
# DeFeat distils features, and RoI classes for two-stage detectors; no dense heads, no boxes.
DEFEAT_KEYS = {"retinanet": {"distill_feat"}, "faster_rcnn": {"distill_feat", "distill_cls"}}


def _pair(kind, num_classes=4, student_backbone="resnet10t", student_fpn=16):
    torch.manual_seed(0)
    teacher = build_detector(kind, "resnet18", num_classes, **TINY)
    student = build_detector(kind, student_backbone, num_classes, **(TINY | dict(fpn_channels=student_fpn)))
    return teacher, student


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
@pytest.mark.parametrize("method", ["glamd", "global", "local", "uniform"])
def test_gradients_reach_the_student_only(kind, method):
    teacher, student = _pair(kind)
    before = copy.deepcopy(teacher.state_dict())
    d = Distiller(teacher, student, DistillConfig(method=method)).train()
    assert not teacher.training
    losses = d(*_batch())
    assert DISTILL_KEYS <= set(losses)
    sum(losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert next(student.backbone.body.parameters()).grad.abs().sum() > 0
    assert all(a.weight.grad is not None for a in d.adapters)
    for k, v in teacher.state_dict().items():  # BN running stats untouched too
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
@pytest.mark.parametrize("method", ["glamd", "defeat"])
def test_distillation_losses_vanish_when_student_is_the_teacher(kind, method):
    teacher, _ = _pair(kind)
    student = copy.deepcopy(teacher)
    d = Distiller(teacher, student, DistillConfig(method=method)).train()
    for m in student.modules():  # batch statistics would differ from the teacher's running ones
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        for a in d.adapters:
            a.weight.copy_(torch.eye(a.weight.shape[0]).reshape_as(a.weight))
            a.bias.zero_()
    losses = d(*_batch())
    expected = DISTILL_KEYS if method == "glamd" else DEFEAT_KEYS[kind]
    assert set(losses) & DISTILL_KEYS == expected
    for k in expected:
        assert float(losses[k].detach()) == pytest.approx(0.0, abs=1e-5), k


def test_method_none_and_weights_switch_terms_off():
    teacher, student = _pair("retinanet")
    plain = Distiller(teacher, student, DistillConfig(method="none")).train()(*_batch())
    assert set(plain) == {"classification", "bbox_regression"}
    only_feat = Distiller(teacher, student, DistillConfig(beta=0, gamma=0)).train()(*_batch())
    assert set(only_feat) - set(plain) == {"distill_feat"}
    torch.manual_seed(5)
    one = Distiller(teacher, student, DistillConfig(alpha=1.0, beta=0, gamma=0)).train()
    torch.manual_seed(5)
    two = Distiller(teacher, student, DistillConfig(alpha=2.0, beta=0, gamma=0)).train()
    batch = _batch()
    assert float(two(*batch)["distill_feat"].detach()) == pytest.approx(2 * float(one(*batch)["distill_feat"].detach()))


def test_bad_pairs_and_configs_are_rejected():
    r, _ = _pair("retinanet")
    f, _ = _pair("faster_rcnn")
    with pytest.raises(TypeError, match="same detector kind"):
        Distiller(r, f)
    with pytest.raises(ValueError, match="method"):
        DistillConfig(method="fitnet")
    with pytest.raises(ValueError, match="alpha must be a number from 0 to 1000"):
        DistillConfig(alpha=-1)


def test_eval_mode_returns_the_students_detections():
    teacher, student = _pair("retinanet")
    d = Distiller(teacher, student).eval()
    images, _ = _batch()
    with torch.no_grad():
        out = d(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
@pytest.mark.parametrize("method", ["glamd", "defeat"])
def test_a_distiller_training_run_reduces_the_distillation_loss(synthetic_root, tmp_path, kind, method):
    ds = VOCDetection(synthetic_root, "train", transforms=train_transforms(hflip=0.0), skip_ignored=True)
    ds.records = ds.records[:4]
    batch = to_device(*collate([ds[i] for i in range(4)]), "cpu")
    teacher, student = _pair(kind, ds.num_classes)
    d = Distiller(teacher, student, DistillConfig(method=method))

    def distill_loss():
        d.train()
        torch.manual_seed(1)
        with torch.no_grad():
            return float(sum(v for k, v in d(*batch).items() if k in DISTILL_KEYS))

    before = distill_loss()
    train(d, ds, TrainConfig(epochs=6, batch_size=4, lr=1e-3, warmup_iters=1, progress=False), tmp_path)
    after = distill_loss()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_defeat_gradients_reach_the_student_only(kind):
    teacher, student = _pair(kind)
    d = Distiller(teacher, student, DistillConfig(method="defeat")).train()
    losses = d(*_batch())
    assert set(losses) & DISTILL_KEYS == DEFEAT_KEYS[kind]
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(a.weight.grad is not None for a in d.adapters)


def test_defeat_splits_foreground_from_background_and_positive_from_negative_rois():
    """Each weight scales exactly its own part: the loss is linear in (fg, bg) and in (pos, neg)."""
    teacher, student = _pair("faster_rcnn")
    batch = _batch()

    def losses(keep=None, **weights):
        torch.manual_seed(3)  # the same RoI sampling in every call
        d = Distiller(teacher, student, DistillConfig(method="defeat", **weights)).train()
        torch.manual_seed(4)
        with torch.no_grad():
            out = {k: float(v) for k, v in d(*batch).items() if k in DISTILL_KEYS}
        if keep is not None:
            keep.append(d)
        return out

    fg = losses(defeat_fg_weight=1.0, defeat_bg_weight=0.0)["distill_feat"]
    bg = losses(defeat_fg_weight=0.0, defeat_bg_weight=1.0)["distill_feat"]
    both = losses(defeat_fg_weight=2.0, defeat_bg_weight=3.0)["distill_feat"]
    assert fg > 0 and bg > 0 and both == pytest.approx(2 * fg + 3 * bg, rel=1e-5)
    kept = []
    pos = losses(kept, defeat_roi_pos_weight=1.0, defeat_roi_neg_weight=0.0)["distill_cls"]
    # reference: positive RoIs = IoU >= 0.5 with some ground-truth box (the box head's fg threshold)
    d = kept[0]
    with torch.no_grad():
        proposals, _, (s_logits, _), (t_logits, _) = d.teacher_on_student_rois()
    gts = [t["boxes"] for t in d.targets()]
    positive = torch.cat([box_iou(p, g).max(dim=1).values >= 0.5 if len(g) else torch.zeros(len(p), dtype=torch.bool)
                          for p, g in zip(proposals, gts)])  # the batch's second image has no objects
    assert 0 < positive.sum() < len(positive)
    want = L.softmax_distill_loss(s_logits, t_logits, positive.float(), d.config.roi_temperature)
    assert pos == pytest.approx(float(want), rel=1e-5)
    neg = losses(defeat_roi_pos_weight=0.0, defeat_roi_neg_weight=1.0)["distill_cls"]
    mixed = losses(defeat_roi_pos_weight=2.0, defeat_roi_neg_weight=5.0)["distill_cls"]
    assert pos > 0 and neg > 0 and mixed == pytest.approx(2 * pos + 5 * neg, rel=1e-5)


@pytest.mark.parametrize("form", ["reference", "normalised"])
@pytest.mark.parametrize("method", ["glamd", "defeat"])
def test_faster_rcnn_on_p2_to_p6_as_the_reference_distils_every_level(form, method):
    """The authors' Faster R-CNN pyramid is P2-P6: ``out_indices=(1, 2, 3, 4)`` builds it."""
    torch.manual_seed(0)
    p2 = dict(TINY, out_indices=(1, 2, 3, 4))
    teacher = build_detector("faster_rcnn", "resnet18", 4, **p2)
    student = build_detector("faster_rcnn", "resnet10t", 4, **(p2 | dict(fpn_channels=16)))
    d = Distiller(teacher, student, DistillConfig(method, loss_form=form)).train()
    assert len(d.adapters) == 5  # P2-P5 and the max-pooled P6
    losses = d(*_batch())
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) and v > 0 for k, v in losses.items() if k.startswith("distill_"))
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in d.adapters)


def test_defeat_teacher_sampled_rois_depend_on_the_teacher_only():
    """defeat_roi_sampling="teacher" (DeFeat's official sampling): the RoIs of the KL come from the
    teacher's RPN and sampler, so changing the student's RPN leaves them as they were (while the
    student-sampled ones move), the student's own RoI taps are left alone, and gradients reach the
    student's RoI head."""
    teacher, student = _pair("faster_rcnn")
    batch = _batch()

    def rois(sampling):
        torch.manual_seed(3)
        d = Distiller(teacher, student, DistillConfig(method="defeat", distill_roi=True,
                                                      defeat_roi_sampling=sampling)).train()
        torch.manual_seed(4)
        losses = d(*batch)
        taps = [p.clone() for p in d._tap["proposals"]]
        torch.manual_seed(5)
        got = d.teacher_sampled_rois() if sampling == "teacher" else d.teacher_on_student_rois()
        assert all(torch.equal(a, b) for a, b in zip(taps, d._tap["proposals"]))  # hooks bypassed
        return got[0], losses

    before, losses = rois("teacher")
    student_before, _ = rois("student")
    losses["distill_cls"].backward()
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    # the teacher's sampler keeps its batch size per image (both images have enough proposals)
    assert [len(p) for p in before] == [teacher.roi_heads.fg_bg_sampler.batch_size_per_image] * 2
    with torch.no_grad():
        for p in student.rpn.parameters():
            p.mul_(-3.0)
    after, _ = rois("teacher")
    student_after, _ = rois("student")
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(student_before, student_after))


def test_a_setting_added_later_keeps_earlier_runs_keys(tmp_path):
    """defeat_roi_sampling came after runs were cached: at its old behaviour ("student") a run's key
    is the key it always had; "teacher" is another run."""
    from glamd_core import run_key, runs
    from glamd_core.profiles import get_profile

    profile = get_profile("smoke")

    def where(**kw):
        return runs.run_dir_of("faster_rcnn", profile.student_backbone, profile, 0, tmp_path,
                               distill=DistillConfig("defeat", **kw), teacher_backbone=profile.teacher_backbone,
                               data_dir=tmp_path / "data")

    root = data_splits.dataset_root(profile, data_dir=tmp_path / "data")  # keys name the dataset's content
    _, config = run_key.distilled_run("faster_rcnn", profile.student_backbone, profile, DistillConfig("defeat"), 0,
                                   root, "teacher")
    assert "defeat_roi_sampling" not in config["distill"] and "defeat_levels" in config["distill"]
    assert where() == where(defeat_roi_sampling="student") != where(defeat_roi_sampling="teacher")
    with pytest.raises(ValueError, match="defeat_roi_sampling"):
        DistillConfig("defeat", defeat_roi_sampling="both")
