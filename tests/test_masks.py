"""Masks against slow, obviously-correct loops, in float64."""

import math

import pytest
import torch

from glamd_core.masks import glam, global_channel_mask, global_spatial_mask, local_channel_mask, local_spatial_mask
from glamd_core.methods.defeat import box_foreground_mask


def ref_global_spatial(f, t):
    b, c, h, w = f.shape
    out = torch.zeros(b, 1, h, w, dtype=f.dtype)
    for i in range(b):
        g = [[sum(abs(float(f[i, k, y, x])) for k in range(c)) / c / t for x in range(w)] for y in range(h)]
        z = sum(math.exp(v) for row in g for v in row)
        for y in range(h):
            for x in range(w):
                out[i, 0, y, x] = h * w * math.exp(g[y][x]) / z
    return out


def ref_global_channel(f, t):
    b, c, h, w = f.shape
    out = torch.zeros(b, c, 1, 1, dtype=f.dtype)
    for i in range(b):
        g = [sum(abs(float(f[i, k, y, x])) for y in range(h) for x in range(w)) / (h * w) / t for k in range(c)]
        z = sum(math.exp(v) for v in g)
        for k in range(c):
            out[i, k, 0, 0] = c * math.exp(g[k]) / z
    return out


def _patches(h, w, p):
    for y0 in range(0, h, p):
        for x0 in range(0, w, p):
            yield [(y, x) for y in range(y0, min(y0 + p, h)) for x in range(x0, min(x0 + p, w))]


def ref_local_spatial(f, p, t):
    b, c, h, w = f.shape
    out = torch.zeros(b, 1, h, w, dtype=f.dtype)
    for i in range(b):
        for cells in _patches(h, w, p):
            g = {yx: sum(abs(float(f[i, k, yx[0], yx[1]])) for k in range(c)) / c / t for yx in cells}
            z = sum(math.exp(v) for v in g.values())
            for (y, x), v in g.items():
                out[i, 0, y, x] = len(cells) * math.exp(v) / z
    return out


def ref_local_channel(f, p, t):
    b, c, h, w = f.shape
    out = torch.zeros(b, c, h, w, dtype=f.dtype)
    for i in range(b):
        for cells in _patches(h, w, p):
            g = [sum(abs(float(f[i, k, y, x])) for y, x in cells) / len(cells) / t for k in range(c)]
            z = sum(math.exp(v) for v in g)
            for k in range(c):
                for y, x in cells:
                    out[i, k, y, x] = c * math.exp(g[k]) / z
    return out


SHAPES = [(2, 3, 7, 7), (1, 4, 10, 13), (2, 2, 5, 3), (1, 3, 15, 8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [0.5, 0.1])
def test_global_masks_match_reference(shape, t):
    f = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(global_spatial_mask(f, t), ref_global_spatial(f, t))
    torch.testing.assert_close(global_channel_mask(f, t), ref_global_channel(f, t))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [1, 2, 3, 7, 20])
def test_local_masks_match_reference(shape, p):
    f = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(local_spatial_mask(f, p, 0.5), ref_local_spatial(f, p, 0.5))
    torch.testing.assert_close(local_channel_mask(f, p, 0.5), ref_local_channel(f, p, 0.5))


@pytest.mark.parametrize("shape", SHAPES)
def test_masks_are_nonnegative_with_mean_one_per_image_and_per_patch(shape):
    f = torch.randn(*shape, dtype=torch.float64)
    b, c, h, w = shape
    for m in (global_spatial_mask(f), global_channel_mask(f)):
        assert (m >= 0).all()
        torch.testing.assert_close(m.flatten(1).mean(1), torch.ones(b, dtype=f.dtype))
    p = 3
    ls, lc = local_spatial_mask(f, p), local_channel_mask(f, p)
    assert ls.shape == (b, 1, h, w) and lc.shape == (b, c, h, w) and (ls >= 0).all() and (lc >= 0).all()
    for cells in _patches(h, w, p):
        ys, xs = zip(*cells)
        torch.testing.assert_close(ls[:, 0, list(ys), list(xs)].mean(1), torch.ones(b, dtype=f.dtype))
        torch.testing.assert_close(lc[:, :, ys[0], xs[0]].mean(1), torch.ones(b, dtype=f.dtype))


def test_patch_as_large_as_the_map_is_the_global_mask():
    f = torch.randn(2, 5, 6, 9, dtype=torch.float64)
    for p in (9, 50):
        torch.testing.assert_close(local_spatial_mask(f, p), global_spatial_mask(f))
        torch.testing.assert_close(local_channel_mask(f, p), global_channel_mask(f).expand_as(f))


def test_padding_is_not_mistaken_for_zero_features():
    """Real zero features must take part; padded cells must not (no 'value == 0' detection)."""
    f = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    f[0, :, 0, 0] = 3.0
    torch.testing.assert_close(local_spatial_mask(f, 3), ref_local_spatial(f, 3, 0.5))
    # a patch of all-zero real features gives a uniform mask of 1
    assert torch.allclose(local_spatial_mask(f, 3)[0, 0, 3:, 3:], torch.ones(1, 2, dtype=f.dtype))


def test_glam_modes():
    t, s = torch.randn(2, 4, 9, 11), torch.randn(2, 4, 9, 11)
    us, uf = glam(t, s, "uniform")
    assert torch.equal(us, torch.ones(2, 1, 9, 11)) and torch.equal(uf, torch.ones(2, 1, 9, 11))
    gs, gf = glam(t, s, "global")
    torch.testing.assert_close(gs, (global_spatial_mask(t) + global_spatial_mask(s)) / 2)
    torch.testing.assert_close(gf, gs * (global_channel_mask(t) + global_channel_mask(s)) / 2)
    ls, lf = glam(t, s, "local", patch_size=4)
    bs, bf = glam(t, s, "both", patch_size=4)
    torch.testing.assert_close(bs, (gs + ls) / 2)
    torch.testing.assert_close(bf, (gf + lf) / 2)
    for m in (gs, ls, bs):
        torch.testing.assert_close(m.mean(dim=(1, 2, 3)), torch.ones(2))
    # one patch covering the map: GLAM is the global mask
    for got, want in zip(glam(t, s, "both", patch_size=11), (gs, gf)):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="mask mode"):
        glam(t, s, "half")
    with pytest.raises(ValueError, match="same shape"):
        glam(t, s[:, :3])
    with pytest.raises(ValueError, match="patch_size"):
        local_spatial_mask(t, 0)


@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 2, 7, 7), (1, 2, 16, 5)])
def test_glam_local_weights_match_reference(shape):
    """``glam`` against the loop references."""
    t, s = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    p = 4
    ref_s = (ref_local_spatial(t, p, 0.5) + ref_local_spatial(s, p, 0.5)) / 2
    ref_c = (ref_local_channel(t, p, 0.5) + ref_local_channel(s, p, 0.5)) / 2
    spatial, feature = glam(t, s, "local", patch_size=p)
    torch.testing.assert_close(spatial, ref_s)
    torch.testing.assert_close(feature, ref_s * ref_c)
    g_s = (ref_global_spatial(t, 0.5) + ref_global_spatial(s, 0.5)) / 2
    g_c = (ref_global_channel(t, 0.5) + ref_global_channel(s, 0.5)) / 2
    spatial, feature = glam(t, s, "both", patch_size=p)
    torch.testing.assert_close(spatial, (g_s + ref_s) / 2)
    torch.testing.assert_close(feature, (g_s * g_c + ref_s * ref_c) / 2)


def test_glam_masks_carry_no_gradient():
    t, s = torch.randn(1, 3, 8, 8, requires_grad=True), torch.randn(1, 3, 8, 8, requires_grad=True)
    spatial, feature = glam(t, s)
    assert not spatial.requires_grad and not feature.requires_grad


def ref_box_mask(boxes, h, w, stride):
    out = torch.zeros(len(boxes), 1, h, w, dtype=torch.bool)
    for i, bs in enumerate(boxes):
        for x1, y1, x2, y2 in bs.tolist():
            for y in range(h):
                for x in range(w):
                    cy, cx = (y + 0.5) * stride, (x + 0.5) * stride
                    if x1 <= cx <= x2 and y1 <= cy <= y2:
                        out[i, 0, y, x] = True
            yc = min(max(int(math.floor((y1 + y2) / 2 / stride)), 0), h - 1)
            xc = min(max(int(math.floor((x1 + x2) / 2 / stride)), 0), w - 1)
            out[i, 0, yc, xc] = True
    return out


@pytest.mark.parametrize("stride", [8, 16, 64])
def test_box_foreground_mask_matches_reference(stride):
    torch.manual_seed(stride)
    xy = torch.rand(5, 2) * 120
    wh = torch.rand(5, 2) * 60 + 1  # includes boxes smaller than a cell at stride 64
    boxes = [torch.cat([xy, (xy + wh).clamp(max=127.9)], dim=1), torch.zeros(0, 4),
             torch.tensor([[0.0, 0.0, 127.9, 127.9]]), torch.tensor([[60.0, 61.0, 62.0, 63.0]])]
    h = w = 128 // stride
    got = box_foreground_mask(boxes, h, w, stride)
    torch.testing.assert_close(got, ref_box_mask(boxes, h, w, stride))
    assert not got[1].any() and got[2].all()
    assert got[3].sum() == 1  # a 2-pixel box still marks one cell
