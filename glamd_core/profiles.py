"""Profiles: how big every experiment is, as data.

* ``smoke`` -- seconds per run; exercises every code path on a tiny dataset (CI, nbval).
* ``cpu``   -- the default: the embedded synthetic dataset, sized so teacher / student / distilled
  student differ measurably and the whole reproduction fits a 2-core laptop. Calibrated by
  ``notebooks/00_calibration`` (its baselines table and its choice on val; the profile's history in
  ``docs/calibration.md``).
* ``paper_voc`` -- the paper's Table 1 (supplementary): ResNet34 -> ResNet18, Faster R-CNN and
  RetinaNet, on Pascal VOC. The paper gives no schedule, split or metric; we assume the standard
  mmdetection VOC setting its code base (mmdetection v2) ships: train on VOC2007 + VOC2012
  trainval, report VOC2007 test, 1000 x 600 images, SGD at 0.01 for batch 16, 12 epochs (4
  epochs of the dataset repeated 3x) with the step at epoch 9. Both COCO AP and VOC07 mAP50 are
  reported: the paper's Table 1 does not say which its "AP" is (its RetinaNet teacher's 79.63 is
  on the mAP50 scale, its Faster R-CNN teacher's 57.28 on neither obviously).
* ``paper_coco`` -- Tables 2-4 and Figs. 1-2: COCO 2017, train2017 -> val2017 (COCO test-dev has
  no public labels), 1333 x 800, mmdetection's 2x schedule (24 epochs, steps at 16 and 22, SGD,
  batch 16: lr 0.02 for the two-stage detectors, 0.01 for RetinaNet, mmdetection's defaults).
  Teachers: RetinaNet ResNeXt101 (64x4d, the paper's Fig. 1 names ResNeXt101), Faster / Cascade
  R-CNN ResNet101; students ResNet50. ImageNet-initialised backbones, read from local files
  (``GLAMD_WEIGHTS``, see ``runs.backbone_weights``), their BatchNorm frozen (``frozen_bn``, as
  torchvision's pretrained detectors; mmdetection's ``norm_eval`` freezes the statistics only) and
  their stem and first stage not trained (``frozen_stages=1``, as mmdetection's ResNet configs).

* ``paper_voc_dryrun`` / ``paper_coco_dryrun`` -- the paper profiles unchanged (data layout, image
  size, backbones, frozen BN, SGD, learning rate, warmup, distillation settings) except the length:
  students 2 epochs, teachers 1, global batch 2, on CPU. ``make paper-check`` runs them on a few
  images it writes in the real layouts (``glamd_core.paper_check``); their runs and results are
  never mistaken for the paper's (own names, own keys, ``results/_<profile>/``).

The paper profiles have no val split: their distillation settings are the paper's defaults (the
authors tuned them on COCO); only the cpu profile is calibrated on its own val split.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .data.real import RealData
from .data.synthetic import SyntheticSpec
from .distill import DistillConfig
from .engine import TrainConfig


@dataclass(frozen=True)
class Profile:
    name: str
    data: SyntheticSpec | RealData  # generated here, or real data on disk (root from the caller)
    detector: dict = field(default_factory=dict)  # build_detector options
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher_backbone: str = "resnet34"
    student_backbone: str = "resnet18"
    seeds: tuple[int, ...] = (0,)
    # Seeds of every row a claim of the verdict table pairs (Tables 1-4, Fig. 1's band, notebook 10's
    # key point), fixed before training; the other rows keep ``seeds``. None: ``seeds``.
    claim_seeds: tuple[int, ...] | None = None
    eval_batch_size: int = 8
    # Teachers may train longer than students: they are trained once and shared by every distilled
    # run. None: the students' schedule.
    teacher_epochs: int | None = None
    # Each method's distillation settings chosen for this profile, {(kind, method): DistillConfig
    # fields}; a method without an entry takes DistillConfig's defaults. ``local`` and ``uniform``
    # (GLAMD's mask ablations, the same loss code) take GLAMD's entry, so an ablation changes the
    # masks alone.
    distill_settings: dict = field(default_factory=dict)
    # ImageNet-initialised backbones (from local files: nothing is downloaded; runs.backbone_weights).
    pretrained_backbones: bool = False
    # Results of a scratch profile (smoke, the dry runs) go to the git-ignored results/_<name>/, so
    # they never overwrite the committed results of a real one.
    scratch: bool = False
    # Per detector kind, the fields that differ from the above ({kind: {field: value}}; "train" takes
    # a dict of TrainConfig fields), e.g. each kind's teacher or learning rate.
    by_kind: dict = field(default_factory=dict)

    @property
    def verdict_seeds(self) -> tuple[int, ...]:
        """The seeds of the rows a claim pairs (:attr:`claim_seeds`, else :attr:`seeds`)."""
        return tuple(self.claim_seeds or self.seeds)

    def with_train(self, **changes) -> "Profile":
        return replace(self, train=replace(self.train, **changes))

    def with_epochs(self, epochs: int) -> "Profile":
        """Students *and* teachers trained for ``epochs`` (short runs, e.g. benchmarks)."""
        return replace(self.with_train(epochs=epochs), teacher_epochs=None)

    def distill_for(self, kind: str, method: str) -> DistillConfig:
        """``method``'s settings for ``kind`` in this profile (see ``distill_settings``)."""
        source = "glamd" if method in ("local", "uniform") else method
        return DistillConfig(method, **self.distill_settings.get((kind, source), {}))

    def for_kind(self, kind: str) -> "Profile":
        """This profile as ``kind`` trains with it (``by_kind`` applied)."""
        changes = dict(self.by_kind.get(kind, {}))
        if not changes:
            return replace(self, by_kind={}) if self.by_kind else self
        train = changes.pop("train", None)
        out = replace(self, **changes, by_kind={})
        return out.with_train(**train) if train else out

    def for_run(self, kind: str, method: str, epochs: int | None = None, threads: int = 1,
                progress: bool | None = None) -> "Profile":
        """This profile as one run of ``kind`` trains with it: its kind's settings, ``epochs`` for
        students and teachers alike (None: the profile's), ``threads``, ``progress`` bars (None: the
        profile's; not keyed), and a teacher's schedule when ``method`` is ``teacher``."""
        profile = self.for_kind(kind)
        profile = profile if epochs is None else profile.with_epochs(int(epochs))
        profile = profile if threads == 1 else profile.with_train(threads=threads)
        profile = profile if progress is None else profile.with_train(progress=progress)
        return profile.for_teacher() if method == "teacher" else profile

    def for_teacher(self) -> "Profile":
        """The profile a teacher is trained with."""
        return self if self.teacher_epochs is None else replace(self.with_train(epochs=self.teacher_epochs),
                                                                  teacher_epochs=None)


# Without a val split to choose on, the paper profiles distil with the authors' published form and
# constants (DistillConfig(loss_form="reference"), alpha = beta = gamma = 1), every method alike.
# The teacher runs online: its cached FPN maps would take terabytes at 1333 x 800 (about 20 MB per
# image and flip).
_PUBLISHED = {(kind, method): {"loss_form": "reference", "teacher_cache": False}
              for kind in ("retinanet", "faster_rcnn", "cascade_rcnn") for method in ("global", "glamd", "defeat")}

_CPU_DETECTOR = dict(
    image_size=128, max_size=128, fpn_channels=64, anchor_scale=2.0,
    rpn_batch_size_per_image=64, box_batch_size_per_image=64,
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=300,
    rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, box_representation_size=256,
)

# Chosen on val at the canonical kernels (notebook 00's grid, seed 0). Two choices moved from those
# made on native AVX-512 weights before issue #34: Faster R-CNN's GLAMD (normalised a=0.3 -> reference
# x3) and RetinaNet's DeFeat (normalised a=1 -> reference x1); docs/calibration.md has both grids.
_CPU_FRCNN_CHOSEN = {
    ("faster_rcnn", "global"): {"loss_form": "normalised", "alpha": 0.3},
    ("faster_rcnn", "glamd"): {"loss_form": "reference", "alpha": 3.0},
    ("faster_rcnn", "defeat"): {"loss_form": "reference", "alpha": 1.0},
}

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", scratch=True,
        data=SyntheticSpec(num_train=16, num_val=8, num_test=8, image_size=64, seed=0),
        detector=_CPU_DETECTOR | dict(image_size=64, max_size=64, fpn_channels=32),
        train=TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup_iters=2, progress=False),
        teacher_backbone="resnet18", student_backbone="resnet10t", seeds=(0,),
    ),
    "cpu": Profile(
        name="cpu",
        data=SyntheticSpec(num_train=800, num_val=200, num_test=500, image_size=128, seed=0, min_size_frac=0.1,
                           max_objects=8),
        detector=_CPU_DETECTOR,
        train=TrainConfig(epochs=12, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                          warmup_iters=100, schedule="cosine"),
        # On this data a ResNet18 student matches the ResNet34 teacher (docs/calibration.md): both
        # saturate it. A student with far less capacity is needed for a teacher-student gap to
        # distil across; RegNetX-200MF is also about twice as fast as ResNet18.
        teacher_backbone="resnet34", student_backbone="regnetx_002", seeds=(0, 1, 2),
        # Every claim at five seeds: Faster and Cascade R-CNN spread 2-4.5 AP over seeds here, and at
        # three seeds a t interval has 2 degrees of freedom.
        claim_seeds=(0, 1, 2, 3, 4),
        # RetinaNet's ResNet34 teacher stays far below the AP50 goal in 12 epochs and passes it in 24
        # (docs/calibration.md). Both kinds' teachers get 24, so the kinds differ only where the
        # detectors do.
        teacher_epochs=24,
        # Each method's setting, chosen on val by notebooks/00_calibration from the same four-point
        # grid for every method (calibration.GRID; the grid, the choice and its test results are in
        # results/00_calibration/). Re-running that notebook says whether these still match.
        distill_settings={
            **_CPU_FRCNN_CHOSEN,
            ("retinanet", "global"): {"loss_form": "reference", "alpha": 1.0},
            ("retinanet", "glamd"): {"loss_form": "reference", "alpha": 1.0},
            ("retinanet", "defeat"): {"loss_form": "reference", "alpha": 1.0},
            # Not calibrated on Cascade R-CNN (its grid would add a third of notebook 00's cost):
            # it shares Faster R-CNN's backbone, FPN, RPN and distillation terms, so it takes
            # Faster R-CNN's chosen settings.
            **{("cascade_rcnn", m): s for (k, m), s in _CPU_FRCNN_CHOSEN.items()},
        },
    ),
    "paper_voc": Profile(
        name="paper_voc",
        data=RealData("voc", {"train": ("VOC2007/trainval", "VOC2012/trainval"), "test": ("VOC2007/test",)},
                      env="GLAMD_VOC_ROOT", folder="VOCdevkit"),
        detector=dict(image_size=600, max_size=1000, frozen_bn=True, frozen_stages=1),
        train=TrainConfig(epochs=12, batch_size=16, optimizer="sgd", lr=0.01, weight_decay=1e-4, momentum=0.9,
                          warmup_iters=500, schedule="step", step_milestones=(9 / 12,), device="cuda",
                          amp=False, num_workers=4),
        teacher_backbone="resnet34", student_backbone="resnet18", seeds=(0,), pretrained_backbones=True,
        distill_settings=_PUBLISHED,
    ),
    "paper_coco": Profile(
        name="paper_coco",
        data=RealData("coco", {"train": ("train2017",), "test": ("val2017",)}, env="GLAMD_COCO_ROOT", folder="coco"),
        detector=dict(image_size=800, max_size=1333, frozen_bn=True, frozen_stages=1),
        train=TrainConfig(epochs=24, batch_size=16, optimizer="sgd", lr=0.02, weight_decay=1e-4, momentum=0.9,
                          warmup_iters=500, schedule="step", step_milestones=(16 / 24, 22 / 24), device="cuda",
                          amp=False, num_workers=4),
        teacher_backbone="resnet101", student_backbone="resnet50", seeds=(0,), pretrained_backbones=True,
        distill_settings=_PUBLISHED,
        by_kind={"retinanet": {"teacher_backbone": "resnext101_64x4d", "train": {"lr": 0.01}}},
    ),
}


def dry_run(profile: Profile) -> Profile:
    """``profile`` shortened to a few CPU iterations; everything a run is built from stays."""
    train = replace(profile.train, epochs=2, batch_size=2, device="cpu", num_workers=0, amp=False, sync_bn=False)
    return replace(profile, name=f"{profile.name}_dryrun", train=train, teacher_epochs=1, seeds=(0,), scratch=True)


for _name in ("paper_voc", "paper_coco"):
    PROFILES[f"{_name}_dryrun"] = dry_run(PROFILES[_name])


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
