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
    """B x K x H x W -> (B x K x nh x nw x p*p patches, validity of each cell, same shape, bool)."""
    b, k, h, w = x.shape
    nh, nw = math.ceil(h / p), math.ceil(w / p)
    pad = (0, nw * p - w, 0, nh * p - h)
    xp = F.pad(x, pad)
    valid = F.pad(torch.ones(1, 1, h, w, dtype=torch.bool, device=x.device), pad)

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], nh, p, nw, p).permute(0, 1, 2, 4, 3, 5).reshape(
            t.shape[0], t.shape[1], nh, nw, p * p)

    return split(xp), split(valid)


def _from_patches(patches: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of :func:`_to_patches`, dropping the padded cells."""
    b, k, nh, nw, _ = patches.shape
    full = patches.reshape(b, k, nh, nw, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, k, nh * p, nw * p)
    return full[:, :, :h, :w]


def _check_patch(patch_size: int) -> None:
    if int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")


def local_spatial_mask(feat: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> torch.Tensor:
    _check_patch(patch_size)
    h, w = feat.shape[-2:]
    logits, valid = _to_patches(spatial_logits(feat) / temperature, patch_size)
    soft = logits.masked_fill(~valid, float("-inf")).softmax(dim=-1)
    n_real = valid.sum(dim=-1, keepdim=True)
    return _from_patches(soft * n_real, h, w, patch_size)


def _band_index(n: int, p: int, device) -> torch.Tensor:
    return torch.arange(n, device=device) // p


def _patch_sums(x: torch.Tensor, p: int) -> torch.Tensor:
    """B x K x H x W -> B x K x nh x nw: sum over each patch's real cells.

    Rows are added into their band with ``index_add_`` (one pass over the unpadded map, long
    contiguous inner loops; ragged bands need no padding), then columns on a map p times smaller.
    avg_pool2d, a reduction over a length-p view, or F.pad + reshape measured 1.5-3x slower on CPU.
    """
    b, k, h, w = x.shape
    nh, nw = math.ceil(h / p), math.ceil(w / p)
    rows = x.new_zeros(b, k, nh, w).index_add_(2, _band_index(h, p, x.device), x)
    return x.new_zeros(b, k, nh, nw).index_add_(3, _band_index(w, p, x.device), rows)


def _patch_cell_counts(h: int, w: int, p: int, like: torch.Tensor) -> torch.Tensor:
    """nh x nw: number of real cells of each patch (ragged patches on the right / bottom edge)."""
    def sizes(n):
        return torch.tensor([min(p, n - i) for i in range(0, n, p)], dtype=like.dtype, device=like.device)
    return sizes(h)[:, None] * sizes(w)[None, :]


def _patchwise_product(spatial: torch.Tensor, per_patch: torch.Tensor, p: int,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """``spatial[b, 0, y, x] * per_patch[b, c, y // p, x // p]`` as a B x C x H x W tensor, added
    into ``out`` in place when given.

    ``per_patch`` is widened along W only (a tensor p times smaller than the output), then each band
    of p rows is one broadcast multiply whose inner loop runs along whole rows; the per-patch values
    are never upsampled to full size.
    """
    b, _, h, w = spatial.shape
    c = per_patch.shape[1]
    wide = per_patch.repeat_interleave(p, dim=-1)[..., :w]  # B x C x nh x W
    accumulate = out is not None
    if out is None:
        out = spatial.new_empty(b, c, h, w)
    full, rest = divmod(h, p)
    regions = []
    if full:
        regions.append((slice(0, full * p), slice(0, full), full, p))
    if rest:
        regions.append((slice(full * p, h), slice(full, full + 1), 1, rest))
    for rows, bands, n, ph in regions:
        region = out[:, :, rows].view(b, c, n, ph, w)
        s = spatial[:, :, rows].reshape(b, 1, n, ph, w)
        v = wide[:, :, bands].unsqueeze(3)
        if accumulate:
            region.addcmul_(s, v)
        else:
            torch.mul(s, v, out=region)
    return out


def local_channel_mask(feat: torch.Tensor, patch_size: int = 7, temperature: float = 0.5) -> torch.Tensor:
    """B x C x H x W: every cell carries the channel mask of its patch (channel logits = mean |F|
    over the patch's real cells)."""
    _check_patch(patch_size)
    b, c, h, w = feat.shape
    logits = _patch_sums(feat.abs(), patch_size) / _patch_cell_counts(h, w, patch_size, feat)
    per_patch = c * (logits / temperature).softmax(dim=1)
    return _patchwise_product(feat.new_ones(b, 1, h, w), per_patch, patch_size)


def abs_statistics(feat: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two statistics of |F| every mask is made of: its mean over channels (B x 1 x H x W) and
    its sum over each patch of every channel (B x C x nh x nw; one patch per map when
    ``patch_size >= max(H, W)``, the global case, which uses the faster contiguous reduction).
    The single place where masks read the full feature map; a fused kernel would replace this."""
    b, c, h, w = feat.shape
    abs_feat = feat.abs()
    spatial = abs_feat.mean(dim=1, keepdim=True)
    if patch_size >= max(h, w):
        return spatial, abs_feat.sum(dim=(2, 3), keepdim=True)
    return spatial, _patch_sums(abs_feat, patch_size)


def _masks_of(feat: torch.Tensor, patch_size: int, temperature: float, want_global: bool, want_local: bool):
    """All masks of one feature map from one |F|: spatial logits (mean over channels), and either
    the global channel logits (mean over positions) or the per-patch ones, from which the global
    ones are the cell-count-weighted mean, so the local masks cost one reduction, not two."""
    b, c, h, w = feat.shape
    spatial, sums = abs_statistics(feat, patch_size if want_local else max(h, w))
    spatial = spatial / temperature
    out = {}
    if want_local:
        patch_spatial, valid = _to_patches(spatial, patch_size)
        patch_logits = sums / _patch_cell_counts(h, w, patch_size, feat)
        channel = sums.sum(dim=(2, 3), keepdim=True) / (h * w)
    else:
        channel = sums / (h * w)
    if want_global:
        out["global"] = (h * w * spatial.reshape(b, -1).softmax(dim=1).reshape(b, 1, h, w),
                         c * (channel / temperature).softmax(dim=1))
    if want_local:
        soft = patch_spatial.masked_fill(~valid, float("-inf")).softmax(dim=-1) * valid.sum(dim=-1, keepdim=True)
        out["local"] = (_from_patches(soft, h, w, patch_size), c * (patch_logits / temperature).softmax(dim=1))
    return out


def glam(teacher: torch.Tensor, student: torch.Tensor, mode: MaskMode = "both", patch_size: int = 7,
         temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights for the distillation losses: ``(spatial, feature)``.

    * ``spatial`` (B x 1 x H x W) weights per-location head losses;
    * ``feature`` (broadcastable to B x C x H x W) weights the feature imitation loss:
      the product of the spatial and channel masks.

    ``mode``: ``global`` -- Zhang & Ma's masks; ``local`` -- patch-wise masks; ``both`` (GLAMD) --
    the mean of the global and the local weights, i.e. the global-mask loss and the patch-wise
    loss averaged; ``uniform`` -- all ones (the "w/o GLAM" rows of the paper's Table 4).
    ``student`` must already have the teacher's channel count (adapted features).
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
    want_global, want_local = mode in ("both", "global"), mode in ("both", "local")
    with torch.no_grad():
        mt = _masks_of(teacher, patch_size, temperature, want_global, want_local)
        ms = _masks_of(student, patch_size, temperature, want_global, want_local)
        # Each mask is the mean of the teacher's and the student's (Zhang & Ma); with both parts,
        # GLAM = the mean of the global and the local weights. The 1/2s are folded into the
        # small channel masks so the full-size weight is formed in two passes.
        scale = 0.5 if mode == "both" else 1.0
        spatial, feature = None, None
        if want_global:
            g_s = 0.5 * (mt["global"][0] + ms["global"][0])
            g_c = (0.5 * scale) * (mt["global"][1] + ms["global"][1])
            spatial, feature = g_s, g_s * g_c
        if want_local:
            l_s = 0.5 * (mt["local"][0] + ms["local"][0])
            l_c = (0.5 * scale) * (mt["local"][1] + ms["local"][1])  # B x C x nh x nw
            spatial = l_s if spatial is None else 0.5 * (spatial + l_s)
            feature = _patchwise_product(l_s, l_c, patch_size, out=feature)
    return spatial, feature


# -- ground-truth masks (the DeFeat baseline) ---------------------------------------------------

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
