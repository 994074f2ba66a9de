"""Attention masks: global (Zhang & Ma, ICLR 2021), local (patch-wise) and GLAM.

All functions are pure tensor maths on a feature map ``feat`` of shape B x C x H x W.

Attention logits:  spatial G_S = mean_c |F|  (B x 1 x H x W),  channel G_C = mean_hw |F|  (B x C x 1 x 1).
Global masks:      M_S = H*W * softmax_hw(G_S / T),  M_C = C * softmax_c(G_C / T)   (mean 1 per image).
Local masks:       the same softmax inside every non-overlapping p x p patch, scaled by the patch's
                   number of real cells, so each patch's mask has mean 1. Maps are padded right /
                   bottom to a multiple of p with an explicit validity mask; padded cells never take
                   part and are never returned. A patch as large as the map is the global mask.
GLAM:              the average of the global and the local mask (each the average of the teacher's
                   and the student's mask, detached), see :func:`glam`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

MaskMode = Literal["both", "global", "local", "uniform"]
MASK_MODES = ("both", "global", "local", "uniform")


def spatial_logits(feat: torch.Tensor) -> torch.Tensor:
    return feat.abs().mean(dim=1, keepdim=True)


def channel_logits(feat: torch.Tensor) -> torch.Tensor:
    return feat.abs().mean(dim=(2, 3), keepdim=True)


def global_spatial_mask(feat: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    b, _, h, w = feat.shape
    logits = spatial_logits(feat).reshape(b, h * w) / temperature
    return (h * w * logits.softmax(dim=1)).reshape(b, 1, h, w)


def global_channel_mask(feat: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    b, c = feat.shape[:2]
    logits = channel_logits(feat).reshape(b, c) / temperature
    return (c * logits.softmax(dim=1)).reshape(b, c, 1, 1)


def _to_patches(x: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B x K x H x W -> (B x K x nh x nw x p*p patches, validity of each cell, same shape, bool).

    Maps are padded right / bottom to a multiple of p; the validity mask, not the padded value,
    says which cells are real, so real zero features are never mistaken for padding."""
    b, k, h, w = x.shape
    nh, nw = math.ceil(h / p), math.ceil(w / p)
    pad = (0, nw * p - w, 0, nh * p - h)
    valid = F.pad(torch.ones(1, 1, h, w, dtype=torch.bool, device=x.device), pad)

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], nh, p, nw, p).permute(0, 1, 2, 4, 3, 5).reshape(
            t.shape[0], t.shape[1], nh, nw, p * p)

    return split(F.pad(x, pad)), split(valid)


def _from_patches(patches: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of :func:`_to_patches`, dropping the padded cells."""
    b, k, nh, nw, _ = patches.shape
    full = patches.reshape(b, k, nh, nw, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, k, nh * p, nw * p)
    return full[:, :, :h, :w]


def _check_patch(patch_size: int) -> None:
    if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")


def local_spatial_mask(feat: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> torch.Tensor:
    """B x 1 x H x W: the global spatial mask computed inside every patch (mean 1 per patch)."""
    _check_patch(patch_size)
    h, w = feat.shape[-2:]
    logits, valid = _to_patches(spatial_logits(feat) / temperature, patch_size)
    soft = logits.masked_fill(~valid, float("-inf")).softmax(dim=-1)
    return _from_patches(soft * valid.sum(dim=-1, keepdim=True), h, w, patch_size)


def local_channel_mask(feat: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> torch.Tensor:
    """B x C x H x W: every cell carries the channel mask of its patch (channel logits = mean |F|
    over the patch's real cells)."""
    _check_patch(patch_size)
    c, h, w = feat.shape[1:]
    cells, valid = _to_patches(feat.abs(), patch_size)
    logits = cells.sum(dim=-1) / valid.sum(dim=-1)  # padded cells are zeros: they add nothing
    per_patch = c * (logits / temperature).softmax(dim=1)  # B x C x nh x nw
    return _from_patches(per_patch.unsqueeze(-1).expand(*per_patch.shape, patch_size ** 2), h, w, patch_size)


def glam(teacher: torch.Tensor, student: torch.Tensor, mode: MaskMode = "both", patch_size: int = 7,
         temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights for the distillation losses: ``(spatial, feature)``, detached.

    * ``spatial`` (B x 1 x H x W) weights per-location head losses;
    * ``feature`` (broadcastable to B x C x H x W) weights the feature imitation loss:
      the product of the spatial and channel masks.

    Each mask is the mean of the teacher's and the student's (Zhang & Ma). ``mode``: ``global`` --
    Zhang & Ma's masks; ``local`` -- patch-wise masks; ``both`` (GLAMD) -- the mean of the global and
    the local weights, i.e. the global-mask loss and the patch-wise loss averaged; ``uniform`` -- all
    ones (the "w/o GLAM" rows of the paper's Table 4). ``student`` must already have the teacher's
    channel count (adapted features).
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    if teacher.shape != student.shape:
        raise ValueError(f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} features must "
                         "have the same shape (adapt the student's channels first)")
    _check_patch(patch_size)
    b, c, h, w = teacher.shape
    if mode == "uniform":
        ones = teacher.new_ones(b, 1, h, w)
        return ones, ones
    if mode in ("both", "local") and patch_size >= max(h, w):
        mode = "global"  # one patch covering the map: the local mask *is* the global one (P6/P7 here)

    def mean_of_both(mask, *args):
        return 0.5 * (mask(teacher, *args, temperature) + mask(student, *args, temperature))

    with torch.no_grad():
        weights = []  # (spatial, feature) per part
        if mode in ("both", "global"):
            spatial = mean_of_both(global_spatial_mask)
            weights.append((spatial, spatial * mean_of_both(global_channel_mask)))
        if mode in ("both", "local"):
            spatial = mean_of_both(local_spatial_mask, patch_size)
            weights.append((spatial, spatial * mean_of_both(local_channel_mask, patch_size)))
        if len(weights) == 1:
            return weights[0]
        (g_s, g_f), (l_s, l_f) = weights
        return 0.5 * (g_s + l_s), 0.5 * (g_f + l_f)


# -- ground-truth masks (the DeFeat baseline) -------------------------------------------------

def box_foreground_mask(boxes: list[torch.Tensor], height: int, width: int, stride: float) -> torch.Tensor:
    """B x 1 x H x W bool: the cells of a stride-``stride`` feature map that belong to a ground-truth box.

    A cell is foreground when its centre ``((x + 0.5) * stride, (y + 0.5) * stride)`` lies inside a
    box (XYXY, image pixels), and every box also marks the cell that holds its own centre, so a box
    too small to contain any cell centre -- small objects at coarse levels -- is never dropped. DeFeat's paper only says "GT boxes projected onto the feature map";
    this is our reading of it.
    """
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
