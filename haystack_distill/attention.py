"""Capture pre-softmax attention scores of a transformers encoder with forward hooks. No Haystack import.

Hugging Face models return post-softmax attention probabilities (and none at all under SDPA attention);
TinyBERT distils the unnormalised scores ``Q K^T / sqrt(d)``. :class:`AttentionScores` hooks the query and
key projections of chosen layers and rebuilds the scores from them, whatever attention kernel runs.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    ...                              intermediate_size=16))
    >>> with AttentionScores(model, layers=[1]) as scores:
    ...     _ = model(torch.tensor([[1, 2, 3]]))
    >>> tuple(scores.get(1).shape)  # [batch, heads, query, key]
    (1, 2, 3, 3)
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

from torch import Tensor, nn

from .layers import encoder_layers


def query_key_modules(layer: nn.Module) -> Tuple[nn.Module, nn.Module, int]:
    """(query Linear, key Linear, number of heads) of one encoder layer (BERT family or DistilBERT)."""
    attention = getattr(layer, "attention", None)
    holder = getattr(attention, "self", attention)
    for q_name, k_name in (("query", "key"), ("q_lin", "k_lin")):
        query, key = getattr(holder, q_name, None), getattr(holder, k_name, None)
        heads = getattr(holder, "num_attention_heads", None) or getattr(holder, "n_heads", None)
        if isinstance(query, nn.Linear) and isinstance(key, nn.Linear) and heads is not None:
            return query, key, int(heads)
    raise ValueError(
        f"cannot find query/key projections in {type(layer).__name__}; attention_loss='scores' supports BERT, "
        "RoBERTa, MiniLM, ELECTRA and DistilBERT layers. Use attention_loss='kl' (needs attn_implementation='eager') "
        "or 'none'."
    )


class AttentionScores:
    """Context manager recording ``[B, H, S, S]`` pre-softmax scores of the given layers on every forward."""

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        self.model, self.layers = model, list(layers)
        self._q: Dict[int, Tensor] = {}
        self._k: Dict[int, Tensor] = {}
        self._heads: Dict[int, int] = {}
        self._handles: List = []

    def __enter__(self) -> AttentionScores:
        layers = encoder_layers(self.model)
        for idx in self.layers:
            query, key, heads = query_key_modules(layers[idx])
            self._heads[idx] = heads
            self._handles.append(query.register_forward_hook(self._store(self._q, idx)))
            self._handles.append(key.register_forward_hook(self._store(self._k, idx)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _store(target: Dict[int, Tensor], idx: int):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            target[idx] = output
        return hook

    def get(self, idx: int) -> Tensor:
        """Scores of layer ``idx`` from the last forward pass."""
        q, k, heads = self._q[idx], self._k[idx], self._heads[idx]
        batch, seq, width = q.shape
        head_dim = width // heads
        q = q.view(batch, seq, heads, head_dim).transpose(1, 2)
        k = k.view(batch, seq, heads, head_dim).transpose(1, 2)
        return q @ k.transpose(-1, -2) / math.sqrt(head_dim)
