"""RetinaNet, Faster R-CNN and Cascade R-CNN on any timm backbone, via torchvision's detection models.

``build_detector(kind, backbone, num_classes, **options)`` returns an unmodified torchvision
``RetinaNet`` / ``FasterRCNN`` (or our :class:`~glamd_core.cascade.CascadeRCNN`, a ``FasterRCNN``
with cascaded RoI heads) whose ``backbone`` is :class:`TimmFPN`: losses as a dict in train mode,
detections in eval mode, and ``model.backbone`` / ``model.head`` (``model.rpn.head``) to hook for
distillation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import timm
from timm.layers import freeze_batch_norm_2d
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from .cascade import CascadeRCNN
from .files import read_checkpoint

KINDS = ("retinanet", "faster_rcnn", "cascade_rcnn")
# an RPN and RoI heads (distillation terms differ by stage count)
TWO_STAGE_KINDS = ("faster_rcnn", "cascade_rcnn")


@dataclass
class DetectorOptions:
    """Knobs of ``build_detector``. Defaults are the torchvision / paper values; the ``cpu``
    profile overrides them (see ``glamd_core.profiles``)."""

    fpn_channels: int = 256
    out_indices: tuple[int, ...] = (2, 3, 4)  # C3-C5 (strides 8, 16, 32), as in the paper's FPN
    image_size: int = 800  # shorter side after resizing (torchvision's min_size)
    max_size: int = 1333
    # Anchor base size at each level = anchor_scale * stride (torchvision/Detectron: 4 for
    # RetinaNet, 4 (=32 px at stride 8) for the RPN). Small images with small objects want less.
    anchor_scale: float = 4.0
    anchor_octaves: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    head_norm: bool = True  # GroupNorm in the RetinaNet head (torchvision's v2 head); helps from scratch
    # RetinaNet anchor matching (torchvision / paper: 0.5 and 0.4)
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    box_loss: str = "l1"  # RetinaNet box regression loss: "l1" (paper) or "giou" (torchvision's v2 recipe)
    # Faster / Cascade R-CNN sampling sizes and proposal counts (Cascade: every stage samples
    # box_batch_size_per_image RoIs and has a box_representation_size head)
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_representation_size: int = 1024
    detections_per_img: int = 100
    score_thresh: float = 0.05
    # Backbone BatchNorm as fixed affine layers (torchvision's FrozenBatchNorm2d), as torchvision's
    # detectors on ImageNet-initialised backbones: statistics of 2 images per GPU are noise.
    # (mmdetection's norm_eval also keeps the ImageNet statistics but still trains BN's scale and shift.)
    # Off when training from scratch (the cpu profile), where BN must learn its statistics.
    frozen_bn: bool = False
    # Parameters of the stem (0) and stages 1..N of the backbone not trained (mmdetection's
    # frozen_stages: 1 in its ResNet configs, with ImageNet weights); -1: train everything.
    frozen_stages: int = -1
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @classmethod
    def from_kwargs(cls, **options) -> "DetectorOptions":
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown detector option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**options)


class TimmFPN(nn.Module):
    """timm ``features_only`` backbone + torchvision FPN; returns the OrderedDict torchvision wants."""

    def __init__(self, name: str, fpn_channels: int, out_indices, extra_blocks, pretrained: bool = False,
                 backbone_checkpoint: str | Path | None = None, frozen_bn: bool = False, frozen_stages: int = -1):
        super().__init__()
        self.body = _create_timm(name, out_indices, pretrained, backbone_checkpoint)
        if frozen_bn:  # after the ImageNet weights are in: their statistics are what is frozen
            self.body = freeze_batch_norm_2d(self.body)
        if frozen_stages >= 0:
            _freeze_stages(self.body, frozen_stages)
        reductions = self.body.feature_info.reduction()
        # out_indices mean different strides in different timm families; check, don't trust.
        if any(b != 2 * a for a, b in zip(reductions, reductions[1:])):
            raise ValueError(f"backbone {name} with out_indices={out_indices} gives strides {reductions}; "
                             "FPN needs consecutive stride-doubling levels")
        self.strides = tuple(reductions)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), fpn_channels, extra_blocks)
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _freeze_stages(body: nn.Module, stages: int) -> None:
    """No gradients for the stem and stages 1..``stages``: every top-level module of the timm body up
    to the one that makes stage ``stages`` (timm's feature_info lists the stem as stage 0)."""
    names = [info["module"].split(".")[0] for info in body.feature_info.info]
    if stages >= len(names):
        raise ValueError(f"frozen_stages={stages}, but the backbone has stages 0..{len(names) - 1}")
    for name, child in body.named_children():
        child.requires_grad_(False)
        if name == names[stages]:
            return


def _create_timm(name, out_indices, pretrained, checkpoint):
    if name not in timm.list_models():
        raise ValueError(f"unknown timm backbone {name!r}")
    kwargs = dict(features_only=True, out_indices=tuple(out_indices))
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"backbone checkpoint {checkpoint} not found")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint)), **kwargs)
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # network errors come from several libraries (requests, huggingface_hub, urllib)
        raise RuntimeError(
            f"could not fetch pretrained weights for timm backbone {name!r} ({type(exc).__name__}: {exc}). "
            "This machine has no access to the model hubs. Download the ImageNet checkpoint elsewhere "
            f"(e.g. the timm '{name}' model's model.safetensors or pytorch_model.bin), copy it to "
            f"weights/{name}.safetensors and pass backbone_checkpoint='weights/{name}.safetensors'; "
            "or train from scratch with pretrained=False."
        ) from exc


def _anchor_generator(strides, opts: DetectorOptions, octaves) -> AnchorGenerator:
    sizes = tuple(tuple(opts.anchor_scale * s * o for o in octaves) for s in strides)
    return AnchorGenerator(sizes, (tuple(opts.aspect_ratios),) * len(strides))


def build_detector(kind: str, backbone: str, num_classes: int, pretrained: bool = False,
                   backbone_checkpoint: str | Path | None = None, checkpoint: str | Path | None = None,
                   **options) -> nn.Module:
    """A torchvision detector of ``kind`` on timm ``backbone`` (``features_only``) with an FPN.

    Args:
        kind: ``retinanet``, ``faster_rcnn`` or ``cascade_rcnn``.
        backbone: a timm model name.
        num_classes: classes including the background (>= 2).
        pretrained: timm's own ImageNet weights (downloaded by timm; this project uses
            ``backbone_checkpoint``, a local file, instead).
        backbone_checkpoint: the backbone's ImageNet weights from a local file.
        checkpoint: a whole trained detector (e.g. a teacher), saved by our engine or as a bare state dict.
        **options: :class:`DetectorOptions` fields (image size, FPN channels, anchors, frozen stages ...).

    Returns:
        The detector: losses in train mode, detections in eval mode (torchvision's conventions).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {KINDS}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    opts = DetectorOptions.from_kwargs(**options)
    common = dict(min_size=opts.image_size, max_size=max(opts.max_size, opts.image_size),
                  image_mean=list(opts.image_mean), image_std=list(opts.image_std))
    if kind == "retinanet":
        body = TimmFPN(backbone, opts.fpn_channels, opts.out_indices,
                       LastLevelP6P7(opts.fpn_channels, opts.fpn_channels), pretrained, backbone_checkpoint,
                       opts.frozen_bn, opts.frozen_stages)
        strides = body.strides + (body.strides[-1] * 2, body.strides[-1] * 4)
        anchors = _anchor_generator(strides, opts, opts.anchor_octaves)
        norm = partial(nn.GroupNorm, min(32, opts.fpn_channels // 4)) if opts.head_norm else None
        head = RetinaNetHead(opts.fpn_channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=norm)
        if opts.box_loss not in ("l1", "smooth_l1", "giou", "ciou", "diou"):
            raise ValueError(f"unknown box_loss {opts.box_loss!r}")
        head.regression_head._loss_type = opts.box_loss  # how torchvision's own retinanet v2 builder sets it
        model = RetinaNet(body, num_classes, anchor_generator=anchors, head=head,
                          score_thresh=opts.score_thresh, fg_iou_thresh=opts.fg_iou_thresh,
                          bg_iou_thresh=opts.bg_iou_thresh, detections_per_img=opts.detections_per_img, **common)
    else:
        body = TimmFPN(backbone, opts.fpn_channels, opts.out_indices, LastLevelMaxPool(), pretrained,
                       backbone_checkpoint, opts.frozen_bn, opts.frozen_stages)
        strides = body.strides + (body.strides[-1] * 2,)
        # One anchor size per level, as torchvision's and Detectron's FPN RPN.
        anchors = _anchor_generator(strides, opts, (1.0,))
        names = [str(i) for i in range(len(body.strides))]
        roi_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
        two_stage = dict(
            rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
            rpn_batch_size_per_image=opts.rpn_batch_size_per_image,
            box_batch_size_per_image=opts.box_batch_size_per_image,
            rpn_pre_nms_top_n_train=opts.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=opts.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=opts.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=opts.rpn_post_nms_top_n_test,
            box_score_thresh=opts.score_thresh, box_detections_per_img=opts.detections_per_img, **common)
        if kind == "faster_rcnn":
            box_head = TwoMLPHead(opts.fpn_channels * 7 * 7, opts.box_representation_size)
            predictor = FastRCNNPredictor(opts.box_representation_size, num_classes)
            model = FasterRCNN(body, None, box_head=box_head, box_predictor=predictor, **two_stage)
        else:
            model = CascadeRCNN(body, num_classes, representation_size=opts.box_representation_size, **two_stage)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load detector weights from an engine checkpoint (``{"model": ...}``) or a bare state dict."""
    path = Path(path)
    state = read_checkpoint(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, Mapping):
        raise TypeError(f"{path} holds a {type(state).__name__}, not detector weights: expected an engine "
                        "checkpoint ({'model': state_dict, ...}, a run's last.pt) or a bare state dict "
                        "(parameter name -> tensor)")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise RuntimeError(f"{path} does not fit this detector: {exc}") from exc
    if missing or unexpected:
        raise RuntimeError(f"{path} does not fit this detector: missing {missing[:5]}..., "
                           f"unexpected {unexpected[:5]}... (same kind, backbone and options?)")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["DetectorOptions", "KINDS", "TWO_STAGE_KINDS", "TimmFPN", "build_detector", "count_parameters", "load_weights"]
