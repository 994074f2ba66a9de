"""GLAMD and its mask ablations: feature imitation weighted by attention masks, attention transfer,
and dense-head distillation weighted by the spatial mask.

Methods: ``global`` (Zhang & Ma's global masks), ``local`` (patch-wise masks), ``glamd`` (both:
GLAM) and ``uniform`` (no masks, the paper's "w/o GLAM"). Per FPN level, with T the teacher's map,
S the student's, A a 1x1 conv adapter and M the masks of ``glamd_core.masks``:

``loss_form="reference"`` -- the authors' mmdetection code, term by term (the ``c`` constants are
the two-stage file's, x6 for the one-stage file's feature and attention terms):

* feature: 1/2 [ c_f sqrt(sum_{B,C,H,W} W_g d^2) + c_f sum_patches sqrt(sum_{B,C,patch} W_l d^2 + 1e-10) ],
  d = T - A(S), W = spatial mask (x channel mask for one-stage detectors); c_f = 7e-5;
* attention transfer: c_a ||mean_c T - Conv3x3(mean_c S)|| + c_a / 2 (||mean_hw T - Lin(mean_hw S)||
  + mean_patches ||avg_patch T - Lin(avg_patch S)||) with their own adapters on the raw student; c_a = 4e-3;
* heads, summed over levels, x 0.1: sum(M BCE(sigmoid s, sigmoid t)) / sum_locations(M) and
  mean_anchors(M (1 - IoU)) of the decoded boxes, M = 1/2 (global + local spatial mask);
  two-stage detectors: the RPN only.

For ``global`` and ``local`` only that part's terms are kept (``global`` is then Zhang & Ma's
feature and attention terms without their non-local relation term, which GLAMD drops); ``uniform``
keeps both parts with every mask 1. Where a map is no larger than a patch (P6, P7 here), the
local part is one patch: as in the reference, both parts are still computed and averaged.

``loss_form="normalised"`` -- ours: feature sum_levels mean(W d^2) with W the mean of the parts'
weights; attention MSEs of the 1x1-adapted student's pooled descriptors; heads the Bernoulli KL
and 1 - IoU as weighted means over all anchors of all levels, plus (two-stage) the RoI head.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses as L
from ..masks import attention_masks, box_spatial_masks, feature_weight
from .adapters import feature_adapters
from .defeat import box_foreground_mask

MASK_MODE_OF = {"global": "global", "local": "local", "glamd": "both", "uniform": "uniform"}
FEATURE_CONSTANT = {True: 7e-5, False: 7e-5 * 6}  # two-stage file, one-stage file
ATTENTION_CONSTANT = {True: 4e-3, False: 4e-3 * 6}
HEAD_CONSTANT = 0.1


class AttentionMaskDistillation(nn.Module):
    def __init__(self, config, two_stage: bool, student_channels: int, teacher_channels: int, levels: int):
        super().__init__()
        self.config, self.two_stage, self.mode = config, two_stage, MASK_MODE_OF[config.method]
        self.reference = config.loss_form == "reference"
        if config.student_masks == "raw" and config.channel_mask and student_channels != teacher_channels:
            raise ValueError(f"channel masks from the raw student maps need equal FPN widths (student "
                             f"{student_channels}, teacher {teacher_channels}); use student_masks='adapted'")
        self.adapters = feature_adapters(config.glamd_adapter, student_channels, teacher_channels, levels)
        if self.reference and config.alpha and config.attention_weight:  # its own attention adapters, default init
            self.channel_adapters = nn.ModuleList(nn.Linear(student_channels, teacher_channels) for _ in range(levels))
            self.spatial_adapters = nn.ModuleList(nn.Conv2d(1, 1, 3, padding=1) for _ in range(levels))

    def masks(self, teacher: torch.Tensor, student_for_masks: torch.Tensor) -> dict:
        """The mask parts of one level (see ``glamd_core.masks.attention_masks``)."""
        cfg = self.config
        parts = attention_masks(teacher, student_for_masks, self.mode, cfg.patch_size, cfg.temperature,
                                cfg.channel_mask, merge_equal_parts=not self.reference)
        if self.reference and "uniform" in parts:  # GLAMD's structure with every mask 1
            parts = {"global": parts["uniform"], "local": parts["uniform"]}
        return parts

    def forward(self, d) -> dict[str, torch.Tensor]:
        cfg = self.config
        t_feats, s_feats = d.teacher_features(), d.student_features()
        adapted = [a(s) for a, s in zip(self.adapters, s_feats)]
        for_masks = s_feats if cfg.student_masks == "raw" else adapted
        parts = [self.masks(t, m) for t, m in zip(t_feats, for_masks)]
        spatial = [sum(s for s, _ in p.values()) / len(p) for p in parts]  # per level, weights the heads
        out = {}
        if cfg.alpha:
            feature_parts = parts if cfg.glamd_feature_mask == "attention" else self.box_parts(d, t_feats, parts)
            feature = self.feature_terms(t_feats, s_feats, adapted, feature_parts)
            out["distill_feat"] = cfg.alpha * feature
        if cfg.beta or cfg.gamma:
            cls, loc = self.head_terms(d, spatial)
            if cfg.beta:
                out["distill_cls"] = cfg.beta * cls
            if cfg.gamma:
                out["distill_loc"] = cfg.gamma * loc
        return out

    def box_parts(self, d, t_feats, parts) -> list[dict]:
        """``glamd_feature_mask="boxes"``: each part's spatial mask replaced by the ground-truth boxes'
        (DeFeat's cells on every level), normalised as that part's attention mask is; channel masks kept."""
        boxes = [t["boxes"] for t in d.targets()]
        out = []
        for t, p, stride in zip(t_feats, parts, d.level_strides()):
            fg = box_foreground_mask(boxes, *t.shape[-2:], stride)
            boxed = box_spatial_masks(fg, self.config.patch_size)
            out.append({name: (boxed["global" if name in ("global", "uniform") else "local"].to(t.dtype), channel)
                        for name, (_, channel) in p.items()})
        return out

    # -- features -------------------------------------------------------------------------------
    def feature_terms(self, t_feats, s_feats, adapted, parts) -> torch.Tensor:
        cfg = self.config
        total = 0.0
        for i, (t, s, a, p) in enumerate(zip(t_feats, s_feats, adapted, parts)):
            if self.reference:
                total = total + self.reference_level(i, t, s, a, p)
            else:
                weight = sum(feature_weight(*m) for m in p.values()) / len(p)
                total = total + L.feature_imitation_loss(t, a, weight)
                if cfg.attention_weight:
                    total = total + cfg.attention_weight * L.attention_transfer_loss(t, a)
        return total

    def reference_level(self, i: int, teacher, student, adapted, parts) -> torch.Tensor:
        """One level's feature + attention terms of the reference form (module docstring)."""
        cfg = self.config
        c_f, c_a = FEATURE_CONSTANT[self.two_stage], ATTENTION_CONSTANT[self.two_stage]
        imitation = []
        for name, masks in parts.items():
            weight = feature_weight(*masks)
            imitation.append(L.reference_feature_term(teacher, adapted, weight) if name == "global" else
                             L.reference_patch_feature_term(teacher, adapted, weight, cfg.patch_size))
        total = c_f * sum(imitation) / len(imitation)
        if cfg.attention_weight:
            channel = []
            if "global" in parts:
                channel.append(L.reference_channel_attention_term(teacher, student, self.channel_adapters[i]))
            if "local" in parts:
                channel.append(L.reference_patch_channel_attention_term(teacher, student, self.channel_adapters[i],
                                                                        cfg.patch_size))
            attention = sum(channel) / len(channel)
            attention = attention + L.reference_spatial_attention_term(teacher, student, self.spatial_adapters[i])
            total = total + cfg.attention_weight * c_a * attention
        return total

    # -- heads ----------------------------------------------------------------------------------
    def head_terms(self, d, spatial) -> tuple[torch.Tensor, torch.Tensor]:
        zero = spatial[0].new_zeros(())
        cls, loc = zero, zero
        levels = d.dense_levels()
        if levels is not None:
            weights = [per_anchor(m, lv["anchors_per_location"]) for m, lv in zip(spatial, levels)]
            if self.reference:
                # torchvision's RetinaNet keeps a never-positive background logit at class 0;
                # mmdetection's sigmoid head has none, so the reference sum leaves it out.
                fg = slice(None) if self.two_stage else slice(1, None)
                cls = HEAD_CONSTANT * sum(L.reference_sigmoid_head_term(lv["student_cls"][..., fg],
                                                                        lv["teacher_cls"][..., fg], w,
                                                                        lv["anchors_per_location"])
                                          for lv, w in zip(levels, weights))
                loc = HEAD_CONSTANT * sum(L.reference_iou_head_term(lv["student_boxes"], lv["teacher_boxes"], w)
                                          for lv, w in zip(levels, weights))
            else:
                def cat(key):
                    return torch.cat([lv[key] for lv in levels], 1)
                w = torch.cat(weights, 1)
                cls = L.sigmoid_distill_loss(cat("student_cls"), cat("teacher_cls"), w)
                loc = L.iou_distill_loss(cat("student_boxes"), cat("teacher_boxes"), w)
        if self.two_stage and self.config.distill_roi:
            roi_cls, roi_loc = roi_terms(d, spatial, self.config.roi_temperature)
            cls, loc = cls + roi_cls, loc + roi_loc
        return cls, loc


def per_anchor(mask: torch.Tensor, anchors_per_location: int) -> torch.Tensor:
    """A level's B x 1 x H x W mask -> B x (H * W * A), torchvision's (y, x, anchor) order."""
    return mask[:, 0].unsqueeze(-1).expand(*mask[:, 0].shape, anchors_per_location).flatten(1)


def roi_terms(d, spatial, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student RoI heads on the student's sampled RoIs (our addition; GLAMD distils the
    RPN only): the softmax KL of the class scores and 1 - IoU of the boxes both heads predict for
    the teacher's most likely foreground class, each RoI weighted by the spatial mask over it."""
    proposals, image_sizes, (s_logits, s_reg), (t_logits, t_reg) = d.teacher_on_student_rois()
    weight = d.roi_mask_weight(spatial, proposals, image_sizes)
    with torch.no_grad():
        cls_idx = t_logits[:, 1:].argmax(dim=1) + 1
    rows = torch.arange(len(cls_idx), device=cls_idx.device)
    boxes = torch.cat(proposals)
    s_sel = class_deltas(s_reg, rows, cls_idx)
    with torch.no_grad():
        t_sel = class_deltas(t_reg, rows, cls_idx)
        t_boxes = d.teacher.roi_heads.box_coder.decode_single(t_sel, boxes)
    s_boxes = d.student.roi_heads.box_coder.decode_single(s_sel, boxes)
    return (L.softmax_distill_loss(s_logits, t_logits, weight, temperature),
            L.iou_distill_loss(s_boxes, t_boxes, weight))


def class_deltas(reg: torch.Tensor, rows: torch.Tensor, cls_idx: torch.Tensor) -> torch.Tensor:
    """Each RoI's box deltas for class ``cls_idx``; a class-agnostic head (Cascade R-CNN's) has one box."""
    reg = reg.reshape(len(rows), -1, 4)
    return reg[:, 0] if reg.shape[1] == 1 else reg[rows, cls_idx]
