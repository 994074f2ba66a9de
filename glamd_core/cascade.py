"""Cascade R-CNN (Cai & Vasconcelos, CVPR 2018) on torchvision's Faster R-CNN.

:class:`CascadeRCNN` is a ``FasterRCNN`` whose RoI heads are a 3-stage cascade: each stage is
trained at a higher IoU threshold (0.5 / 0.6 / 0.7) on the boxes the stage before it refined, so
every stage sees inputs of the quality it is trained for. Everything before the RoI heads
(transform, backbone, RPN) is torchvision's, so ``isinstance(model, FasterRCNN)`` holds and the
two-stage distillation of features and RPN applies unchanged.

Where the published implementations differ, we chose:

* Training, stages 2 and 3: the previous stage's *sampled* RoIs, refined by its regression
  (detached), plus the ground-truth boxes again, are re-matched at the stage's threshold and
  re-sampled (512 per image, <= 25 % positive), as mmdetection does -- it is torchvision's own
  ``select_training_samples`` per stage. (The authors' Detectron code keeps every later-stage RoI
  without subsampling; detectron2 re-matches without sampling or re-adding ground truth.)
  Refined boxes that came from ground-truth boxes are kept (mmdetection drops them); refined
  boxes are clipped to the image and those under 1e-3 px wide or tall dropped, as the RPN does.
* Test time: class scores are the mean of the three stages' softmax scores, each stage's head
  applied to the *last* stage's input RoIs; boxes are the last stage's regression of them. This
  is the authors' code (Detectron-Cascade-RCNN, ``TEST_ENSEMBLE``): the three classifiers then
  judge the same hypothesis, the one whose refinement is output. (mmdetection and detectron2
  instead average the scores each stage gave its own input RoIs -- mmdetection the logits --
  which saves two head passes but mixes scores of different boxes.)
* Distillation (``Distiller``'s RoI terms): ``box_roi_pool`` / ``box_head`` / ``box_predictor`` /
  ``box_coder`` / ``assign_targets_to_proposals`` of :class:`CascadeRoIHeads` are stage 1's --
  the stage fed the RPN proposals, i.e. the RoIs those terms are computed on, at Faster R-CNN's
  IoU threshold.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, boxes as box_ops

STAGE_IOU_THRESHOLDS = (0.5, 0.6, 0.7)
STAGE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)


class ClassAgnosticPredictor(FastRCNNPredictor):
    """Class scores and ONE box per RoI: a stage refines each RoI whatever its class, so the next
    stage's input does not hinge on a class guess (the paper's design)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)


class CascadeStage(RoIHeads):
    """One stage. torchvision's ``RoIHeads`` supplies its matching (``Matcher`` with fg = bg =
    ``iou_thresh``, no low-quality matches), sampling and ``BoxCoder``; ``forward`` is just the
    stage's head, as the losses and the postprocessing are the cascade's."""

    def __init__(self, box_roi_pool, box_head, box_predictor, iou_thresh: float, box_weights,
                 batch_size_per_image: int, positive_fraction: float = 0.25):
        super().__init__(box_roi_pool, box_head, box_predictor, iou_thresh, iou_thresh, batch_size_per_image,
                         positive_fraction, box_weights, score_thresh=None, nms_thresh=None, detections_per_img=None)

    def forward(self, features, boxes: list[torch.Tensor], image_shapes) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (R x K) and box deltas (R x 4) of the RoIs ``boxes``."""
        return self.box_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))

    def refine(self, deltas: torch.Tensor, boxes: list[torch.Tensor], image_shapes) -> list[torch.Tensor]:
        """The next stage's RoIs: ``boxes`` moved by ``deltas``, detached (a stage's regression is
        trained by its own loss only, as in the paper), clipped, degenerate ones dropped."""
        decoded = self.box_coder.decode_single(deltas.detach(), torch.cat(boxes)).split([len(b) for b in boxes])
        out = []
        for b, shape in zip(decoded, image_shapes):
            b = box_ops.clip_boxes_to_image(b, shape)
            out.append(b[box_ops.remove_small_boxes(b, 1e-3)])
        return out


def cascade_loss(class_logits, box_regression, labels, regression_targets) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``fastrcnn_loss`` for a class-agnostic box: cross entropy, and smooth L1
    (beta 1/9) summed over the positives over the number of sampled RoIs."""
    labels = torch.cat(labels)
    regression_targets = torch.cat(regression_targets)
    positive = torch.where(labels > 0)[0]
    box_loss = F.smooth_l1_loss(box_regression[positive], regression_targets[positive], beta=1 / 9, reduction="sum")
    return F.cross_entropy(class_logits, labels), box_loss / labels.numel()


class CascadeRoIHeads(nn.Module):
    """Drop-in for ``FasterRCNN.roi_heads``: losses ``loss_classifier_s{i}`` / ``loss_box_reg_s{i}``
    (already times the stage's weight) in train mode, detections in eval mode."""

    def __init__(self, stages, loss_weights=STAGE_LOSS_WEIGHTS, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100):
        super().__init__()
        if len(stages) != len(loss_weights):
            raise ValueError(f"{len(stages)} stages but {len(loss_weights)} loss weights")
        self.stages = nn.ModuleList(stages)
        self.loss_weights = tuple(loss_weights)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    # What code written for Faster R-CNN's RoIHeads (the Distiller's RoI terms) reads: stage 1's.
    @property
    def box_roi_pool(self) -> MultiScaleRoIAlign:
        return self.stages[0].box_roi_pool

    @property
    def box_head(self) -> nn.Module:
        return self.stages[0].box_head

    @property
    def box_predictor(self) -> nn.Module:
        return self.stages[0].box_predictor

    @property
    def box_coder(self):
        return self.stages[0].box_coder

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        return self.stages[0].assign_targets_to_proposals(proposals, gt_boxes, gt_labels)

    def select_training_samples(self, proposals, targets):
        return self.stages[0].select_training_samples(proposals, targets)

    def forward(self, features, proposals: list[torch.Tensor], image_shapes, targets=None):
        if self.training:
            return [], self._losses(features, proposals, image_shapes, targets)
        return self._detect(features, proposals, image_shapes), {}

    def _losses(self, features, proposals, image_shapes, targets) -> dict[str, torch.Tensor]:
        losses, boxes, deltas = {}, proposals, None
        for i, (stage, weight) in enumerate(zip(self.stages, self.loss_weights)):
            if i:
                boxes = self.stages[i - 1].refine(deltas, boxes, image_shapes)
            boxes, _, labels, regression_targets = stage.select_training_samples(boxes, targets)
            logits, deltas = stage(features, boxes, image_shapes)
            cls_loss, box_loss = cascade_loss(logits, deltas, labels, regression_targets)
            losses[f"loss_classifier_s{i + 1}"] = weight * cls_loss
            losses[f"loss_box_reg_s{i + 1}"] = weight * box_loss
        return losses

    def _detect(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        boxes = proposals
        for stage in self.stages[:-1]:
            boxes = stage.refine(stage(features, boxes, image_shapes)[1], boxes, image_shapes)
        rois = self.stages[-1].box_roi_pool(features, boxes, image_shapes)  # every stage scores these
        outputs = [stage.box_predictor(stage.box_head(rois)) for stage in self.stages]
        scores = torch.stack([F.softmax(logits, -1) for logits, _ in outputs]).mean(0)
        final = self.stages[-1].box_coder.decode_single(outputs[-1][1], torch.cat(boxes))
        counts = [len(b) for b in boxes]
        return [self.postprocess(s, b, shape) for s, b, shape in zip(scores.split(counts), final.split(counts),
                                                                       image_shapes)]

    def postprocess(self, scores: torch.Tensor, boxes: torch.Tensor, image_shape) -> dict[str, torch.Tensor]:
        """torchvision's ``postprocess_detections`` for one image, given class probabilities
        (R x K) and one box per RoI (R x 4): every foreground class of a RoI is a candidate."""
        num_classes = scores.shape[1]
        boxes = box_ops.clip_boxes_to_image(boxes, image_shape).repeat_interleave(num_classes - 1, dim=0)
        labels = torch.arange(1, num_classes, device=scores.device).repeat(len(scores))
        scores = scores[:, 1:].reshape(-1)
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


class CascadeRCNN(FasterRCNN):
    """``FasterRCNN`` with :class:`CascadeRoIHeads`. Takes FasterRCNN's arguments (backbone,
    transform, RPN, ``box_roi_pool`` and the ``box_*`` sampling / inference ones) except those
    that are per stage here, plus ``representation_size`` (each stage's TwoMLPHead width)."""

    def __init__(self, backbone, num_classes: int, box_roi_pool: MultiScaleRoIAlign | None = None,
                 representation_size: int = 1024, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, box_batch_size_per_image: int = 512,
                 box_positive_fraction: float = 0.25, stage_iou_thresholds=STAGE_IOU_THRESHOLDS,
                 stage_box_weights=STAGE_BOX_WEIGHTS, stage_loss_weights=STAGE_LOSS_WEIGHTS, **kwargs):
        per_stage = {"box_head", "box_predictor", "box_fg_iou_thresh", "box_bg_iou_thresh", "bbox_reg_weights"}
        if per_stage & set(kwargs):
            raise TypeError(f"{sorted(per_stage & set(kwargs))} are per stage in Cascade R-CNN; use "
                            "representation_size, stage_iou_thresholds and stage_box_weights")
        if len(stage_iou_thresholds) != len(stage_box_weights):
            raise ValueError("stage_iou_thresholds and stage_box_weights need one entry per stage")
        if box_roi_pool is None:
            box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
        in_features = backbone.out_channels * box_roi_pool.output_size[0] * box_roi_pool.output_size[1]
        stages = [CascadeStage(copy.deepcopy(box_roi_pool),  # one each: hooks on stage 1's see stage 1 only
                               TwoMLPHead(in_features, representation_size),
                               ClassAgnosticPredictor(representation_size, num_classes),
                               iou, weights, box_batch_size_per_image, box_positive_fraction)
                  for iou, weights in zip(stage_iou_thresholds, stage_box_weights)]
        roi_heads = CascadeRoIHeads(stages, stage_loss_weights, box_score_thresh, box_nms_thresh,
                                    box_detections_per_img)
        super().__init__(backbone, None, box_roi_pool=roi_heads.box_roi_pool, box_head=roi_heads.box_head,
                         box_predictor=roi_heads.box_predictor, **kwargs)
        self.roi_heads = roi_heads  # replaces the single-stage RoIHeads FasterRCNN built around stage 1


__all__ = ["STAGE_BOX_WEIGHTS", "STAGE_IOU_THRESHOLDS", "STAGE_LOSS_WEIGHTS", "CascadeRCNN", "CascadeRoIHeads",
           "CascadeStage", "ClassAgnosticPredictor", "cascade_loss"]
