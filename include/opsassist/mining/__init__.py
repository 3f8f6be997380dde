"""Log template mining (Drain) and its evaluation; metric anomaly summaries may join later."""

from .evaluation import grouping_accuracy
from .masking import DEFAULT_MASKS, WILDCARD, Mask, default_masks, mask_content, tokenize
from .templates import (
    MinerConfig,
    MiningResult,
    Template,
    TemplateMiner,
    merge,
    mine_sequences,
    mine_two_pass,
    similarity,
    template_id,
)

__all__ = [
    "DEFAULT_MASKS",
    "WILDCARD",
    "Mask",
    "MinerConfig",
    "MiningResult",
    "Template",
    "TemplateMiner",
    "default_masks",
    "grouping_accuracy",
    "mask_content",
    "merge",
    "mine_sequences",
    "mine_two_pass",
    "similarity",
    "template_id",
    "tokenize",
]
