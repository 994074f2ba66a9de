"""The hybrid recipe (notebooks/09): DeFeat's feature term plus GLAMD's head terms.

Table 3 compares recipes that differ in their masks, their head terms and their adapters. The hybrid
keeps DeFeat's feature term exactly as its setting computes it and adds GLAMD's head terms exactly as
GLAMD's head-only setting computes them (method ``glamd``, alpha 0, in the loss form
``DistillConfig.glamd_heads`` names -- the chosen recipes differ in form per detector). Beta and gamma
weight the head terms; DeFeat's own RoI term is off, so beta weights one thing.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .attention_masks import AttentionMaskDistillation
from .defeat import DeFeatDistillation


class HybridDistillation(nn.Module):
    def __init__(self, config, two_stage: bool, student_channels: int, teacher_channels: int, levels: int):
        super().__init__()
        self.config = config
        self.feature = DeFeatDistillation(replace(config, beta=0.0), two_stage, student_channels, teacher_channels,
                                          levels)
        self.heads = AttentionMaskDistillation(config.heads_config().resolved(two_stage), two_stage, student_channels,
                                               teacher_channels, levels)

    @property
    def adapters(self) -> nn.ModuleList:
        """The feature term's adapters (DeFeat's): what the feature imitation trains."""
        return self.feature.adapters

    def forward(self, d) -> dict:
        return self.feature(d) | self.heads(d)
