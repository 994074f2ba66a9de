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


def _to_patches(x: torch.Tensor, p: int, pad_value: float = 0.0) -> torch.Tensor:
    """B x K x H x W -> B x K x nh x nw x p*p, padded right / bottom with ``pad_value`` to a
    multiple of p. Padding is told by its position, never by its value: real zero features are
    never mistaken for it."""
    b, k, h, w = x.shape
    nh, nw = math.ceil(h / p), math.ceil(w / p)
    x = F.pad(x, (0, nw * p - w, 0, nh * p - h), value=pad_value)
    return x.reshape(b, k, nh, p, nw, p).permute(0, 1, 2, 4, 3, 5).reshape(b, k, nh, nw, p * p)


def _from_patches(patches: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of :func:`_to_patches`, dropping the padded cells."""
    b, k, nh, nw, _ = patches.shape
    full = patches.reshape(b, k, nh, nw, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, k, nh * p, nw * p)
    return full[:, :, :h, :w]


def _real_cells(h: int, w: int, p: int, like: torch.Tensor) -> torch.Tensor:
    """nh x nw x 1: how many real cells each patch has (fewer on the right and bottom edges)."""
    def sizes(n):
        return torch.tensor([min(p, n - i) for i in range(0, n, p)], dtype=like.dtype, device=like.device)
    return (sizes(h)[:, None] * sizes(w)[None, :]).unsqueeze(-1)


def _check_patch(patch_size: int) -> None:
    if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")


def local_spatial_mask(feat: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> torch.Tensor:
    """B x 1 x H x W: the global spatial mask computed inside every patch (mean 1 over each patch's
    real cells; padded cells take part with logit -inf, i.e. weight 0)."""
    _check_patch(patch_size)
    h, w = feat.shape[-2:]
    patches = _to_patches(spatial_logits(feat) / temperature, patch_size, pad_value=float("-inf"))
    return _from_patches(patches.softmax(dim=-1) * _real_cells(h, w, patch_size, feat), h, w, patch_size)


def local_channel_mask(feat: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> torch.Tensor:
    """B x C x H x W: every cell carries the channel mask of its patch (channel logits = mean |F|
    over the patch's real cells: ``avg_pool2d`` with ``ceil_mode`` divides edge patches by their
    real cells only)."""
    _check_patch(patch_size)
    c, h, w = feat.shape[1:]
    logits = F.avg_pool2d(feat.abs(), patch_size, stride=patch_size, ceil_mode=True)  # B x C x nh x nw
    per_patch = c * (logits / temperature).softmax(dim=1)
    return _per_cell(per_patch, patch_size, h, w)


def _per_cell(per_patch: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """B x K x nh x nw -> B x K x H x W, each cell carrying its patch's value."""
    return per_patch.repeat_interleave(p, dim=2)[:, :, :h].repeat_interleave(p, dim=3)[..., :w]


def patch_sums(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """B x K x H x W -> B x K x nh x nw: the sum over each patch's real cells."""
    return _to_patches(x, patch_size).sum(dim=-1)  # padded cells are zeros


def attention_masks(teacher: torch.Tensor, student: torch.Tensor, mode: MaskMode = "both", patch_size: int = 7,
                    temperature: float = 0.5, channel: bool = True, merge_equal_parts: bool = True) -> dict[str, tuple]:
    """The masks of each part of ``mode``, detached: ``{"global": (spatial, channel), "local": ...}``.

    Each mask is the mean of the teacher's and the student's (Zhang & Ma). Spatial masks are
    B x 1 x H x W; channel masks B x C x 1 x 1 (global) or B x C x H x W (local), or None when
    ``channel`` is false (the reference two-stage form uses spatial masks only). ``uniform`` gives
    one part of ones. A patch as large as the map makes the local part the global one: it is then
    returned once, unless ``merge_equal_parts`` is false (the reference form computes both).
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    if channel and teacher.shape != student.shape:
        raise ValueError(f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} features must "
                         "have the same shape for channel masks (adapt the student's channels first)")
    _check_patch(patch_size)
    b, c, h, w = teacher.shape
    if mode == "uniform":
        return {"uniform": (teacher.new_ones(b, 1, h, w), teacher.new_ones(b, 1, 1, 1) if channel else None)}
    if mode in ("both", "local") and patch_size >= max(h, w) and merge_equal_parts:
        mode = "global"  # one patch covering the map: the local mask *is* the global one (P6/P7 here)

    def mean_of_both(mask, *args):
        return 0.5 * (mask(teacher, *args, temperature) + mask(student, *args, temperature))

    parts = {}
    with torch.no_grad():
        if mode in ("both", "global"):
            parts["global"] = (mean_of_both(global_spatial_mask), mean_of_both(global_channel_mask) if channel else None)
        if mode in ("both", "local"):
            parts["local"] = (mean_of_both(local_spatial_mask, patch_size),
                              mean_of_both(local_channel_mask, patch_size) if channel else None)
    return parts


def box_spatial_masks(foreground: torch.Tensor, patch_size: int = 7) -> dict[str, torch.Tensor]:
    """Ground-truth-box spatial weights normalised as GLAM's attention masks are, so a box mask can
    stand in for them with everything else unchanged (notebooks/09): ``global`` -- the box cells
    scaled to mean 1 over the map (as ``H W softmax``); ``local`` -- scaled to mean 1 over each
    patch's real cells. A map, or a patch, holding no box cell gets weight 1 everywhere: with nothing
    to prefer, the mask is uniform there. ``foreground``: B x 1 x H x W, 0 / 1."""
    _check_patch(patch_size)
    fg = foreground.float()
    h, w = fg.shape[-2:]
    per_map = fg.sum(dim=(2, 3), keepdim=True)
    glob = torch.where(per_map > 0, fg * (h * w) / per_map.clamp_min(1.0), torch.ones_like(fg))
    real = _real_cells(h, w, patch_size, fg)  # nh x nw x 1
    patches = _to_patches(fg, patch_size)  # B x 1 x nh x nw x p*p (padding 0)
    per_patch = patches.sum(dim=-1, keepdim=True)
    inside = _to_patches(torch.ones_like(fg), patch_size)  # 1 on real cells, 0 on padding
    local = torch.where(per_patch > 0, patches * real / per_patch.clamp_min(1.0), inside)
    return {"global": glob, "local": _from_patches(local, h, w, patch_size)}


def feature_weight(spatial: torch.Tensor, channel: torch.Tensor | None) -> torch.Tensor:
    return spatial if channel is None else spatial * channel


def glam(teacher: torch.Tensor, student: torch.Tensor, mode: MaskMode = "both", patch_size: int = 7,
         temperature: float = 0.5, channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights for the normalised distillation losses: ``(spatial, feature)``, detached.

    * ``spatial`` (B x 1 x H x W) weights per-location head losses;
    * ``feature`` (broadcastable to B x C x H x W) weights the feature imitation loss:
      the product of the spatial and channel masks.

    ``mode``: ``global`` -- Zhang & Ma's masks; ``local`` -- patch-wise masks; ``both`` (GLAMD) --
    the mean of the global and the local weights, i.e. the global-mask loss and the patch-wise loss
    averaged; ``uniform`` -- all ones (the "w/o GLAM" rows of the paper's Table 4).
    """
    parts = attention_masks(teacher, student, mode, patch_size, temperature, channel)
    spatial = [s for s, _ in parts.values()]
    feature = [feature_weight(s, c) for s, c in parts.values()]
    return sum(spatial) / len(spatial), sum(feature) / len(feature)
