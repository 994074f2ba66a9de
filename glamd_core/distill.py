"""Teacher + student wrapper that adds the distillation losses to the student's own.

``Distiller(teacher, student, DistillConfig(method="glamd"))`` is trained like a detector:
``forward(images, targets)`` returns the student's loss dict plus ``distill_feat``,
``distill_cls`` and ``distill_loc`` (already multiplied by alpha, beta, gamma). Nothing of
torchvision is forked: forward hooks on the student tap the transformed batch, the FPN maps,
the anchors and the head outputs; the teacher is run on the *same* transformed tensors under
``no_grad`` (its own transform would resize differently in eval mode, and its NMS is not needed).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from . import losses as L
from .masks import box_foreground_mask, glam
from .teacher_cache import TeacherCache, TeacherOutputs, dense_outputs, fingerprint, run_teacher

METHODS = ("none", "global", "local", "glamd", "uniform", "defeat")
NOT_KEYED = ("teacher_cache",)  # DistillConfig fields that change speed, not results
_MASK_MODE = {"global": "global", "local": "local", "glamd": "both", "uniform": "uniform"}


@dataclass
class DistillConfig:
    method: str = "glamd"  # none | global (Zhang & Ma) | local | glamd | uniform ("w/o GLAM") | defeat
    alpha: float = 1.0  # feature imitation (+ attention transfer)
    beta: float = 1.0  # classification head
    gamma: float = 1.0  # localization head
    attention_weight: float = 1.0  # attention-transfer terms, relative to the imitation term
    patch_size: int = 7  # local patches in feature-map cells, the same at every FPN level (the paper's default)
    # Zhang & Ma use 0.5 in their two-stage code and 0.1 in their one-stage code; the GLAMD paper
    # does not say. We use 0.5 for both, so the kinds differ only where the detectors do.
    temperature: float = 0.5
    distill_rpn: bool = True  # two-stage: distill the RPN's dense outputs
    distill_roi: bool = True  # two-stage: distill the RoI head on the student's sampled RoIs
    roi_temperature: float = 1.0  # softmax temperature of the RoI class KL
    # DeFeat (Guo et al., CVPR 2021), method "defeat": feature imitation split into ground-truth-box
    # cells and the rest, and (two-stage) RoI-class KL split into positive and negative RoIs, each
    # part normalised by its own size. Its authors' COCO feature weights are 4 / 16 (DESIGN.md) on
    # unnormalised sums; our parts are means, so we keep their 1:4 ratio scaled to sum 1. Then, as
    # for every other method, alpha = 1 gives a feature term of the size of the plain mean squared
    # difference (4 / 16 as such would make DeFeat's term ~20x GLAMD's and the comparison a
    # comparison of loss scales). The RoI parts get 1 / 1, as the paper's Table 3 does not state them.
    defeat_fg_weight: float = 0.2
    defeat_bg_weight: float = 0.8
    defeat_roi_pos_weight: float = 1.0
    defeat_roi_neg_weight: float = 1.0
    # Read the teacher's outputs from the run cache's teacher-output cache (glamd_core.teacher_cache)
    # instead of running it. Speed only: results do not depend on it, so it is not part of a run's key.
    teacher_cache: bool = True

    def __post_init__(self):
        """Every setting is checked here, when the config is made: a bad one must fail before a
        teacher trains for minutes, and name itself (not surface later as NaN masks or a torch error)."""
        if self.method not in METHODS:
            raise ValueError(f"distillation method must be one of {METHODS}, got {self.method!r}")
        for name in ("alpha", "beta", "gamma", "attention_weight", "defeat_fg_weight", "defeat_bg_weight",
                     "defeat_roi_pos_weight", "defeat_roi_neg_weight"):
            _check_number(name, getattr(self, name), lambda v: v >= 0, "a finite number >= 0")
            setattr(self, name, float(getattr(self, name)))  # alpha=1 and alpha=1.0 are one run, one key
        for name in ("temperature", "roi_temperature"):
            _check_number(name, getattr(self, name), lambda v: v > 0, "a finite number > 0")
            setattr(self, name, float(getattr(self, name)))
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, numbers.Integral) \
                or self.patch_size < 1:  # True and 3.0 are not patch sizes
            raise ValueError(f"DistillConfig.patch_size must be a positive integer (feature-map cells), "
                             f"got {self.patch_size!r}")
        self.patch_size = int(self.patch_size)  # numpy integers too: run keys are made from plain ints
        for name in ("distill_rpn", "distill_roi", "teacher_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DistillConfig.{name} must be True or False, got {getattr(self, name)!r}")


def _check_number(name: str, value, ok, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"DistillConfig.{name} must be {what}, got {value!r}")


def _levels(model) -> int:
    gen = model.anchor_generator if isinstance(model, RetinaNet) else model.rpn.anchor_generator
    return len(gen.sizes)


def _fpn_channels(model) -> int:
    return model.backbone.out_channels


class Distiller(nn.Module):
    """``teacher_cache``: a :class:`~glamd_core.teacher_cache.TeacherCache` built for this very
    teacher (checked by a fingerprint of its weights); batches it holds skip the teacher's backbone
    and dense head, the rest run the teacher online."""

    def __init__(self, teacher: nn.Module, student: nn.Module, config: DistillConfig = DistillConfig(),
                 teacher_cache: TeacherCache | None = None):
        super().__init__()
        if type(teacher) is not type(student) or not isinstance(student, (RetinaNet, FasterRCNN)):
            raise TypeError(f"teacher and student must be the same detector kind (RetinaNet or FasterRCNN), "
                            f"got {type(teacher).__name__} and {type(student).__name__}")
        if (teacher.transform.image_mean, teacher.transform.image_std) != \
                (student.transform.image_mean, student.transform.image_std):
            raise ValueError("teacher and student must normalise images the same way (image_mean / image_std)")
        if _levels(teacher) != _levels(student):
            raise ValueError("teacher and student must have the same FPN levels")
        if teacher_cache is not None and teacher_cache.teacher_fingerprint != fingerprint(teacher):
            raise ValueError(f"the teacher cache {teacher_cache.folder} was built for another teacher "
                             "(its weights' fingerprint differs); build one for this teacher")
        self.teacher, self.student, self.config = teacher, student, config
        self.teacher_cache = teacher_cache
        self.two_stage = isinstance(student, FasterRCNN)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        # 1x1 conv per level from the student's FPN width to the teacher's (Zhang & Ma's adaptation layer).
        self.adapters = nn.ModuleList(
            nn.Conv2d(_fpn_channels(student), _fpn_channels(teacher), kernel_size=1) for _ in range(_levels(student)))
        self._tap: dict = {}
        self._hook_student()

    # -- taps ---------------------------------------------------------------------------------
    def _store(self, name, pick=lambda args, out: out):
        def hook(module, args, out):
            self._tap[name] = pick(args, out)
        return hook

    def _hook_student(self) -> None:
        s = self.student
        taps = [(s.transform, "transformed", None), (s.backbone, "features", None)]
        if self.two_stage:
            taps += [(s.rpn.head, "rpn", None), (s.rpn.anchor_generator, "anchors", None),
                     (s.roi_heads.box_roi_pool, "proposals", lambda a, o: a[1]),
                     (s.roi_heads.box_predictor, "roi", None)]
        else:
            taps += [(s.head, "head", None), (s.anchor_generator, "anchors", None)]
        self._handles = [m.register_forward_hook(self._store(name, pick) if pick else self._store(name))
                         for m, name, pick in taps]

    def remove_hooks(self) -> None:
        """Detach from the student (e.g. before wrapping it in another Distiller)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BN running statistics stay the teacher's
        return self

    # -- forward ------------------------------------------------------------------------------
    def forward(self, images, targets=None):
        if not self.training:
            return self.student(images)
        self._tap.clear()
        losses = self.student(images, targets)
        if self.config.method == "none":
            return losses
        return losses | self.distill_losses()

    def distill_losses(self) -> dict[str, torch.Tensor]:
        cfg, tap = self.config, self._tap
        image_list = tap["transformed"][0]
        s_feats = list(tap["features"].values())
        self._t = self._teacher_outputs(image_list.tensors)
        t_feat_dict = self._t.features
        t_feats = list(t_feat_dict.values())
        adapted = [a(f) for a, f in zip(self.adapters, s_feats)]
        if cfg.method == "defeat":
            return self._defeat_losses(image_list, t_feat_dict, t_feats, adapted)
        spatial, feature_w = zip(*(glam(t, s, _MASK_MODE[cfg.method], cfg.patch_size, cfg.temperature)
                                   for t, s in zip(t_feats, adapted)))
        out = {}
        if cfg.alpha:
            feat = sum(L.feature_imitation_loss(t, s, w) for t, s, w in zip(t_feats, adapted, feature_w))
            if cfg.attention_weight:
                feat = feat + cfg.attention_weight * sum(L.attention_transfer_loss(t, s) for t, s in zip(t_feats, adapted))
            out["distill_feat"] = cfg.alpha * feat
        if cfg.beta or cfg.gamma:
            head = self._two_stage_head_losses(t_feat_dict, spatial) if self.two_stage \
                else self._retina_head_losses(t_feats, spatial)
            if cfg.beta:
                out["distill_cls"] = cfg.beta * head["cls"]
            if cfg.gamma:
                out["distill_loc"] = cfg.gamma * head["loc"]
        return out

    def _teacher_outputs(self, batch: torch.Tensor) -> TeacherOutputs:
        cached = self.teacher_cache.lookup(batch) if self.teacher_cache is not None else None
        return cached if cached is not None else run_teacher(self.teacher, batch, with_dense=False)

    def _teacher_dense(self) -> dict:
        """The teacher's dense head outputs for this batch (cached, or computed on its FPN maps)."""
        if self._t.dense is None:
            self._t.dense = dense_outputs(self.teacher, self._t.features)
        return self._t.dense

    @staticmethod
    def _per_anchor(masks, num_anchors: int) -> torch.Tensor:
        """Spatial masks (B x 1 x H x W per level) -> B x sum(H*W*A), torchvision's anchor order."""
        return torch.cat([m[:, 0].unsqueeze(-1).expand(*m[:, 0].shape, num_anchors).flatten(1) for m in masks], 1)

    def _decode(self, box_coder, deltas: torch.Tensor, anchors: list[torch.Tensor]) -> torch.Tensor:
        """B x N x 4 deltas -> B x N x 4 boxes (XYXY) around each image's anchors."""
        return torch.stack([box_coder.decode_single(d, a) for d, a in zip(deltas, anchors)])

    def _retina_head_losses(self, t_feats, spatial) -> dict[str, torch.Tensor]:
        s_out = self._tap["head"]
        t_out = self._teacher_dense()
        num_anchors = self.student.anchor_generator.num_anchors_per_location()[0]
        weight = self._per_anchor(spatial, num_anchors)
        anchors = self._tap["anchors"]
        coder = self.student.box_coder
        with torch.no_grad():
            t_boxes = self._decode(self.teacher.box_coder, t_out["bbox_regression"], anchors)
        s_boxes = self._decode(coder, s_out["bbox_regression"], anchors)
        return {"cls": L.sigmoid_distill_loss(s_out["cls_logits"], t_out["cls_logits"], weight),
                "loc": L.iou_distill_loss(s_boxes, t_boxes, weight)}

    @staticmethod
    def _flatten_rpn(objectness, deltas):
        """torchvision's RPN layout -> B x N and B x N x 4, anchors ordered (level, y, x, anchor)."""
        obj = torch.cat([o.permute(0, 2, 3, 1).flatten(1) for o in objectness], 1)
        box = torch.cat([d.reshape(d.shape[0], -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, 3)
                         for d in deltas], 1)
        return obj, box

    def _two_stage_head_losses(self, t_feat_dict, spatial) -> dict[str, torch.Tensor]:
        cfg, tap = self.config, self._tap
        zero = spatial[0].new_zeros(())
        cls, loc = zero, zero
        if cfg.distill_rpn:
            s_obj, s_box = self._flatten_rpn(*tap["rpn"])
            dense = self._teacher_dense()
            t_obj, t_box = self._flatten_rpn(dense["objectness"], dense["deltas"])
            weight = self._per_anchor(spatial, self.student.rpn.anchor_generator.num_anchors_per_location()[0])
            anchors = tap["anchors"]
            coder = self.student.rpn.box_coder
            with torch.no_grad():
                t_boxes = self._decode(self.teacher.rpn.box_coder, t_box, anchors)
            cls = cls + L.sigmoid_distill_loss(s_obj, t_obj, weight)
            loc = loc + L.iou_distill_loss(self._decode(coder, s_box, anchors), t_boxes, weight)
        if cfg.distill_roi:
            roi_cls, roi_loc = self._roi_losses(t_feat_dict, spatial)
            cls, loc = cls + roi_cls, loc + roi_loc
        return {"cls": cls, "loc": loc}

    def _teacher_on_student_rois(self, t_feat_dict):
        """The student's sampled RoIs (detached), and the teacher's class logits and box deltas on them."""
        proposals = [p.detach() for p in self._tap["proposals"]]
        image_sizes = self._tap["transformed"][0].image_sizes
        t_heads = self.teacher.roi_heads
        with torch.no_grad():
            t_logits, t_reg = t_heads.box_predictor(t_heads.box_head(t_heads.box_roi_pool(t_feat_dict, proposals, image_sizes)))
        return proposals, image_sizes, t_logits, t_reg

    def _roi_losses(self, t_feat_dict, spatial):
        """Teacher and student RoI heads on the student's sampled RoIs; a RoI's weight is the
        spatial mask averaged over the RoI (RoIAlign of the mask at the RoI's FPN level)."""
        tap, cfg = self._tap, self.config
        proposals, image_sizes, t_logits, t_reg = self._teacher_on_student_rois(t_feat_dict)
        s_logits, s_reg = tap["roi"]
        with torch.no_grad():
            names = list(t_feat_dict)
            mask_maps = {n: m for n, m in zip(names, spatial)}
            roi_weight = self.student.roi_heads.box_roi_pool(mask_maps, proposals, image_sizes).mean(dim=(1, 2, 3))
            # Compare the boxes both heads predict for the teacher's most likely foreground class.
            cls_idx = t_logits[:, 1:].argmax(dim=1) + 1
        rows = torch.arange(len(cls_idx), device=cls_idx.device)
        boxes = torch.cat(proposals)
        coder = self.student.roi_heads.box_coder
        s_sel = s_reg.reshape(len(rows), -1, 4)[rows, cls_idx]
        with torch.no_grad():
            t_sel = t_reg.reshape(len(rows), -1, 4)[rows, cls_idx]
            t_boxes = self.teacher.roi_heads.box_coder.decode_single(t_sel, boxes)
        s_boxes = coder.decode_single(s_sel, boxes)
        return (L.softmax_distill_loss(s_logits, t_logits, roi_weight, cfg.roi_temperature),
                L.iou_distill_loss(s_boxes, t_boxes, roi_weight))

    # -- DeFeat baseline ----------------------------------------------------------------------
    def _defeat_losses(self, image_list, t_feat_dict, t_feats, adapted) -> dict[str, torch.Tensor]:
        """DeFeat: decoupled foreground / background feature imitation at every FPN level and, for
        two-stage detectors, decoupled positive / negative RoI-class KL. Its paper distils neither
        the dense heads nor box regression, so ``gamma`` has no effect here; for one-stage detectors
        only the feature term exists (our reading of its RetinaNet experiments)."""
        cfg = self.config
        gt_boxes = [t["boxes"] for t in self._tap["transformed"][1]]
        padded_h = image_list.tensors.shape[-2]
        out = {}
        if cfg.alpha:
            feat = 0.0
            for t, s in zip(t_feats, adapted):
                h, w = t.shape[-2:]
                fg = box_foreground_mask(gt_boxes, h, w, stride=padded_h / h)
                feat = feat + L.defeat_feature_loss(t, s, fg, cfg.defeat_fg_weight, cfg.defeat_bg_weight)
            out["distill_feat"] = cfg.alpha * feat
        if cfg.beta and self.two_stage and cfg.distill_roi:
            proposals, _, t_logits, _ = self._teacher_on_student_rois(t_feat_dict)
            s_logits = self._tap["roi"][0]
            with torch.no_grad():
                gt_labels = [t["labels"] for t in self._tap["transformed"][1]]
                _, labels = self.student.roi_heads.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
                positive = torch.cat(labels) > 0
            kl = [L.softmax_distill_loss(s_logits, t_logits, part.to(s_logits.dtype), cfg.roi_temperature)
                  for part in (positive, ~positive)]
            out["distill_cls"] = cfg.beta * (cfg.defeat_roi_pos_weight * kl[0] + cfg.defeat_roi_neg_weight * kl[1])
        return out
