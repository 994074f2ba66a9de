"""The cocoapi error analysis: C75 / C50 equal pycocotools' AP75 / AP50, and each planted error
type moves only its own band."""

import copy
import json

import numpy as np
import pytest

from glamd_core.data import VOCDetection, eval_transforms
from glamd_core.evaluation import BANDS, coco_eval, error_analysis

# two classes of one supercategory (a, b) and one of another (c)
CATEGORIES = [{"id": 1, "name": "a", "supercategory": "X"}, {"id": 2, "name": "b", "supercategory": "X"},
              {"id": 3, "name": "c", "supercategory": "Y"}]
OBJECTS = [  # image, category, box (x, y, w, h); every class has objects in two images
    (1, 1, [10, 10, 30, 30]), (1, 2, [60, 60, 30, 30]), (2, 3, [10, 60, 30, 30]),
    (2, 1, [60, 10, 30, 30]), (3, 2, [10, 10, 30, 30]), (3, 3, [60, 60, 30, 30]),
]


def _gt(ignore=None):
    anns = [{"id": i + 1, "image_id": img, "category_id": c, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            for i, (img, c, box) in enumerate(OBJECTS)]
    for i in ignore or []:
        anns[i]["ignore"] = 1
    return {"images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)], "annotations": anns,
            "categories": copy.deepcopy(CATEGORIES)}


def _perfect():
    return [{"image_id": img, "category_id": c, "bbox": box, "score": 0.5} for img, c, box in OBJECTS]


def _first_full_band(frame):
    """The first band whose AP is 1: everything between it and the band before is its error type."""
    return next(b for b in BANDS if frame.AP[b] == pytest.approx(1.0))


def test_perfect_detections_fill_every_band():
    frame = error_analysis(_gt(), _perfect())
    assert list(frame.index) == list(BANDS) and frame.AP.tolist() == pytest.approx([1.0] * 7)
    assert len(frame.precision["C50"]) == len(frame.attrs["recall"]) == 101


@pytest.mark.parametrize("error, band", [
    ("shifted box", "Loc"), ("same-supercategory confusion", "Sim"), ("other-supercategory confusion", "Oth"),
    ("box on background", "BG"), ("missed object", "FN"),
])
def test_a_planted_error_moves_only_its_own_band(error, band):
    dets = _perfect()
    if error == "shifted box":  # object 0 found at IoU 0.29: below 0.5, above 0.1
        dets[0]["bbox"] = [25, 10, 30, 30]
    elif error == "same-supercategory confusion":  # an 'a' object also called 'b', ranked first
        dets.append({"image_id": 1, "category_id": 2, "bbox": [10, 10, 30, 30], "score": 0.9})
    elif error == "other-supercategory confusion":  # an 'a' object also called 'c'
        dets.append({"image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "score": 0.9})
    elif error == "box on background":
        dets.append({"image_id": 1, "category_id": 1, "bbox": [40, 40, 15, 15], "score": 0.9})
    else:
        del dets[0]
    frame = error_analysis(_gt(), dets)
    assert _first_full_band(frame) == band, frame.AP
    i = BANDS.index(band)
    assert (frame.AP.iloc[:i] < 1 - 1e-9).all()  # every band before it shows the error
    assert np.all(np.diff(frame.AP.values) >= -1e-12)  # bands are cumulative


def test_c75_and_c50_are_pycocotools_ap75_and_ap50_on_a_detections_file(synthetic_root, tmp_path):
    ds = VOCDetection(synthetic_root, "train", transforms=eval_transforms())
    gt = ds.coco_gt()
    rng = np.random.default_rng(0)
    dets = []
    for a in gt.dataset["annotations"]:  # jittered boxes, some mislabelled, plus background boxes
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.2 else int(rng.choice(gt.getCatIds()))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.random()),
                     "bbox": [float(x + jitter[0]), float(y + jitter[1]), float(max(1, w + jitter[2])),
                              float(max(1, h + jitter[3]))]})
    for img in gt.getImgIds():
        dets.append({"image_id": img, "category_id": int(rng.choice(gt.getCatIds())), "score": float(rng.random()),
                     "bbox": [float(v) for v in rng.uniform(0, 30, 4)]})
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(dets))
    frame = error_analysis(gt, path)
    stats = coco_eval(gt, dets).stats
    assert 0.05 < frame.AP["C50"] < 0.95  # a non-trivial case
    assert frame.AP["C75"] == pytest.approx(stats[2], abs=1e-12)
    assert frame.AP["C50"] == pytest.approx(stats[1], abs=1e-12)
    assert (np.diff(frame.AP.values) >= -1e-12).all()


def test_an_ignored_object_is_neither_found_nor_missed_and_the_callers_data_is_untouched():
    gt = _gt(ignore=[0])
    before = copy.deepcopy(gt)
    dets = _perfect()[1:]  # the ignored object is not detected: not a false negative
    assert error_analysis(gt, dets).AP["C75"] == pytest.approx(1.0)
    assert error_analysis(gt, _perfect()).AP["C75"] == pytest.approx(1.0)  # detecting it is no false positive
    assert gt == before
    gt_flag_dropped = _gt()
    assert error_analysis(gt_flag_dropped, dets).AP["C75"] < 1  # without the flag, it is missed


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no objects"):
        error_analysis(dict(_gt(), annotations=[]), [])
    with pytest.raises(ValueError):
        error_analysis(_gt(), [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_error_losses_are_differences_of_adjacent_cumulative_bands():
    import pandas as pd

    from glamd_core.analysis import error_losses

    # two models that differ at C50 (+5), which carries into every later band: read as differences, the
    # second loses 5 more to loose localisation (C50 - C75), 5 less to missed objects (FN - BG), the same elsewhere
    aps = {"student": [40, 50, 55, 56, 58, 70, 100], "GLAMD": [40, 55, 60, 61, 63, 75, 100]}
    bands = pd.DataFrame([{"model": m, "seed": 0, "band": b, "AP": float(ap)}
                          for m, v in aps.items() for b, ap in zip(("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"), v)])
    lost = error_losses(bands).pivot(index="error", columns="model", values="AP lost")
    assert list(lost.index) == sorted(["C50 - C75", "Loc - C50", "Sim - Loc", "Oth - Sim", "BG - Oth", "FN - BG"])
    change = (lost["GLAMD"] - lost["student"]).to_dict()
    assert change == {"C50 - C75": 5.0, "Loc - C50": 0.0, "Sim - Loc": 0.0, "Oth - Sim": 0.0, "BG - Oth": 0.0,
                      "FN - BG": -5.0}
    with pytest.raises(ValueError, match="missing"):
        error_losses(bands[bands.band != "Sim"])