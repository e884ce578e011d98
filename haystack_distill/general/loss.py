"""General distillation's loss: TinyBERT's layer-matching loss with one weight for the embeddings and hidden states."""

from __future__ import annotations

from typing import Any, Dict

from ..defaults import ATTENTION_WEIGHT
from ..layer_match import LayerMatchLoss, LayerMatchWeights


def general_weights(hidden_weight: float = 1.0, attention_weight: float = ATTENTION_WEIGHT) -> LayerMatchWeights:
    """General distillation's weights: ``hidden_weight`` for the embeddings and the hidden states alike,
    ``attention_weight`` for the attention scores' MSE (0: not computed)."""
    return LayerMatchWeights(embedding=hidden_weight, hidden=hidden_weight, attention=attention_weight,
                             attention_loss="scores" if attention_weight else "none")


class GeneralDistillationLoss(LayerMatchLoss):
    """:class:`~haystack_distill.layer_match.LayerMatchLoss` with :func:`general_weights`, between two plain
    transformers encoders."""

    def __init__(self, student: Any, teacher: Any, mapping: Dict[int, int], hidden_weight: float = 1.0,
                 attention_weight: float = ATTENTION_WEIGHT) -> None:
        super().__init__(student, teacher, mapping, general_weights(hidden_weight, attention_weight))
