"""Distillation losses, pure functions of tensors, in two forms (``DistillConfig.loss_form``).

* ``normalised``: means, or weighted means divided by the sum of the weights, so the balancing
  weights alpha / beta / gamma are of order 1 whatever the batch, map size or level count.
* ``reference``: the GLAMD authors' public mmdetection code (which extends Zhang & Ma's FBKD code),
  term by term: square roots of unnormalised sums over the batch, a sum of per-patch square roots
  for the local term, L2 distances for the attention terms, per-level head terms; its constants
  (7e-5, 4e-3, 0.1, and x6 / x3 for one-stage detectors) are applied by the caller
  (``glamd_core.methods``). Functions of this form are named ``reference_*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import patch_sums


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


# -- the reference form ---------------------------------------------------------------------------

def reference_feature_term(teacher: torch.Tensor, student: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sqrt(sum over B, C, H, W of weight * (F_T - A(F_S))^2): the authors' ``dist2``."""
    return ((teacher - student) ** 2 * weight).sum().sqrt()


def reference_patch_feature_term(teacher: torch.Tensor, student: torch.Tensor, weight: torch.Tensor,
                                 patch_size: int, eps: float = 1e-10) -> torch.Tensor:
    """sum over patches of sqrt(sum over B, C and the patch's cells of weight * d^2 + eps): the
    authors' ``pairwise_dist2``. The batch is summed inside each root, patches outside; ``eps`` is
    the two-stage file's (its one-stage file has none, which gives an infinite gradient for an
    exactly matched patch; we keep it in both)."""
    per_cell = ((teacher - student) ** 2 * weight).sum(dim=(0, 1), keepdim=True)  # 1 x 1 x H x W
    return (patch_sums(per_cell, patch_size) + eps).sqrt().sum()


def reference_channel_attention_term(teacher: torch.Tensor, student: torch.Tensor, adapt) -> torch.Tensor:
    """Zhang & Ma's channel term, ||mean_hw F_T - adapt(mean_hw F_S)|| (Frobenius norm over B x C;
    ``adapt`` a Linear on the raw student's descriptors)."""
    return torch.dist(teacher.mean(dim=(2, 3)), adapt(student.mean(dim=(2, 3))))


def reference_patch_channel_attention_term(teacher: torch.Tensor, student: torch.Tensor, adapt,
                                           patch_size: int) -> torch.Tensor:
    """GLAMD's local channel term: the mean over patches of ||avg_patch F_T - adapt(avg_patch F_S) + 1e-6||
    over the flattened B x C vector (``nn.PairwiseDistance``); the patch average counts real cells
    only, as the reference's ``avg_pool2d(ceil_mode=True)`` does."""
    b, c = teacher.shape[:2]

    def patch_means(f):  # P x B x C
        return F.avg_pool2d(f, patch_size, stride=patch_size, ceil_mode=True).reshape(b, f.shape[1], -1).permute(2, 0, 1)

    t, s = patch_means(teacher), adapt(patch_means(student))
    return F.pairwise_distance(t.reshape(t.shape[0], -1), s.reshape(s.shape[0], -1), p=2, eps=1e-6).mean()


def reference_spatial_attention_term(teacher: torch.Tensor, student: torch.Tensor, adapt) -> torch.Tensor:
    """||mean_c F_T - adapt(mean_c F_S)|| over B x 1 x H x W (``adapt`` a 3x3 conv, 1 -> 1 channel)."""
    return torch.dist(teacher.mean(dim=1, keepdim=True), adapt(student.mean(dim=1, keepdim=True)))


def reference_sigmoid_head_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: torch.Tensor,
                                anchors_per_location: int) -> torch.Tensor:
    """One FPN level: sum of weight * BCE(sigmoid(student), sigmoid(teacher)) over every anchor and
    class, divided by the sum of the mask over *locations* (the authors' ``(loss_map * mask).sum()
    / mask.sum()`` with a per-location mask against per-anchor outputs). ``weight`` is the location's
    mask repeated for each of its anchors (B x N); logits are B x N (RPN) or B x N x K."""
    loss = F.binary_cross_entropy(student_logits.sigmoid(), teacher_logits.sigmoid(), reduction="none")
    if loss.dim() == weight.dim() + 1:
        loss = loss.sum(dim=-1)
    return (weight * loss).sum() / (weight.sum() / anchors_per_location)


def reference_iou_head_term(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor, weight: torch.Tensor
                            ) -> torch.Tensor:
    """One FPN level: mmdetection 2.x ``IoULoss(linear=True)`` with per-anchor weights and mean
    reduction, mean over the level's anchors of weight * (1 - max(IoU, 1e-6))."""
    return (weight * (1 - paired_iou(student_boxes, teacher_boxes).clamp(min=1e-6))).mean()
