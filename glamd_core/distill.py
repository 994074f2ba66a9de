"""Teacher + student wrapper that adds the distillation losses to the student's own.

``Distiller(teacher, student, DistillConfig(method="glamd"))`` is trained like a detector:
``forward(images, targets)`` returns the student's loss dict plus ``distill_feat``,
``distill_cls`` and ``distill_loc`` (already weighted). Nothing of torchvision is forked: forward
hooks on the student tap the transformed batch, the FPN maps, the anchors and the head outputs;
the teacher is run on the *same* transformed tensors under ``no_grad`` (its own transform would
resize differently in eval mode, and its NMS is not needed), or read from a teacher-output cache.

This module is plumbing: it hands the teacher's and the student's tensors, per FPN level, to a
method. What each method computes lives in ``glamd_core.methods`` (one module per method family).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from .detectors import build_detector
from .methods.adapters import ADAPTERS
from .teacher_cache import TeacherCache, TeacherOutputs, dense_outputs, fingerprint, run_teacher

METHODS = ("none", "global", "local", "glamd", "uniform", "defeat")
LOSS_FORMS = ("normalised", "reference")
NOT_KEYED = ("teacher_cache",)  # DistillConfig fields that change speed, not results
# Fields added after runs were cached: a run key holds them only when they differ from the value every
# earlier run trained with, so those runs keep their keys.
KEYED_WHEN_CHANGED = {"defeat_roi_sampling": "student", "glamd_adapter": "1x1", "glamd_feature_mask": "attention",
                      "defeat_foreground": "boxes", "glamd_heads": None}


@dataclass
class DistillConfig:
    """Every distillation setting. Fields left None take the value of the chosen ``loss_form``
    (``resolved(two_stage)`` gives them; the reference values are the GLAMD authors' public code,
    per detector kind, and DeFeat's official code for ``defeat``)."""

    method: str = "glamd"  # none | global (Zhang & Ma's masks) | local | glamd | uniform ("w/o GLAM") | defeat
    # "normalised": means, so alpha / beta / gamma are of order 1 (our form); "reference": the authors'
    # unnormalised sums with their constants, which alpha / beta / gamma then multiply (1 = published).
    loss_form: str = "normalised"
    alpha: float = 1.0  # feature imitation (+ attention transfer)
    beta: float = 1.0  # classification head
    gamma: float = 1.0  # localization head
    attention_weight: float = 1.0  # attention-transfer terms, relative to the imitation term
    patch_size: int = 7  # local patches in feature-map cells, the same at every FPN level (the paper's default)
    # Mask temperature. reference: 0.5 two-stage, 0.1 one-stage (both files); normalised: 0.5 for both.
    temperature: float | None = None
    # Channel masks in the feature weight. reference: one-stage only (the two-stage file uses spatial
    # masks alone); normalised: both kinds.
    channel_mask: bool | None = None
    # Student masks from the "raw" student FPN maps (reference) or the "adapted" ones (normalised).
    student_masks: str | None = None
    distill_rpn: bool = True  # two-stage: distill the RPN's dense outputs
    # Two-stage: distill the RoI head on the student's sampled RoIs. reference: off (GLAMD distils
    # the RPN only; DeFeat's released config leaves its RoI term off); normalised: on.
    distill_roi: bool | None = None
    roi_temperature: float = 1.0  # softmax temperature of the RoI class KL
    # DeFeat (Guo et al., CVPR 2021): feature imitation split into ground-truth-box cells and the rest.
    # Weights: reference 3 / 12 (its released config, on sums / max(1, 2 C N)); normalised 0.2 / 0.8
    # (the same 1:4 ratio at sum 1 on our means, so alpha = 1 is the scale of every other method).
    defeat_fg_weight: float | None = None
    defeat_bg_weight: float | None = None
    # Which levels a box marks: "by_size" (reference: one level, floor(log2(sqrt(wh) / 56))) or
    # "all" (normalised: every level, the box's centre cell always included).
    defeat_levels: str | None = None
    # Adapter: "3x3" (reference: 3x3 conv, weights N(0,1).fmod(2) * 1e-4) or "1x1" (normalised).
    defeat_adapter: str | None = None
    defeat_roi_pos_weight: float = 1.0  # RoI-class KL parts (two-stage, with distill_roi)
    defeat_roi_neg_weight: float = 1.0
    # Whose RoIs the DeFeat RoI KL is computed on (two-stage, with distill_roi): "teacher" is DeFeat's
    # official default (the teacher's RPN proposals at training-time counts, sampled by the teacher's
    # RoI heads against the ground truth); "student" reuses the RoIs the student's own loss sampled (no
    # second RPN pass or sampling; GLAMD's RoI terms use those too). Default "student": the released
    # config leaves the RoI term off, and "student" is what every run before this option trained with.
    defeat_roi_sampling: str = "student"
    # The feature adapter of the attention-mask methods (global, local, glamd, uniform): "1x1" (Zhang &
    # Ma's and GLAMD's code) or "3x3", DeFeat's near-zero-initialised 3x3 conv -- an option for telling
    # apart what DeFeat's and GLAMD's feature terms owe to their adapters (notebooks/04).
    glamd_adapter: str = "1x1"
    # Mask against mask, each recipe held fixed (notebooks/09): the spatial weights of the attention-mask
    # methods' *feature* term -- "attention" (the teacher's and student's maps, as published) or "boxes"
    # (DeFeat's ground-truth-box cells, normalised as GLAM's weights are: masks.box_spatial_masks); the
    # head terms and channel masks stay the attention masks. And DeFeat's foreground: "boxes" (as
    # released) or "glam" (the GLAM spatial mask of teacher and adapted student, scaled to [0, 1] per
    # image by its maximum: a soft foreground, the rest its background).
    glamd_feature_mask: str = "attention"
    defeat_foreground: str = "boxes"
    # The hybrid recipe (notebooks/09): DeFeat's feature term plus GLAMD's head terms. None (as released):
    # DeFeat alone. "reference" / "normalised": GLAMD's head terms added as that loss form computes them
    # (method glamd, alpha 0: its masks, temperature, student masks and RoI terms resolved in that form,
    # the head-only rows of notebooks/05), weighted by beta and gamma; DeFeat's own RoI term is then off,
    # so beta weights one thing. Its own loss form, because the chosen recipes differ in form per kind.
    glamd_heads: str | None = None
    # Read the teacher's outputs from the run cache's teacher-output cache (glamd_core.teacher_cache)
    # instead of running it. Speed only: results do not depend on it, so it is not part of a run's key.
    teacher_cache: bool = True

    def __post_init__(self):
        """Every setting is checked here, when the config is made: a bad one must fail before a
        teacher trains for minutes, and name itself (not surface later as NaN masks or a torch error)."""
        _check_choice("method", self.method, METHODS)
        _check_choice("loss_form", self.loss_form, LOSS_FORMS)
        for name in ("alpha", "beta", "gamma", "attention_weight", "defeat_fg_weight", "defeat_bg_weight",
                     "defeat_roi_pos_weight", "defeat_roi_neg_weight"):
            self._number(name, lambda v: 0 <= v <= MAX_LOSS_WEIGHT, f"a number from 0 to {MAX_LOSS_WEIGHT:g}")
        for name in ("temperature", "roi_temperature"):
            self._number(name, lambda v: v >= MIN_TEMPERATURE, f"a finite number >= {MIN_TEMPERATURE:g}")
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, numbers.Integral) \
                or self.patch_size < 1:  # True and 3.0 are not patch sizes
            raise ValueError(f"DistillConfig.patch_size must be a positive integer (feature-map cells), "
                             f"got {self.patch_size!r}")
        self.patch_size = int(self.patch_size)  # numpy integers too: run keys are made from plain ints
        for name in ("channel_mask", "distill_rpn", "distill_roi", "teacher_cache"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name in _FORM_DEFAULTS["reference"]):
                raise ValueError(f"DistillConfig.{name} must be True or False, got {value!r}")
        for name, choices in (("student_masks", ("raw", "adapted")), ("defeat_levels", ("by_size", "all")),
                              ("defeat_adapter", ADAPTERS), ("defeat_roi_sampling", ("student", "teacher")),
                              ("glamd_adapter", ADAPTERS), ("glamd_feature_mask", ("attention", "boxes")),
                              ("defeat_foreground", ("boxes", "glam")), ("glamd_heads", LOSS_FORMS)):
            if getattr(self, name) is not None:
                _check_choice(name, getattr(self, name), choices)

        if self.glamd_heads is not None and self.method != "defeat":
            raise ValueError(f"DistillConfig.glamd_heads adds GLAMD's head terms to DeFeat's feature term (the "
                             f"hybrid recipe); it needs method='defeat', got method={self.method!r}")

    def heads_config(self) -> "DistillConfig":
        """``glamd_heads``: the config of the GLAMD head terms added to DeFeat's feature term."""
        return DistillConfig("glamd", loss_form=self.glamd_heads, alpha=0.0, beta=self.beta, gamma=self.gamma,
                             patch_size=self.patch_size, distill_rpn=self.distill_rpn,
                             roi_temperature=self.roi_temperature)

    def _number(self, name: str, ok, what: str) -> None:
        value = getattr(self, name)
        if value is None and name in _FORM_DEFAULTS["reference"]:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"DistillConfig.{name} must be {what}, got {value!r}")
        setattr(self, name, float(value))  # alpha=1 and alpha=1.0 are one run, one key

    def resolved(self, two_stage: bool) -> "DistillConfig":
        """A copy with every None replaced by the loss form's value for this detector kind."""
        defaults = _FORM_DEFAULTS[self.loss_form]
        values = {k: (v(two_stage) if callable(v) else v) for k, v in defaults.items() if getattr(self, k) is None}
        return replace(self, **values)


# The value each None field takes in each loss form (callables take "two_stage").
_FORM_DEFAULTS = {
    "reference": {"temperature": lambda two_stage: 0.5 if two_stage else 0.1,
                  "channel_mask": lambda two_stage: not two_stage, "student_masks": "raw", "distill_roi": False,
                  "defeat_fg_weight": 3.0, "defeat_bg_weight": 12.0, "defeat_levels": "by_size",
                  "defeat_adapter": "3x3"},
    "normalised": {"temperature": 0.5, "channel_mask": True, "student_masks": "adapted", "distill_roi": True,
                   "defeat_fg_weight": 0.2, "defeat_bg_weight": 0.8, "defeat_levels": "all", "defeat_adapter": "1x1"},
}


# Bounds that catch typos before a teacher trains for minutes. Loss weights multiply terms of order 1
# (normalised form) or the published constants (reference form, 1 = published); the calibration grid
# spans 0.3-3, so a weight above 1e3 is a slip (1e308 overflows the loss to inf). A temperature below
# 1e-6 turns mask logits of a few hundred into infinities, i.e. NaN masks.
MAX_LOSS_WEIGHT = 1e3
MIN_TEMPERATURE = 1e-6


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"DistillConfig.{name} must be one of {choices}, got {value!r}")


def _levels(model) -> int:
    gen = model.anchor_generator if isinstance(model, RetinaNet) else model.rpn.anchor_generator
    return len(gen.sizes)


def _fpn_channels(model) -> int:
    return model.backbone.out_channels


class Distiller(nn.Module):
    """A frozen teacher and a student of the same kind, trained as one module: in train mode its forward
    returns the student's detection losses plus the distillation terms of ``config.method``; in eval
    mode, the student's detections.

    Args:
        teacher: a trained detector (:func:`~glamd_core.detectors.build_detector` with its
            ``checkpoint``); frozen here.
        student: a detector of the same kind, FPN levels and image normalisation.
        config: the method and its settings (:class:`DistillConfig`).
        teacher_cache: a :class:`~glamd_core.teacher_cache.TeacherCache` built for this very teacher
            (checked by a fingerprint of its weights); batches it holds skip the teacher's backbone and
            dense head, the rest run the teacher online.

    >>> teacher = build_detector("retinanet", "resnet34", 21, checkpoint="teacher.pt")  # doctest: +SKIP
    >>> student = build_detector("retinanet", "regnetx_002", 21)  # doctest: +SKIP
    >>> losses = Distiller(teacher, student, DistillConfig("glamd"))(images, targets)  # doctest: +SKIP
    >>> sum(losses.values()).backward()  # doctest: +SKIP
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, config: DistillConfig = DistillConfig(),
                 teacher_cache: TeacherCache | None = None):
        super().__init__()
        from .methods import build_method

        if type(teacher) is not type(student) or not isinstance(student, (RetinaNet, FasterRCNN)):
            raise TypeError(f"teacher and student must be the same detector kind (RetinaNet or FasterRCNN), "
                            f"got {type(teacher).__name__} and {type(student).__name__}")
        if (teacher.transform.image_mean, teacher.transform.image_std) != \
                (student.transform.image_mean, student.transform.image_std):
            raise ValueError("teacher and student must normalise images the same way (image_mean / image_std)")
        if _levels(teacher) != _levels(student):
            raise ValueError("teacher and student must have the same FPN levels")
        if teacher_cache is not None and teacher_cache.teacher_fingerprint != fingerprint(teacher):
            raise ValueError(f"the teacher cache {teacher_cache.folder} was built for another teacher "
                             "(its weights' fingerprint differs); build one for this teacher")
        self.two_stage = isinstance(student, FasterRCNN)
        self.teacher, self.student = teacher, student
        self.config = config.resolved(self.two_stage)
        self.teacher_cache = teacher_cache
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.method = build_method(self.config, self.two_stage, _fpn_channels(student), _fpn_channels(teacher),
                                   _levels(student))
        self._tap: dict = {}
        self._hook_student()

    @property
    def adapters(self) -> nn.ModuleList:
        """The method's per-level feature adapters (student FPN -> teacher FPN channels)."""
        return self.method.adapters if self.method is not None else nn.ModuleList()

    # -- taps ---------------------------------------------------------------------------------
    def _store(self, name, pick=lambda args, out: out):
        def hook(module, args, out):
            self._tap[name] = pick(args, out)
        return hook

    def _hook_student(self) -> None:
        s = self.student
        taps = [(s.transform, "transformed", None), (s.backbone, "features", None)]
        if self.two_stage:
            taps += [(s.rpn.head, "rpn", None), (s.rpn.anchor_generator, "anchors", None),
                     (s.roi_heads.box_roi_pool, "proposals", lambda a, o: a[1]),
                     (s.roi_heads.box_predictor, "roi", None)]
        else:
            taps += [(s.head, "head", None), (s.anchor_generator, "anchors", None)]
        self._handles = [m.register_forward_hook(self._store(name, pick) if pick else self._store(name))
                         for m, name, pick in taps]

    def remove_hooks(self) -> None:
        """Detach from the student (e.g. before wrapping it in another Distiller)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BN running statistics stay the teacher's
        return self

    # -- forward ------------------------------------------------------------------------------
    def forward(self, images, targets=None):
        if not self.training:
            return self.student(images)
        self._tap.clear()
        losses = self.student(images, targets)
        if self.method is None:
            return losses
        self._t = self._teacher_outputs(self._tap["transformed"][0].tensors)
        return losses | self.method(self)

    # -- what methods read --------------------------------------------------------------------
    def teacher_features(self) -> list[torch.Tensor]:
        return list(self._t.features.values())

    def student_features(self) -> list[torch.Tensor]:
        return list(self._tap["features"].values())

    def targets(self) -> list[dict]:
        """The batch's targets as the student's transform left them (boxes in the padded input's pixels)."""
        return self._tap["transformed"][1]

    def input_size(self) -> tuple[int, int]:
        """Height and width of the padded input batch (strides are its size over a map's)."""
        return tuple(self._tap["transformed"][0].tensors.shape[-2:])

    def level_strides(self) -> list[float]:
        """Each FPN level's nominal stride in input pixels: the padded input's height over the map's,
        rounded to a power of two, as the level's anchors are laid out."""
        input_h = self.input_size()[0]
        return [2.0 ** round(math.log2(input_h / f.shape[-2])) for f in self.teacher_features()]

    def _teacher_outputs(self, batch: torch.Tensor) -> TeacherOutputs:
        cached = (self.teacher_cache.lookup(batch, recompute=lambda: run_teacher(self.teacher, batch))
                  if self.teacher_cache is not None else None)
        return cached if cached is not None else run_teacher(self.teacher, batch, with_dense=False)

    def _teacher_dense(self) -> dict:
        """The teacher's dense head outputs for this batch (cached, or computed on its FPN maps)."""
        if self._t.dense is None:
            self._t.dense = dense_outputs(self.teacher, self._t.features)
        return self._t.dense

    def dense_levels(self) -> list[dict] | None:
        """Per FPN level, the student's and the teacher's dense head outputs: ``cls`` (B x N or
        B x N x K logits) and decoded ``boxes`` (B x N x 4, XYXY) of each, with N = H * W * A anchors
        in torchvision's (y, x, anchor) order, and ``anchors_per_location``. None for a two-stage
        detector whose RPN is not distilled."""
        if self.two_stage and not self.config.distill_rpn:
            return None
        dense, tap = self._teacher_dense(), self._tap
        if self.two_stage:
            s_cls, s_reg = _flatten_rpn(*tap["rpn"])
            t_cls, t_reg = _flatten_rpn(dense["objectness"], dense["deltas"])
            a = self.student.rpn.anchor_generator.num_anchors_per_location()[0]
            s_coder, t_coder = self.student.rpn.box_coder, self.teacher.rpn.box_coder
        else:
            s_cls, s_reg = tap["head"]["cls_logits"], tap["head"]["bbox_regression"]
            t_cls, t_reg = dense["cls_logits"], dense["bbox_regression"]
            a = self.student.anchor_generator.num_anchors_per_location()[0]
            s_coder, t_coder = self.student.box_coder, self.teacher.box_coder
        sizes = [f.shape[-2] * f.shape[-1] * a for f in self.student_features()]
        anchors = tap["anchors"]  # per image, every level's anchors concatenated: decode once, then split
        with torch.no_grad():
            t_boxes = _decode(t_coder, t_reg, anchors).split(sizes, 1)
        s_boxes = _decode(s_coder, s_reg, anchors).split(sizes, 1)
        levels = [{"student_cls": sc, "teacher_cls": tc, "student_boxes": sb, "teacher_boxes": tb,
                   "anchors_per_location": a}
                  for sc, tc, sb, tb in zip(s_cls.split(sizes, 1), t_cls.split(sizes, 1), s_boxes, t_boxes)]
        return levels

    def teacher_on_student_rois(self):
        """The student's sampled RoIs (detached), their image sizes, the student's class logits and
        box deltas on them, and the teacher's (its box head on its FPN maps, cached or not)."""
        proposals = [p.detach() for p in self._tap["proposals"]]
        image_sizes = self._tap["transformed"][0].image_sizes
        t_heads = self.teacher.roi_heads
        with torch.no_grad():
            t_logits, t_reg = t_heads.box_predictor(
                t_heads.box_head(t_heads.box_roi_pool(self._t.features, proposals, image_sizes)))
        s_logits, s_reg = self._tap["roi"]
        return proposals, image_sizes, (s_logits, s_reg), (t_logits, t_reg)

    def teacher_sampled_rois(self):
        """DeFeat's official RoIs: the teacher's RPN proposals at training-time counts, sampled by the
        teacher's RoI heads against the ground truth. Returns them with their labels, the student's
        class logits and box deltas on them, and the teacher's. The student's RoI modules are called
        through ``forward`` so its hooks keep the RoIs of its own loss."""
        t, s = self.teacher, self.student
        images, targets = self._tap["transformed"][0], self.targets()
        with torch.no_grad():
            t.rpn.train()  # training-time pre/post-NMS counts; the RPN holds no batch statistics
            try:
                proposals, _ = t.rpn(images, self._t.features, targets)
            finally:
                t.rpn.eval()
            proposals, _, labels, _ = t.roi_heads.select_training_samples(proposals, targets)
            t_heads = t.roi_heads
            t_logits, t_reg = t_heads.box_predictor(
                t_heads.box_head(t_heads.box_roi_pool(self._t.features, proposals, images.image_sizes)))
        s_heads = s.roi_heads
        pooled = s_heads.box_roi_pool.forward(self._tap["features"], proposals, images.image_sizes)
        s_logits, s_reg = s_heads.box_predictor.forward(s_heads.box_head(pooled))
        return proposals, labels, (s_logits, s_reg), (t_logits, t_reg)

    def roi_mask_weight(self, spatial: list[torch.Tensor], proposals, image_sizes) -> torch.Tensor:
        """A RoI's weight: the spatial mask averaged over the RoI (RoIAlign of the mask at the RoI's level)."""
        with torch.no_grad():
            maps = dict(zip(self._t.features, spatial))
            return self.student.roi_heads.box_roi_pool(maps, proposals, image_sizes).mean(dim=(1, 2, 3))


def _flatten_rpn(objectness, deltas):
    """torchvision's RPN layout -> B x N and B x N x 4, anchors ordered (level, y, x, anchor)."""
    obj = torch.cat([o.permute(0, 2, 3, 1).flatten(1) for o in objectness], 1)
    box = torch.cat([d.reshape(d.shape[0], -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, 3)
                     for d in deltas], 1)
    return obj, box


def _decode(box_coder, deltas: torch.Tensor, anchors: list[torch.Tensor]) -> torch.Tensor:
    """B x N x 4 deltas -> B x N x 4 boxes (XYXY) around each image's anchors."""
    return torch.stack([box_coder.decode_single(d, a) for d, a in zip(deltas, anchors)])


def check_distillable(kind: str, teacher_backbone: str, student_backbone: str, detector_options: dict,
                      config: DistillConfig) -> None:
    """Build the Distiller once on untrained detectors (about a second): a pair it cannot distil
    fails now, not after the teacher has trained for minutes."""
    opts = dict(detector_options, pretrained=False)
    Distiller(build_detector(kind, teacher_backbone, 2, **opts), build_detector(kind, student_backbone, 2, **opts),
              config)
