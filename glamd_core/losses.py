"""Distillation losses: feature imitation, classification head, localization head; DeFeat.

Pure functions of tensors. All losses are *normalised* (means, or weighted means divided by the
sum of the weights), so their balancing weights alpha / beta / gamma are of order 1. The
published constants of Zhang & Ma (feature 7e-5, attention 4e-3, heads 0.1) belong to
unnormalised sums over the batch and do not transfer; see DESIGN.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_imitation_loss(teacher: torch.Tensor, student: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean over B, C, H, W of weight * (F_T - F_S)^2, where ``student`` is already adapted to the
    teacher's channels and ``weight`` (mean 1) broadcasts to B x C x H x W."""
    return (weight * (teacher - student) ** 2).mean()


def attention_transfer_loss(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Zhang & Ma's pooled-descriptor terms: the channel descriptor (mean over positions) and the
    spatial descriptor (mean over channels) of the teacher vs the adapted student, as MSEs.

    Their code gives each descriptor its own adaptation layer; we reuse the 1x1-conv-adapted
    student features, which has the same effect with one layer fewer per level.
    """
    channel = F.mse_loss(student.mean(dim=(2, 3)), teacher.mean(dim=(2, 3)))
    spatial = F.mse_loss(student.mean(dim=1), teacher.mean(dim=1))
    return channel + spatial


def weighted_mean(per_item: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w * l) / sum(w): a mask re-distributes attention without changing the loss scale."""
    return (weight * per_item).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).eps)


def sigmoid_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         weight: torch.Tensor) -> torch.Tensor:
    """Per-location BCE between sigmoid(student) and sigmoid(teacher) (RetinaNet classes, RPN
    objectness), summed over the last dim if it holds classes, weighted by ``weight`` per location.

    BCE with soft targets is minimised (not zeroed) at student == teacher; we subtract the
    teacher's own entropy so the loss is 0 there, i.e. this is the Bernoulli KL divergence.
    """
    target = teacher_logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none")
    per_item = bce - entropy
    if per_item.dim() == weight.dim() + 1:
        per_item = per_item.sum(dim=-1)
    return weighted_mean(per_item, weight)


def softmax_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """Per-RoI KL(teacher || student) of softmax class scores (R x K logits, R weights)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * temperature**2
    return weighted_mean(kl, weight)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i] (XYXY). torchvision's ``box_iou`` is all-pairs, which would be N^2 here."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(dim=-1)
    return inter / (area_a + area_b - inter).clamp_min(1e-6)


def iou_distill_loss(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean over locations of 1 - IoU(student box, teacher box) (decoded, XYXY)."""
    return weighted_mean(1 - paired_iou(student_boxes, teacher_boxes), weight)


def defeat_feature_loss(teacher: torch.Tensor, student: torch.Tensor, fg_mask: torch.Tensor,
                        fg_weight: float = 0.2, bg_weight: float = 0.8) -> torch.Tensor:
    """DeFeat (Guo et al., CVPR 2021): imitation split into the ground-truth-box region and the
    rest, each normalised by its own size, weighted ``fg_weight`` / ``bg_weight`` (the authors'
    COCO values 4 and 16 were for unnormalised sums; we keep their ratio at sum 1, see DistillConfig)."""
    sq = ((teacher - student) ** 2).mean(dim=1, keepdim=True)  # B x 1 x H x W
    fg = fg_mask.to(sq.dtype)
    bg = 1 - fg
    fg_term = (sq * fg).sum() / fg.sum().clamp_min(1.0)
    bg_term = (sq * bg).sum() / bg.sum().clamp_min(1.0)
    return fg_weight * fg_term + bg_weight * bg_term
