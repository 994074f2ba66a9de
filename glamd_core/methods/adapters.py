"""The student -> teacher feature adapters, one per FPN level, shared by every feature-imitation method."""

from __future__ import annotations

import torch
from torch import nn

ADAPTERS = ("1x1", "3x3")


def feature_adapters(kind: str, student_channels: int, teacher_channels: int, levels: int) -> nn.ModuleList:
    """``"1x1"``: a 1x1 conv at PyTorch's default init (Zhang & Ma, GLAMD). ``"3x3"``: DeFeat's
    official adapter, a 3x3 conv whose weights start near zero (N(0, 1).fmod(2) * 1e-4; the bias keeps
    PyTorch's default), so the imitation term starts by pulling the student's maps toward the
    teacher's through a nearly silent adapter."""
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {ADAPTERS}, got {kind!r}")
    if kind == "1x1":
        return nn.ModuleList(nn.Conv2d(student_channels, teacher_channels, 1) for _ in range(levels))
    adapters = nn.ModuleList(nn.Conv2d(student_channels, teacher_channels, 3, padding=1) for _ in range(levels))
    with torch.no_grad():
        for a in adapters:
            a.weight.normal_().fmod_(2).mul_(1e-4)
    return adapters
