"""Default augmentation pipelines (torchvision.transforms.v2, so boxes follow the image)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def _per_box_fields(inputs):
    """Everything in the target that must be filtered together with the boxes."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) else inputs
    return target["labels"], target["ignore"]


def train_transforms(hflip: float = 0.5) -> v2.Compose:
    """Horizontal flip only: the paper's schedule; the synthetic classes are flip-invariant."""
    return v2.Compose([
        v2.RandomHorizontalFlip(hflip),
        v2.ToDtype(torch.float32, scale=True),
        v2.SanitizeBoundingBoxes(labels_getter=_per_box_fields),
    ])


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])
