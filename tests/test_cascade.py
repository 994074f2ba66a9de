import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BoxCoder

from glamd_core.cascade import CascadeRCNN, CascadeRoIHeads
from glamd_core.detectors import build_detector, load_weights
from glamd_core.distill import Distiller, DistillConfig

from test_detectors import TINY, _batch

RPN_KEYS = {"loss_objectness", "loss_rpn_box_reg"}
STAGE_KEYS = {f"loss_{name}_s{i}" for name in ("classifier", "box_reg") for i in (1, 2, 3)}


def _cascade(num_classes=4, backbone="resnet18", **options):
    return build_detector("cascade_rcnn", backbone, num_classes, **(TINY | options))


def test_train_mode_gives_rpn_and_stage_losses():
    model = _cascade().train()
    assert isinstance(model, FasterRCNN) and isinstance(model.roi_heads, CascadeRoIHeads)
    losses = model(*_batch())
    assert set(losses) == RPN_KEYS | STAGE_KEYS
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0
    for stage in model.roi_heads.stages:
        assert stage.box_predictor.cls_score.weight.grad.abs().sum() > 0
        assert stage.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_eval_mode_gives_consistent_detections():
    model = _cascade().eval()
    images, _ = _batch()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    assert sum(len(o["boxes"]) for o in out) > 0  # an untrained head still scores some RoIs over 0.05
    for o in out:
        assert set(o) == {"boxes", "labels", "scores"}
        n = len(o["boxes"])
        assert o["boxes"].shape == (n, 4) and o["labels"].shape == (n,) and o["scores"].shape == (n,)
        assert ((o["labels"] >= 1) & (o["labels"] < 4)).all()
        assert ((o["scores"] > 0.05) & (o["scores"] <= 1)).all()
        assert (o["boxes"] >= 0).all() and (o["boxes"] <= 64).all()  # clipped to the 64 x 64 image
        assert n <= model.roi_heads.detections_per_img


def test_each_stage_labels_at_its_own_iou_threshold():
    """Proposals at IoU 0.55 / 0.65 / 0.75 with one ground-truth box: positive from the stage whose
    threshold they reach, background (0) after; no low-quality rescue of the best match."""
    stages = _cascade().roi_heads.stages
    gt, gt_label = torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([3])
    proposals = torch.tensor([[0.0, 0.0, 100.0, 55.0], [0.0, 0.0, 100.0, 65.0], [0.0, 0.0, 100.0, 75.0]])
    expected = {0: [3, 3, 3], 1: [0, 3, 3], 2: [0, 0, 3]}
    for i, stage in enumerate(stages):
        matched, labels = stage.assign_targets_to_proposals([proposals], [gt], [gt_label])
        assert labels[0].tolist() == expected[i], i
        assert matched[0].tolist() == [0, 0, 0]
    # The stage's training samples (ground truth added, as torchvision does) and their regression
    # targets, encoded with the stage's own coder.
    stage = stages[1]
    boxes, _, labels, targets = stage.select_training_samples([proposals], [{"boxes": gt, "labels": gt_label}])
    assert len(boxes[0]) == 4  # 3 proposals + the ground-truth box, all kept (32 per image, <= 8 positive)
    iou = torch.tensor([{55.0: 0.55, 65.0: 0.65, 75.0: 0.75, 100.0: 1.0}[float(b[3])] for b in boxes[0]])
    assert labels[0].tolist() == [3 if v >= 0.6 else 0 for v in iou.tolist()]
    want = BoxCoder((20.0, 20.0, 10.0, 10.0)).encode_single(gt.expand(4, 4), boxes[0])
    torch.testing.assert_close(targets[0], want)


def test_published_stage_settings_and_detached_refinement():
    heads = _cascade().roi_heads
    assert [s.box_coder.weights for s in heads.stages] == [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                                           (30.0, 30.0, 15.0, 15.0)]
    assert [(s.proposal_matcher.high_threshold, s.proposal_matcher.low_threshold) for s in heads.stages] == \
        [(0.5, 0.5), (0.6, 0.6), (0.7, 0.7)]
    assert not any(s.proposal_matcher.allow_low_quality_matches for s in heads.stages)
    assert heads.loss_weights == (1.0, 0.5, 0.25)
    assert [s.fg_bg_sampler.positive_fraction for s in heads.stages] == [0.25] * 3
    assert all(s.box_predictor.bbox_pred.out_features == 4 and s.box_predictor.cls_score.out_features == 4
               for s in heads.stages)  # class-agnostic boxes, K class scores
    # Compatibility view for the Distiller: stage 1's modules.
    assert heads.box_predictor is heads.stages[0].box_predictor and heads.box_coder is heads.stages[0].box_coder
    assert heads.box_roi_pool is heads.stages[0].box_roi_pool is not heads.stages[1].box_roi_pool
    with pytest.raises(TypeError, match="per stage"):
        CascadeRCNN(nn.Identity(), 3, bbox_reg_weights=(1.0, 1.0, 1.0, 1.0))

    model = _cascade().train()
    losses = model(*_batch())
    # Stage 3's loss reaches the shared backbone but not stages 1 and 2: their boxes enter it detached.
    (losses["loss_classifier_s3"] + losses["loss_box_reg_s3"]).backward(retain_graph=True)
    stages = model.roi_heads.stages
    assert all(p.grad is None for s in stages[:2] for p in s.parameters())
    assert stages[2].box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    (losses["loss_classifier_s2"] + losses["loss_box_reg_s2"]).backward()
    assert all(p.grad is None for p in stages[0].parameters())
    assert stages[1].box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_a_few_optimizer_steps_reduce_the_loss():
    model = _cascade().train()
    batch = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def total(grad: bool):
        torch.manual_seed(7)  # the same RoI sampling in both measurements
        with torch.set_grad_enabled(grad):
            return sum(model(*batch).values())

    before = float(total(False))
    for _ in range(8):
        opt.zero_grad()
        loss = total(True)
        loss.backward()
        opt.step()
    after = float(total(False))
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("form", ["reference", "normalised"])
@pytest.mark.parametrize("method", ["glamd", "defeat"])
def test_distiller_on_cascade(method, form):
    """Features and RPN as Faster R-CNN; the normalised form's RoI terms go to stage 1's head only."""
    torch.manual_seed(0)
    teacher = _cascade()
    student = _cascade(backbone="resnet10t", fpn_channels=16)
    d = Distiller(teacher, student, DistillConfig(method, loss_form=form)).train()
    assert d.two_stage
    losses = d(*_batch())
    assert STAGE_KEYS | RPN_KEYS <= set(losses)
    distill = {k: v for k, v in losses.items() if k.startswith("distill_")}
    want = {"glamd": {"distill_feat", "distill_cls", "distill_loc"},
            "defeat": {"distill_feat"} | ({"distill_cls"} if form == "normalised" else set())}[method]
    assert set(distill) == want
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(distill.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert next(student.backbone.body.parameters()).grad.abs().sum() > 0
    assert all(a.weight.grad is not None and torch.isfinite(a.weight.grad).all() for a in d.adapters)
    rpn_grad = student.rpn.head.cls_logits.weight.grad
    assert (rpn_grad is not None and rpn_grad.abs().sum() > 0) == (method == "glamd")  # DeFeat has no RPN term
    stages = student.roi_heads.stages
    roi_grad = stages[0].box_predictor.cls_score.weight.grad
    assert (roi_grad is not None and roi_grad.abs().sum() > 0) == (form == "normalised")
    if form == "normalised" and method == "glamd":  # the class-agnostic box term
        assert stages[0].box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    assert all(p.grad is None for s in stages[1:] for p in s.parameters())


def test_faster_and_cascade_rcnn_are_not_a_pair():
    with pytest.raises(TypeError, match="same detector kind"):
        Distiller(build_detector("faster_rcnn", "resnet18", 4, **TINY), _cascade())


def test_checkpoint_round_trip(tmp_path):
    model = _cascade()
    torch.save({"model": model.state_dict()}, tmp_path / "cascade.pt")
    again = build_detector("cascade_rcnn", "resnet18", 4, checkpoint=tmp_path / "cascade.pt", **TINY)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    torch.save(build_detector("faster_rcnn", "resnet18", 4, **TINY).state_dict(), tmp_path / "faster.pt")
    with pytest.raises(RuntimeError, match="does not fit"):
        load_weights(model, tmp_path / "faster.pt")


class _FixedPredictor(nn.Module):
    """Class probabilities ``probs`` and deltas ``deltas`` for every RoI."""

    def __init__(self, probs, deltas=(0.0, 0.0, 0.0, 0.0)):
        super().__init__()
        self.register_buffer("logits", torch.tensor(probs).log())
        self.register_buffer("deltas", torch.tensor(deltas))

    def forward(self, x):
        return self.logits.expand(len(x), -1), self.deltas.expand(len(x), -1)


def test_eval_scores_are_the_mean_of_the_stages_softmax_on_the_last_stages_rois():
    model = _cascade(num_classes=3).eval()
    probs = [[0.2, 0.7, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]]  # mean: [0.3, 0.4, 0.3]
    deltas = [(0.5, 0.0, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)]  # stages 1, 2 move the boxes
    stages = model.roi_heads.stages
    head_inputs = [[] for _ in stages]
    for stage, p, dl, seen in zip(stages, probs, deltas, head_inputs):
        stage.box_predictor = _FixedPredictor(p, dl)
        stage.box_head.register_forward_hook(lambda m, args, out, seen=seen: seen.append(args[0]))
    with torch.no_grad():
        out = model(_batch()[0])
    labels, scores = torch.cat([o["labels"] for o in out]), torch.cat([o["scores"] for o in out])
    assert (labels == 1).any() and (labels == 2).any()
    torch.testing.assert_close(scores[labels == 1], torch.full_like(scores[labels == 1], 0.4))
    torch.testing.assert_close(scores[labels == 2], torch.full_like(scores[labels == 2], 0.3))
    # Every stage's classifier scored the last stage's input RoIs (stages 1 and 2 also ran on their own).
    assert [len(s) for s in head_inputs] == [2, 2, 1]
    assert not torch.equal(head_inputs[0][0], head_inputs[0][1])
    assert torch.equal(head_inputs[0][1], head_inputs[2][0]) and torch.equal(head_inputs[1][1], head_inputs[2][0])
