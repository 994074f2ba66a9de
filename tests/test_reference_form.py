"""The reference loss form against direct transcriptions of the published code.

The ``_ref_*`` functions below are written from the GLAMD authors' mmdetection files
(``two_stage.py`` / ``single_stage.py``) and DeFeat's official ``get_gt_mask`` and
``batch_processor_kd``, line by line in their own style (unfold, ``x == 0`` padding detection,
``torch.dist``, ``nn.PairwiseDistance``, mmdetection's IoU loss), not from our code. Our terms must
equal them on small random tensors.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glamd_core import losses as L
from glamd_core.distill import DistillConfig, Distiller
from glamd_core.methods import AttentionMaskDistillation
from glamd_core.methods.attention_masks import per_anchor
from glamd_core.methods.defeat import DeFeatDistillation, level_masks_by_size, reference_defeat_feature_term

from test_detectors import _batch
from test_distill import DISTILL_KEYS, _pair


# -- transcription of the GLAMD authors' code ---------------------------------------------------
def _ref_masked_softmax(x, **kwargs):
    weight = torch.sum((x != 0), dim=2, keepdim=True)
    x[x == 0] = -float("inf")
    return torch.softmax(x, **kwargs) * weight


def _ref_dist2(a, b, attention_mask=None, channel_attention_mask=None):
    diff = (a - b) ** 2
    if attention_mask is not None:
        diff = diff * attention_mask
    if channel_attention_mask is not None:
        diff = diff * channel_attention_mask
    return torch.sum(diff) ** 0.5


def _ref_pairwise_dist2(a, b, attention_mask=None, channel_attention_mask=None, eps=1e-10):
    patch_num = a.shape[3]
    diff = (a - b) ** 2
    if attention_mask is not None:
        diff = diff * attention_mask
    if channel_attention_mask is not None:
        diff = diff * channel_attention_mask
    diff = diff.permute(3, 0, 1, 2).reshape(patch_num, -1)
    return torch.sum((torch.sum(diff, dim=1) + eps) ** 0.5)


def _ref_attention_mask(feature, t, kind):
    b, c, h, w = feature.shape
    if kind == "spatial":
        mask = torch.mean(torch.abs(feature), [1], keepdim=True).view(b, -1)
        return (torch.softmax(mask / t, dim=1) * h * w).view(b, 1, h, w)
    mask = torch.mean(torch.abs(feature), [2, 3], keepdim=True).view(b, -1)
    return (torch.softmax(mask / t, dim=1) * c).view(b, c, 1, 1)


def _ref_local(t_feature, s_feature, adaptation, channel_adaptation, one_stage, patch_size=7):
    """``calculate_local_attention_loss`` of either file, with its constants."""
    t = 0.1 if one_stage else 0.5
    b, c, h, w = t_feature.shape
    adap_s_feature = adaptation(s_feature)
    height_num, height_pad = -(-h // patch_size), (-h) % patch_size
    width_num, width_pad = -(-w // patch_size), (-w) % patch_size
    patch_num = height_num * width_num
    t_channel = F.avg_pool2d(t_feature, (patch_size, patch_size), stride=patch_size, ceil_mode=True)
    s_channel = F.avg_pool2d(s_feature, (patch_size, patch_size), stride=patch_size, ceil_mode=True)
    if one_stage:
        t_cmask = F.avg_pool2d(t_feature.abs(), (patch_size, patch_size), stride=patch_size, ceil_mode=True)
        s_cmask = F.avg_pool2d(s_feature.abs(), (patch_size, patch_size), stride=patch_size, ceil_mode=True)
        t_cmask = (torch.softmax(t_cmask.view(b, c, patch_num) / t, dim=1) * c).unsqueeze(2)
        s_cmask = (torch.softmax(s_cmask.view(b, c, patch_num) / t, dim=1) * c).unsqueeze(2)
    pad = (0, width_pad, 0, height_pad)
    tf, sf, af = (F.unfold(F.pad(x, pad), patch_size, stride=patch_size).view(b, c, patch_size * patch_size, patch_num)
                  for x in (t_feature, s_feature, adap_s_feature))
    t_smask = _ref_masked_softmax(torch.mean(torch.abs(tf), [1], keepdim=True) / t, dim=2)
    s_smask = _ref_masked_softmax(torch.mean(torch.abs(sf), [1], keepdim=True) / t, dim=2)
    smask = (torch.abs(t_smask + s_smask) / 2).detach()
    if one_stage:
        cmask = ((t_cmask + s_cmask) / 2).detach()
        kd_feat = _ref_pairwise_dist2(tf, af, smask, cmask, eps=0.0) * 7e-5 * 6
    else:
        kd_feat = _ref_pairwise_dist2(tf, af, smask, None) * 7e-5
    t_channel = t_channel.view(b, c, patch_num).permute(2, 0, 1)
    s_channel = channel_adaptation(s_channel.view(b, c, patch_num).permute(2, 0, 1))
    pdist = nn.PairwiseDistance(p=2)
    kd_channel = torch.mean(pdist(t_channel.reshape(patch_num, -1), s_channel.reshape(patch_num, -1)))
    kd_channel = kd_channel * (4e-3 * 3 if one_stage else 4e-3)
    folded = F.fold(smask.squeeze(1), (h + height_pad, w + width_pad), patch_size, stride=patch_size)
    return kd_feat, kd_channel, folded[:, :, :h, :w]


def _ref_level(t_feat, s_feat, adaptation, channel_adaptation, spatial_adaptation, one_stage):
    """One level of ``forward_train``'s feature, channel and spatial terms, and its head mask."""
    t = 0.1 if one_stage else 0.5
    b = t_feat.shape[0]
    g_mask = ((_ref_attention_mask(t_feat, t, "spatial") + _ref_attention_mask(s_feat, t, "spatial")) / 2).detach()
    local_feat, local_channel, local_mask = _ref_local(t_feat, s_feat, adaptation, channel_adaptation, one_stage)
    total_mask = (local_mask + g_mask) / 2
    channel_global = torch.dist(torch.mean(t_feat, [2, 3]), channel_adaptation(torch.mean(s_feat, [2, 3])))
    t_pool = torch.mean(t_feat, [1]).view(b, 1, *t_feat.shape[2:])
    s_pool = torch.mean(s_feat, [1]).view(b, 1, *s_feat.shape[2:])
    spatial = torch.dist(t_pool, spatial_adaptation(s_pool))
    if one_stage:
        c_mask = ((_ref_attention_mask(t_feat, t, "channel") + _ref_attention_mask(s_feat, t, "channel")) / 2).detach()
        global_feat = _ref_dist2(t_feat, adaptation(s_feat), g_mask, c_mask) * 7e-5 * 6
        feat = (local_feat + global_feat) / 2
        channel = channel_global * 4e-3 * 3 + local_channel
        spatial = spatial * 4e-3 * 6
    else:
        feat = (_ref_dist2(t_feat, adaptation(s_feat), g_mask, None) * 7e-5 + local_feat) / 2
        channel = (channel_global * 4e-3 + local_channel) / 2
        spatial = spatial * 4e-3
    return feat + channel + spatial, total_mask


def _method(two_stage, method="glamd", channels=8, **settings):
    config = DistillConfig(method=method, loss_form="reference", **settings).resolved(two_stage)
    torch.manual_seed(0)
    return AttentionMaskDistillation(config, two_stage, channels, channels, levels=1)


@pytest.mark.parametrize("two_stage", [True, False])
@pytest.mark.parametrize("shape", [(2, 8, 11, 9), (1, 8, 15, 14), (2, 8, 7, 7)])
def test_reference_feature_and_attention_terms_equal_the_authors_code(two_stage, shape):
    torch.manual_seed(1)
    t_feat, s_feat = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    m = _method(two_stage).double()
    want, want_mask = _ref_level(t_feat, s_feat, m.adapters[0], m.channel_adapters[0], m.spatial_adapters[0],
                                 one_stage=not two_stage)
    parts = m.masks(t_feat, s_feat)  # reference: masks from the raw student map
    got = m.reference_level(0, t_feat, s_feat, m.adapters[0](s_feat), parts)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    head_mask = sum(s for s, _ in parts.values()) / len(parts)
    torch.testing.assert_close(head_mask, want_mask)


def test_reference_form_settings_per_detector_kind():
    two = DistillConfig(loss_form="reference").resolved(True)
    one = DistillConfig(loss_form="reference").resolved(False)
    assert (two.temperature, two.channel_mask, two.student_masks, two.distill_roi) == (0.5, False, "raw", False)
    assert (one.temperature, one.channel_mask, one.student_masks) == (0.1, True, "raw")
    ours = DistillConfig().resolved(False)
    assert (ours.temperature, ours.channel_mask, ours.student_masks, ours.distill_roi) == (0.5, True, "adapted", True)
    assert DistillConfig(loss_form="reference", temperature=0.3).resolved(True).temperature == 0.3  # explicit wins
    d = DistillConfig(method="defeat", loss_form="reference").resolved(True)
    assert (d.defeat_fg_weight, d.defeat_bg_weight, d.defeat_levels, d.defeat_adapter) == (3.0, 12.0, "by_size", "3x3")
    with pytest.raises(ValueError, match="loss_form"):
        DistillConfig(loss_form="paper")


# -- heads: the authors' per-level loop --------------------------------------------------------
def _ref_iou_loss(pred, target, weight, eps=1e-6):
    """mmdetection 2.x ``IoULoss(linear=True)``: aligned ``bbox_overlaps``, clamp, 1 - IoU, weighted mean."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    area1 = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area2 = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = torch.max(area1 + area2 - overlap, torch.tensor(eps, dtype=pred.dtype))
    ious = (overlap / union).clamp(min=eps)
    return ((1 - ious) * weight).mean()


def _boxes(n, gen):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 50
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 30 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("classes", [1, 3])  # RPN objectness, RetinaNet classes
def test_reference_head_terms_equal_the_authors_loop(classes):
    gen = torch.Generator().manual_seed(2)
    b, a, h, w = 2, 3, 4, 5
    s_cls = torch.randn(b, a * classes, h, w, generator=gen, dtype=torch.float64)  # mmdetection layout
    t_cls = torch.randn(b, a * classes, h, w, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, 1, h, w, generator=gen, dtype=torch.float64) + 0.1
    n = b * h * w * a
    s_box, t_box = _boxes(n, gen), _boxes(n, gen)  # mmdetection order: (b, y, x, anchor)
    # the authors' loop body for one level
    loss_map = F.binary_cross_entropy(s_cls.sigmoid(), t_cls.sigmoid(), reduction="none")
    want_cls = (loss_map * mask).sum() / mask.sum()
    reg_mask = mask.expand(b, 4 * a, h, w).permute(0, 2, 3, 1).reshape(-1, 4)[:, 0]
    want_loc = _ref_iou_loss(s_box, t_box, reg_mask)
    # ours, in torchvision's layout: B x (H W A) [x K], anchors ordered (y, x, anchor)

    def ours_layout(x):
        x = x.view(b, a, classes, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, classes)
        return x[..., 0] if classes == 1 else x

    weight = per_anchor(mask, a)
    got_cls = L.reference_sigmoid_head_term(ours_layout(s_cls), ours_layout(t_cls), weight, a)
    got_loc = L.reference_iou_head_term(s_box.view(b, -1, 4), t_box.view(b, -1, 4), weight)
    torch.testing.assert_close(got_cls, want_cls)
    torch.testing.assert_close(got_loc, want_loc)


# -- DeFeat: the official get_gt_mask and decoupled loss ------------------------------------------
def _ref_gt_masks(gt_bboxes, featmap_sizes, featmap_strides):
    def map_roi_levels(rois, num_levels):
        scale = torch.sqrt((rois[:, 2] - rois[:, 0] + 1) * (rois[:, 3] - rois[:, 1] + 1))
        return torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=num_levels - 1).long()

    out = [[] for _ in featmap_sizes]
    for batch in range(len(gt_bboxes)):
        target_lvls = map_roi_levels(gt_bboxes[batch], len(featmap_sizes))
        for level in range(len(featmap_sizes)):
            gt_level = gt_bboxes[batch][target_lvls == level]
            h, w = featmap_sizes[level]
            mask_per_img = torch.zeros([h, w], dtype=torch.double)
            for ins in range(gt_level.shape[0]):
                g = gt_level[ins] / featmap_strides[level]
                lx, rx = max(int(g[0]), 0), min(int(g[2]), w)
                ly, ry = max(int(g[1]), 0), min(int(g[3]), h)
                if (lx == rx) or (ly == ry):
                    mask_per_img[ly, lx] += 1
                else:
                    mask_per_img[ly:ry, lx:rx] += 1
            out[level].append((mask_per_img > 0).double())
    return [torch.stack(m) for m in out]


def _ref_defeat_loss(student_adapted, teacher, masks, fg_w=3.0, bg_w=12.0):
    fg_loss, bg_loss = 0.0, 0.0
    for s, t, m in zip(student_adapted, teacher, masks):
        mask_hint = m.unsqueeze(1).repeat(1, s.size(1), 1, 1)
        norms = max(1.0, mask_hint.sum() * 2)
        norms_back = max(1.0, (1 - mask_hint).sum() * 2)
        bg_loss += (torch.pow(s - t, 2) * (1 - mask_hint)).sum() / norms_back
        fg_loss += (torch.pow(s - t, 2) * mask_hint).sum() / norms
    return fg_w * fg_loss / len(masks) + bg_w * bg_loss / len(masks)


def test_defeat_reference_masks_and_loss_equal_the_official_code():
    strides = [4, 8, 16, 32, 64]
    sizes = [(200 // s, 304 // s) for s in strides]
    boxes = [torch.tensor([[10.0, 12.0, 60.0, 90.0], [100.0, 20.0, 290.0, 190.0], [5.0, 5.0, 7.0, 40.0]]),
             torch.tensor([[0.0, 0.0, 303.0, 199.0], [150.0, 150.0, 151.0, 151.0]])]
    want = _ref_gt_masks(boxes, sizes, strides)
    got = level_masks_by_size(boxes, sizes, [float(s) for s in strides])
    for g, m in zip(got, want):
        assert torch.equal(g[:, 0].double(), m)
    assert sum(int(m.sum()) for m in want) > 0 and want[1].sum() > 0  # boxes land on more than one level
    gen = torch.Generator().manual_seed(3)
    t = [torch.randn(2, 4, h, w, generator=gen, dtype=torch.float64) for h, w in sizes]
    s = [torch.randn(2, 4, h, w, generator=gen, dtype=torch.float64) for h, w in sizes]
    ours = sum(reference_defeat_feature_term(tt, ss, g) for tt, ss, g in zip(t, s, got)) / len(got)
    torch.testing.assert_close(ours, _ref_defeat_loss(s, t, want))


def test_defeat_reference_adapter_is_a_near_zero_3x3_conv():
    config = DistillConfig(method="defeat", loss_form="reference").resolved(True)
    m = DeFeatDistillation(config, True, 16, 32, levels=4)
    for a in m.adapters:
        assert a.kernel_size == (3, 3) and a.weight.abs().max() < 2e-4 and a.weight.abs().max() > 0


# -- the whole Distiller in the reference form ------------------------------------------------
@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
@pytest.mark.parametrize("method", ["glamd", "global", "local", "uniform", "defeat"])
def test_reference_form_trains_the_student_only(kind, method):
    teacher, student = _pair(kind, student_fpn=32)  # raw-student channel masks need equal widths
    d = Distiller(teacher, student, DistillConfig(method=method, loss_form="reference")).train()
    losses = d(*_batch())
    got = set(losses) & DISTILL_KEYS
    assert got == ({"distill_feat"} if method == "defeat" else DISTILL_KEYS)
    assert all(torch.isfinite(losses[k]) and losses[k] > 0 for k in got)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert next(student.backbone.body.parameters()).grad.abs().sum() > 0


def test_raw_student_channel_masks_need_equal_widths():
    teacher, student = _pair("retinanet")  # student FPN 16, teacher 32
    with pytest.raises(ValueError, match="equal FPN widths"):
        Distiller(teacher, student, DistillConfig(loss_form="reference"))
    Distiller(teacher, student, DistillConfig(loss_form="reference", student_masks="adapted"))
    assert math.isclose(DistillConfig(loss_form="reference").resolved(True).temperature, 0.5)


def test_defeat_reference_levels_start_at_stride_8_here():
    """Our pyramids start at stride 8: DeFeat's k = 0 (its stride-4 P2) goes to our finest level,
    k = 2 (stride 16) to our second."""
    strides = [8.0, 16.0, 32.0, 64.0]
    sizes = [(512 // int(s), 512 // int(s)) for s in strides]
    small, large = [10.0, 10.0, 40.0, 40.0], [0.0, 0.0, 300.0, 300.0]  # sqrt(31^2)/56 -> k = 0; sqrt(301^2)/56 -> k = 2
    masks = level_masks_by_size([torch.tensor([small, large])], sizes, strides)
    assert masks[0][0, 0, 1:5, 1:5].all() and int(masks[0].sum()) == 16  # cells int(10/8):int(40/8)
    assert masks[1][0, 0, :18, :18].all() and int(masks[1].sum()) == 18 * 18  # cells 0:int(300/16)
    assert int(masks[2].sum()) == int(masks[3].sum()) == 0


def test_reference_retinanet_head_leaves_out_the_background_logit():
    teacher, student = _pair("retinanet", student_fpn=32)
    d = Distiller(teacher, student, DistillConfig(loss_form="reference", alpha=0.0, gamma=0.0)).train()
    torch.manual_seed(0)
    base = float(d(*_batch())["distill_cls"].detach())
    with torch.no_grad():  # a large change of the class-0 (background) logit bias only
        student.head.classification_head.cls_logits.bias.view(-1, 4)[:, 0] += 5.0
    torch.manual_seed(0)
    assert float(d(*_batch())["distill_cls"].detach()) == pytest.approx(base, rel=1e-6)
