"""Distillation methods: what each computes from the teacher's and the student's tensors.

A method is an ``nn.Module`` built from a resolved :class:`~glamd_core.distill.DistillConfig`, the
detector kind and the FPN widths; called with the :class:`~glamd_core.distill.Distiller` of the
batch, it returns its loss terms (``distill_feat``, ``distill_cls``, ``distill_loc``). To add one:
write its module here, name it in :func:`build_method`, and test it.
"""

from __future__ import annotations

from .attention_masks import MASK_MODE_OF, AttentionMaskDistillation
from .defeat import DeFeatDistillation
from .hybrid import HybridDistillation


def build_method(config, two_stage: bool, student_channels: int, teacher_channels: int, levels: int):
    """The module computing ``config.method``'s losses (None for ``"none"``)."""
    if config.method == "none":
        return None
    if config.method == "defeat" and config.glamd_heads is not None:
        return HybridDistillation(config, two_stage, student_channels, teacher_channels, levels)
    if config.method == "defeat":
        return DeFeatDistillation(config, two_stage, student_channels, teacher_channels, levels)
    if config.method in MASK_MODE_OF:
        return AttentionMaskDistillation(config, two_stage, student_channels, teacher_channels, levels)
    raise ValueError(f"no distillation method {config.method!r}")


__all__ = ["AttentionMaskDistillation", "DeFeatDistillation", "HybridDistillation", "build_method"]
