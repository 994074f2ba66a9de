"""Loading trained runs and the feature / mask analyses built on them (smoke-sized runs)."""

import pytest
import torch

from glamd_core.analysis import feature_distances, fpn_features, load_run, patch_l1, sample_indices, stage_masks
from glamd_core.experiments import Experiment


def test_patch_l1_against_a_loop():
    torch.manual_seed(0)
    t, s = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)
    got = patch_l1(t, s, 3)
    assert got.shape == (2, 2, 3)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                cell = (t - s)[b, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3].abs()
                assert got[b, i, j] == pytest.approx(float(cell.mean()), rel=1e-5)


def test_sample_indices_are_seeded_and_distinct():
    a = sample_indices(50, 14, seed=3)
    assert a == sample_indices(50, 14, seed=3) and len(set(a)) == 14 and a != sample_indices(50, 14, seed=4)
    with pytest.raises(ValueError):
        sample_indices(5, 6)


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_loaded_runs_reproduce_their_evaluation_and_feed_the_analyses(tmp_path, kind):
    kw = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    teacher = load_run(Experiment(kind, "teacher", "smoke"), **kw)
    alone = load_run(Experiment(kind, "none", "smoke"), **kw)
    glamd = load_run(Experiment(kind, "glamd", "smoke"), **kw)
    assert teacher.adapters is None and glamd.adapters is not None and not glamd.model.training
    # the loaded student gives the detections its run evaluated
    from glamd_core.evaluation import evaluate
    ds = glamd.dataset("test")
    assert evaluate(glamd.model, ds)["AP"] == pytest.approx(glamd.result["metrics"]["test"]["AP"], abs=1e-9)

    images = [ds[i][0] for i in range(2)]
    maps, frame = feature_distances(teacher, {"alone": alone, "GLAMD": glamd}, images, patch_size=2)
    levels = len(glamd.adapters)
    assert len(frame) == 2 * 2 * levels and (frame.L1 > 0).all()
    h, w = fpn_features(teacher.model, images[0])[0].shape[-2:]
    assert maps["GLAMD", 0, 0].shape == maps["alone", 0, 0].shape == (-(-h // 2), -(-w // 2))  # ceil: edge patches
    masks = stage_masks(teacher.model, images[0], patch_size=2)
    assert len(masks) == levels
    for m in masks:
        assert m["global"].shape == m["local"].shape and m["global"].mean() == pytest.approx(1.0, rel=1e-4)

    from glamd_core.analysis import coverage_summary, teacher_mask_coverage
    cov = teacher_mask_coverage(teacher, [0, 1], patch_sizes=(2, 64), temperature=0.5)
    assert list(dict.fromkeys(cov["mask"])) == ["global", "GLAM, patch 2", "GLAM, patch 64", "DeFeat boxes", "uniform"]
    by = cov.set_index(["image", "level", "mask"])
    uniform, boxes = by.xs("uniform", level="mask"), by.xs("DeFeat boxes", level="mask")
    assert (uniform.inside - uniform.area).abs().max() < 1e-9 and (uniform.lift - 1).abs().max() < 1e-9
    assert (boxes.inside - 1).abs().max() < 1e-9 and (boxes.boxes_holding == 1).all()  # labels: all on the boxes
    # a patch covering the map: GLAM's local part is its global one
    assert (by.xs("GLAM, patch 64", level="mask").inside - by.xs("global", level="mask").inside).abs().max() < 1e-6
    assert (cov.peak > 0).all() and (cov.peak <= 1).all()
    summary = coverage_summary(cov)
    assert len(summary) == levels * 5 and list(summary["mask"][:5]) == list(dict.fromkeys(cov["mask"]))


def test_mask_coverage_on_a_hand_made_map():
    import numpy as np
    import pytest
    import torch

    from glamd_core.analysis import mask_coverage

    # 4 x 4 map, stride 8 (a 32-px image): weight 1 everywhere, 5 on the top-left cell (total 20)
    mask = np.ones((4, 4))
    mask[0, 0] = 5.0
    big = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # the top-left 2 x 2 cells: 8 / 20 of the weight, 4 / 16 of the map
    small = torch.tensor([[24.0, 24.0, 32.0, 32.0]])  # the bottom-right cell: 1 / 20 against 1 / 16
    assert mask_coverage(mask, big, 8) == pytest.approx({"inside": 0.4, "area": 0.25, "boxes_holding": 1.0})
    assert mask_coverage(mask, small, 8) == pytest.approx({"inside": 0.05, "area": 1 / 16, "boxes_holding": 0.0})
    both = mask_coverage(mask, torch.cat([big, small]), 8)
    assert both == pytest.approx({"inside": 0.45, "area": 5 / 16, "boxes_holding": 0.5})
    uniform = mask_coverage(np.ones((4, 4)), torch.cat([big, small]), 8)  # the baseline: weight = area
    assert uniform["inside"] == pytest.approx(uniform["area"]) and uniform["boxes_holding"] == 1.0
    tiny = torch.tensor([[9.0, 9.0, 11.0, 11.0]])  # no cell centre inside: its centre cell counts
    assert mask_coverage(mask, tiny, 8)["area"] == pytest.approx(1 / 16)
    assert np.isnan(mask_coverage(mask, torch.zeros(0, 4), 8)["boxes_holding"])
    with pytest.raises(ValueError, match="non-negative"):
        mask_coverage(-mask, big, 8)


def test_the_distance_screen_is_a_per_image_difference_per_level():
    import pandas as pd

    from glamd_core.analysis import screen_differences

    rows = [{"image": i, "level": lvl, "student": s, "L1": base + (d if s == "GLAMD" else 0.0)}
            for i, d in enumerate([-0.2, -0.1, 0.05]) for lvl, base in ((0, 1.0), (1, 2.0))
            for s in ("GLAMD", "global mask", "student alone")]
    screen = screen_differences(pd.DataFrame(rows), {"P3": (16, 16), "P4": (8, 8)}).set_index("level")
    assert screen.loc["P3", "mean"] == pytest.approx(-0.25 / 3) and screen.loc["P4", "lower"] == 2
    assert (screen.images == 3).all()


def test_mask_spread_counts_the_cells_holding_half_the_weight():
    import numpy as np

    from glamd_core.analysis import cells_holding, mask_spread

    peaked = np.zeros((4, 4))
    peaked[0, 0] = 1.0
    flat = np.ones((4, 4))
    assert cells_holding(peaked) == 0.0 and cells_holding(flat) == pytest.approx(7 / 16)
    spread, summary = mask_spread([("a", None)], [[{"global": peaked, "local": flat}]])
    assert summary.loc[0, "local"] > summary.loc[0, "global"] and summary.loc[0, "map (test images)"] == "4x4"
    assert len(spread) == 2


def test_teacher_mask_coverage_leaves_images_without_boxes_out_for_every_mask_alike():
    """An image without a box is left out for every mask (counted in attrs); only empty images: refused."""
    from types import SimpleNamespace

    from glamd_core.analysis import coverage_summary, teacher_mask_coverage
    from glamd_core.detectors import build_detector
    from glamd_core.profiles import get_profile

    torch.manual_seed(0)
    model = build_detector("retinanet", get_profile("smoke").student_backbone, num_classes=3).eval()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    one = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    images = [(torch.rand(3, 64, 64), empty), (torch.rand(3, 64, 64), one), (torch.rand(3, 64, 64), empty)]
    run = SimpleNamespace(model=model, dataset=lambda role: images)
    with torch.no_grad():
        cov = teacher_mask_coverage(run, [0, 1, 2], patch_sizes=(2,))
        assert cov.attrs["without_boxes"] == 2
        assert set(cov.image) == {1}
        per_mask = cov.groupby("mask").size()
        assert per_mask.nunique() == 1 and len(per_mask) == 4  # global, GLAM patch 2, DeFeat boxes, uniform
        assert len(coverage_summary(cov)) == len(cov)  # one image: the mean over images is the row itself
        with pytest.raises(ValueError, match="none of the 2 test image"):
            teacher_mask_coverage(run, [0, 2], patch_sizes=(2,))
