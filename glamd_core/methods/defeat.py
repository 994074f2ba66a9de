"""DeFeat (Guo et al., "Distilling Object Detectors via Decoupled Features", CVPR 2021).

Feature imitation split into the ground-truth-box cells of each FPN level and the rest, each part
normalised by its own size; for two-stage detectors optionally the RoI-class KL split into positive
and negative RoIs. No dense-head or box terms, so ``gamma`` has no effect (``glamd_heads`` adds GLAMD's:
the hybrid recipe, ``methods/hybrid.py``).

``loss_form="reference"`` -- its official code (``ggjy/DeFeat.pytorch``, the released Faster R-CNN
config): every box marks ONE level, chosen by its size as in mmdetection's RoI-level mapping,
k = floor(log2(sqrt((w + 1)(h + 1)) / 56 + 1e-6)) with k = 0 the stride-4 level; on it the cells
``[int(y1/s):int(y2/s), int(x1/s):int(x2/s)]`` (one cell for a box under a cell wide or tall); per
level sum(d^2 m) / max(1, 2 C N_fg) and the same for the background, averaged over levels, weighted
3 / 12; a 3x3 conv adapter with weights N(0, 1).fmod(2) * 1e-4; the RoI term is off (as released;
``distill_roi=True`` turns it on, on the teacher's sampled RoIs with ``defeat_roi_sampling="teacher"``
as the official code samples them).
Our Faster R-CNN has no stride-4 level, so boxes of k = 0 go to our finest level (stride 8).

``loss_form="normalised"`` -- ours: every box marks every level (a cell is foreground when its
centre lies in a box, and the box's own centre cell always is, so small boxes survive at coarse
levels); per level the mean of d^2 over the foreground and over the background, weighted 0.2 / 0.8,
summed over levels; a 1x1 conv adapter; the RoI-class KL on the student's sampled RoIs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import losses as L
from .adapters import feature_adapters


class DeFeatDistillation(nn.Module):
    def __init__(self, config, two_stage: bool, student_channels: int, teacher_channels: int, levels: int):
        super().__init__()
        self.config, self.two_stage = config, two_stage
        self.adapters = feature_adapters(config.defeat_adapter, student_channels, teacher_channels, levels)

    def forward(self, d) -> dict[str, torch.Tensor]:
        cfg = self.config
        out = {}
        if cfg.alpha:
            t_feats, s_feats = d.teacher_features(), d.student_features()
            boxes = [t["boxes"] for t in d.targets()]
            strides = d.level_strides()
            if cfg.defeat_foreground == "glam":  # a soft foreground from the attention masks (notebooks/09)
                masks = [glam_foreground(t, a(s), cfg) for a, t, s in zip(self.adapters, t_feats, s_feats)]
            else:
                masks = (level_masks_by_size(boxes, [f.shape[-2:] for f in t_feats], strides)
                         if cfg.defeat_levels == "by_size" else
                         [box_foreground_mask(boxes, *f.shape[-2:], stride) for f, stride in zip(t_feats, strides)])
            terms = []
            for a, t, s, fg in zip(self.adapters, t_feats, s_feats, masks):
                if cfg.loss_form == "reference":
                    terms.append(reference_defeat_feature_term(t, a(s), fg, cfg.defeat_fg_weight, cfg.defeat_bg_weight))
                else:
                    terms.append(defeat_feature_loss(t, a(s), fg, cfg.defeat_fg_weight, cfg.defeat_bg_weight))
            feature = sum(terms) / len(terms) if cfg.loss_form == "reference" else sum(terms)
            out["distill_feat"] = cfg.alpha * feature
        if cfg.beta and self.two_stage and cfg.distill_roi:
            if cfg.defeat_roi_sampling == "teacher":
                _, labels, (s_logits, _), (t_logits, _) = d.teacher_sampled_rois()
            else:
                proposals, _, (s_logits, _), (t_logits, _) = d.teacher_on_student_rois()
                with torch.no_grad():
                    targets = d.targets()
                    _, labels = d.student.roi_heads.assign_targets_to_proposals(
                        proposals, [t["boxes"] for t in targets], [t["labels"] for t in targets])
            positive = torch.cat(labels) > 0
            kl = [L.softmax_distill_loss(s_logits, t_logits, part.to(s_logits.dtype), cfg.roi_temperature)
                  for part in (positive, ~positive)]
            out["distill_cls"] = cfg.beta * (cfg.defeat_roi_pos_weight * kl[0] + cfg.defeat_roi_neg_weight * kl[1])
        return out


def glam_foreground(teacher: torch.Tensor, adapted: torch.Tensor, cfg) -> torch.Tensor:
    """``defeat_foreground="glam"``: the GLAM spatial mask (mean of its global and local parts, from the
    teacher's and the adapted student's maps, as GLAMD computes it) divided by its maximum per image,
    B x 1 x H x W in [0, 1], detached: DeFeat's split with attention in place of the boxes."""
    from ..masks import glam

    spatial, _ = glam(teacher.detach(), adapted.detach(), "both", cfg.patch_size, cfg.temperature, channel=False)
    return spatial / spatial.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def defeat_feature_loss(teacher: torch.Tensor, student: torch.Tensor, fg_mask: torch.Tensor,
                        fg_weight: float = 0.2, bg_weight: float = 0.8) -> torch.Tensor:
    """Normalised form, one level: the mean of d^2 over the foreground cells and over the rest."""
    sq = ((teacher - student) ** 2).mean(dim=1, keepdim=True)  # B x 1 x H x W
    fg = fg_mask.to(sq.dtype)
    bg = 1 - fg
    fg_term = (sq * fg).sum() / fg.sum().clamp_min(1.0)
    bg_term = (sq * bg).sum() / bg.sum().clamp_min(1.0)
    return fg_weight * fg_term + bg_weight * bg_term


def reference_defeat_feature_term(teacher: torch.Tensor, student: torch.Tensor, fg_mask: torch.Tensor,
                                  fg_weight: float = 3.0, bg_weight: float = 12.0) -> torch.Tensor:
    """Reference form, one level: w_fg sum(d^2 m) / max(1, 2 C N_fg) + w_bg sum(d^2 (1 - m)) / max(1, 2 C N_bg),
    counts over the batch (the official code repeats the mask over the C channels and sums it)."""
    sq = (teacher - student) ** 2
    m = fg_mask.to(sq.dtype).expand_as(sq)
    fg_term = (sq * m).sum() / max(1.0, float(m.sum()) * 2)
    bg_term = (sq * (1 - m)).sum() / max(1.0, float((1 - m).sum()) * 2)
    return fg_weight * fg_term + bg_weight * bg_term


def box_foreground_mask(boxes: list[torch.Tensor], height: int, width: int, stride: float) -> torch.Tensor:
    """B x 1 x H x W bool, normalised form: the cells of a stride-``stride`` map whose centre
    ``((x + 0.5) * stride, (y + 0.5) * stride)`` lies inside a box (XYXY, image pixels), plus the
    cell holding each box's own centre, so a box too small to contain any cell centre -- small
    objects at coarse levels -- is never dropped."""
    device = boxes[0].device if boxes else torch.device("cpu")
    cy = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    out = torch.zeros(len(boxes), 1, height, width, dtype=torch.bool, device=device)
    for i, b in enumerate(boxes):
        if len(b) == 0:
            continue
        b = b.float()
        inside_y = (cy[None, :] >= b[:, 1:2]) & (cy[None, :] <= b[:, 3:4])  # N x H
        inside_x = (cx[None, :] >= b[:, 0:1]) & (cx[None, :] <= b[:, 2:3])  # N x W
        out[i, 0] = (inside_y[:, :, None] & inside_x[:, None, :]).any(dim=0)
        centre_y = ((b[:, 1] + b[:, 3]) / 2 / stride).floor().long().clamp(0, height - 1)
        centre_x = ((b[:, 0] + b[:, 2]) / 2 / stride).floor().long().clamp(0, width - 1)
        out[i, 0, centre_y, centre_x] = True
    return out


def defeat_level_index(boxes: torch.Tensor, strides: list[float], canonical: float = 56.0) -> torch.Tensor:
    """The level of each box (N x 4, XYXY) as DeFeat assigns it: k = clamp(floor(log2(sqrt((w + 1)
    (h + 1)) / 56 + 1e-6)), 0, 4) names the level of stride 4 * 2^k (mmdetection's P2-P6); returned
    as an index into ``strides``, clamped to the levels that exist."""
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))
    k = torch.floor(torch.log2(scale / canonical + 1e-6)).clamp(min=0, max=4)
    offset = round(math.log2(strides[0] / 4))  # our finest level's distance from stride 4
    return (k - offset).clamp(min=0, max=len(strides) - 1).long()


def level_masks_by_size(boxes: list[torch.Tensor], sizes, strides: list[float]) -> list[torch.Tensor]:
    """Reference form: per level, B x 1 x H x W bool of the cells ``[int(y1/s):int(y2/s),
    int(x1/s):int(x2/s)]`` of the boxes assigned to that level (one cell ``[int(y1/s), int(x1/s)]``
    when that range is empty in either direction)."""
    device = boxes[0].device if boxes else torch.device("cpu")
    masks = [torch.zeros(len(boxes), 1, h, w, dtype=torch.bool, device=device) for h, w in sizes]
    for i, b in enumerate(boxes):
        if len(b) == 0:
            continue
        for box, level in zip(b.float(), defeat_level_index(b.float(), strides).tolist()):
            h, w = sizes[level]
            s = strides[level]
            lx, rx = max(int(box[0] / s), 0), min(int(box[2] / s), w)
            ly, ry = max(int(box[1] / s), 0), min(int(box[3] / s), h)
            if lx == rx or ly == ry:
                masks[level][i, 0, min(ly, h - 1), min(lx, w - 1)] = True
            else:
                masks[level][i, 0, ly:ry, lx:rx] = True
    return masks
