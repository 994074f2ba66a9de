"""Mask against mask (issue #30): GLAMD's feature term on ground-truth-box weights, and DeFeat's
split on a GLAM foreground -- each a named option, keyed only when changed, on cases whose answer
is known."""

from dataclasses import replace

import pytest
import torch

from glamd_core import run_key
from glamd_core.detectors import build_detector
from glamd_core.distill import DistillConfig, Distiller
from glamd_core.masks import box_spatial_masks
from glamd_core.methods.defeat import defeat_feature_loss, glam_foreground
from glamd_core.profiles import get_profile


def test_box_masks_are_normalised_as_glams_are():
    fg = torch.zeros(1, 1, 4, 4)
    fg[..., :2, :2] = 1  # the top-left 2 x 2 cells
    m = box_spatial_masks(fg, patch_size=2)
    assert torch.equal(m["global"], fg * 4)  # mean 1 over the map: 16 / 4 on the box cells
    assert torch.equal(m["local"], torch.ones_like(fg))  # its patch is all box; the others hold none: uniform
    one = torch.zeros(1, 1, 4, 4)
    one[..., 0, 0] = 1
    local = box_spatial_masks(one, patch_size=2)["local"][0, 0]
    assert local[0, 0] == 4 and local[:2, :2].sum() == 4 and torch.equal(local[2:, 2:], torch.ones(2, 2))
    assert torch.equal(box_spatial_masks(torch.zeros(2, 1, 4, 4), 2)["global"], torch.ones(2, 1, 4, 4))  # no box
    odd = torch.zeros(1, 1, 5, 5)  # edge patches of 2 and 1 real cells: mean 1 over the real cells only
    odd[..., 4, 4] = 1
    assert box_spatial_masks(odd, 2)["local"][0, 0, 4, 4] == 1 and box_spatial_masks(odd, 2)["global"].mean() == 1


def _losses(config, boxes):
    torch.manual_seed(0)
    P = get_profile("smoke")
    teacher = build_detector("retinanet", P.teacher_backbone, 5, **P.detector)
    student = build_detector("retinanet", P.student_backbone, 5, **P.detector)
    d = Distiller(teacher, student, config).train()
    torch.manual_seed(1)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([boxes]), "labels": torch.tensor([2])}] * 2
    return {k: float(v.detach()) for k, v in d(images, targets).items() if k.startswith("distill_")}


def test_glamd_on_boxes_covering_the_image_is_glamd_without_masks_in_its_feature_term():
    base = DistillConfig("glamd", loss_form="normalised", channel_mask=False, attention_weight=0.0)
    everything = [0.0, 0.0, 64.0, 64.0]  # every cell is a box cell: box weights are 1 everywhere
    boxed = _losses(replace(base, glamd_feature_mask="boxes"), everything)
    uniform = _losses(replace(base, method="uniform"), everything)
    attention = _losses(base, everything)
    assert boxed["distill_feat"] == pytest.approx(uniform["distill_feat"], rel=1e-6)  # the known answer
    assert boxed["distill_feat"] != pytest.approx(attention["distill_feat"], rel=1e-4)
    # everything but the feature term stays GLAMD's: the head terms keep the attention masks
    assert (boxed["distill_cls"], boxed["distill_loc"]) == pytest.approx((attention["distill_cls"],
                                                                          attention["distill_loc"]), rel=1e-6)
    small = _losses(replace(base, glamd_feature_mask="boxes"), [8.0, 8.0, 24.0, 30.0])
    assert small["distill_feat"] != pytest.approx(boxed["distill_feat"], rel=1e-4)  # the boxes move it


def test_a_glam_foreground_is_a_soft_zero_to_one_map_and_defeat_splits_on_it():
    flat = torch.ones(2, 4, 6, 6)
    assert torch.allclose(glam_foreground(flat, flat, DistillConfig("defeat", patch_size=3, temperature=0.5)),
                          torch.ones(2, 1, 6, 6))  # nothing stands out: all foreground
    t = flat.clone()
    t[:, :, 1, 1] = 9.0
    fg = glam_foreground(t, t, DistillConfig("defeat", patch_size=3, temperature=0.5))
    assert fg.max() == 1 and fg[0, 0, 1, 1] == 1 and fg.min() > 0 and (fg <= 1).all()
    s = torch.zeros_like(t)
    sq = ((t - s) ** 2).mean(dim=1, keepdim=True)
    expected = 0.2 * (sq * fg).sum() / fg.sum() + 0.8 * (sq * (1 - fg)).sum() / (1 - fg).sum()
    assert defeat_feature_loss(t, s, fg, 0.2, 0.8) == pytest.approx(float(expected))  # soft weights, as defined
    config = DistillConfig("defeat", loss_form="normalised")
    boxed = _losses(config, [8.0, 8.0, 24.0, 30.0])
    soft = _losses(replace(config, defeat_foreground="glam"), [8.0, 8.0, 24.0, 30.0])
    assert soft["distill_feat"] != pytest.approx(boxed["distill_feat"], rel=1e-4)


def test_the_options_are_keyed_only_when_changed(tmp_path):
    from glamd_core.data.splits import dataset_root

    P = get_profile("smoke")
    root = dataset_root(P, data_dir=tmp_path)  # keys name the dataset's content: it must exist

    def key(config):
        return run_key.distilled_run("retinanet", P.student_backbone, P, config, 0, root, "teacher")[1]["distill"]

    assert "glamd_feature_mask" not in key(DistillConfig("glamd"))
    assert key(DistillConfig("glamd", glamd_feature_mask="boxes"))["glamd_feature_mask"] == "boxes"
    assert "defeat_foreground" not in key(DistillConfig("defeat"))
    assert key(DistillConfig("defeat", defeat_foreground="glam"))["defeat_foreground"] == "glam"
    with pytest.raises(ValueError, match="glamd_feature_mask"):
        DistillConfig("glamd", glamd_feature_mask="labels")
    with pytest.raises(ValueError, match="defeat_foreground"):
        DistillConfig("defeat", defeat_foreground="soft")
    assert "glamd_heads" not in key(DistillConfig("defeat"))
    assert key(DistillConfig("defeat", glamd_heads="reference"))["glamd_heads"] == "reference"
    with pytest.raises(ValueError, match="glamd_heads"):
        DistillConfig("defeat", glamd_heads="sums")
    with pytest.raises(ValueError, match="glamd_heads.*method='defeat'"):
        DistillConfig("glamd", glamd_heads="reference")


@pytest.mark.parametrize("kind,defeat_form,heads_form", [("retinanet", "normalised", "reference"),
                                                         ("faster_rcnn", "reference", "normalised")])
def test_the_hybrid_is_defeats_feature_term_plus_glamds_head_terms(kind, defeat_form, heads_form):
    """The hybrid recipe (issue #30), as the chosen recipes differ per kind: its feature term is DeFeat's,
    its head terms are GLAMD's head-only setting (alpha 0) in GLAMD's own loss form -- the same numbers,
    term for term, as the two methods computed separately on the same batch and weights."""
    torch.manual_seed(0)
    P = get_profile("smoke")
    teacher = build_detector(kind, P.teacher_backbone, 5, **P.detector)
    student = build_detector(kind, P.student_backbone, 5, **P.detector)
    torch.manual_seed(1)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([2])}] * 2

    def losses(config, adapters_from=None):
        d = Distiller(teacher, student, config).train()
        torch.manual_seed(2)
        if adapters_from is not None:  # the same adapter weights as the hybrid's parts
            d.method.load_state_dict(adapters_from.state_dict())
        torch.manual_seed(3)  # the same RPN / RoI sampling in every call
        out = {k: float(v.detach()) for k, v in d(images, targets).items() if k.startswith("distill_")}
        d.remove_hooks()
        return out, d.method

    defeat_config = DistillConfig("defeat", loss_form=defeat_form, alpha=0.7, beta=1.5, gamma=0.5)
    hybrid, module = losses(replace(defeat_config, glamd_heads=heads_form))
    alone, _ = losses(defeat_config, adapters_from=module.feature)
    heads, _ = losses(DistillConfig("glamd", loss_form=heads_form, alpha=0.0, beta=1.5, gamma=0.5),
                      adapters_from=module.heads)
    assert set(hybrid) == {"distill_feat", "distill_cls", "distill_loc"}
    assert hybrid["distill_feat"] == pytest.approx(alone["distill_feat"], rel=1e-6)
    assert (hybrid["distill_cls"], hybrid["distill_loc"]) == pytest.approx(
        (heads["distill_cls"], heads["distill_loc"]), rel=1e-6)
    assert set(alone) == {"distill_feat"}  # DeFeat as chosen: a feature term only

