"""TinyBERT's layer-matching loss, shared by general distillation and the reader's intermediate stage.

    L = w_emb * MSE(P_emb(E_s), E_t) + w_hid * sum_i MSE(P_i(H_s[i]), H_t[map(i)])
        + w_att * sum_i A(student layer i, teacher layer map(i))

with ``map`` a ``{student_layer: teacher_layer}`` dict, ``P`` trained ``Linear`` projections (created only when the
widths differ) and ``A`` an attention loss of :data:`~haystack_distill.losses.LOSSES`: ``"scores"`` (MSE of masked
pre-softmax scores, TinyBERT's), ``"kl"`` (KL between attention distributions) or ``"none"`` (not computed). Head
counts may differ (head-averaged). Padding tokens count in no term. No Haystack import.

Example:
    >>> weights = LayerMatchWeights(attention_loss="kl")
    >>> weights.attention == ATTENTION_WEIGHT, weights.embedding, weights.hidden
    (True, 1.0, 1.0)
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import Tensor, nn

from .attention import AttentionScores
from .defaults import ATTENTION_WEIGHT
from .losses import get_loss, hidden_projections, layerwise_hidden_mse

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["ATTENTION_WEIGHT", "LayerMatchLoss", "LayerMatchWeights"]

#: One forward pass: (the task output or None, the hidden states, the attention of each matched layer).
Outputs = Tuple[Any, Sequence[Tensor], Dict[int, Tensor]]
#: The unweighted terms by name; a sum over an empty layer mapping is the int 0.
Terms = Dict[str, Union[Tensor, int]]


@dataclass(frozen=True)
class LayerMatchWeights:
    """The three terms' weights (0: no say), the attention loss and the temperature of ``"kl"``."""

    embedding: float = 1.0
    hidden: float = 1.0
    attention: float = ATTENTION_WEIGHT
    attention_loss: str = "scores"  # "scores", "kl" or "none" (not computed)
    temperature: float = 1.0  # softens the attention distributions of "kl"; "scores" ignores it

    def total(self, terms: Terms) -> Tensor:
        """Weighted sum of ``terms`` (keys ``embeddings``, ``hidden`` and ``attention``)."""
        weights = {"embeddings": self.embedding, "hidden": self.hidden, "attention": self.attention}
        # a tensor: the embeddings term always is one
        return cast(Tensor, sum(weights[name] * value for name, value in terms.items()))


class LayerMatchLoss(nn.Module):
    """The layer-matching loss between two transformers encoders; owns only the projections.

    The models are kept out of this module's parameters and state_dict. The teacher runs in eval mode under
    ``no_grad``, in chunks of ``teacher_batch_size`` rows (default: the whole batch). Other model types override
    :meth:`encoder`, :meth:`call` and :attr:`mask_key`. ``last_terms`` holds the unweighted terms of the last batch.
    """

    mask_key = "attention_mask"  # the batch's [B, S] padding mask

    def __init__(self, student: Any, teacher: Any, mapping: Dict[int, int],
                 weights: Optional[LayerMatchWeights] = None, teacher_batch_size: Optional[int] = None) -> None:
        super().__init__()
        self.mapping = dict(mapping)
        self._models = [student, teacher]  # a list keeps them out of this module's parameters and state_dict
        self.weights = weights or LayerMatchWeights()
        kind = self.weights.attention_loss
        self.attention = None if kind == "none" else get_loss("attention", kind, "attention_loss")
        d_s, d_t = (self.encoder(m).config.hidden_size for m in self._models)
        self.projections = hidden_projections(d_s, d_t, list(self.mapping))
        self.teacher_batch_size = teacher_batch_size
        self.last_terms: Dict[str, float] = {}

    @property
    def student(self) -> Any:
        return self._models[0]

    @property
    def teacher(self) -> Any:
        return self._models[1]

    def encoder(self, model: Any) -> PreTrainedModel:
        """The transformers encoder of ``model`` (its width and attention layers)."""
        return model

    def call(self, model: Any, batch: Dict[str, Tensor],
             attentions: bool) -> Tuple[Any, Sequence[Tensor], Optional[Sequence[Tensor]]]:
        """(task output or None, hidden states, attention probabilities when ``attentions``) of ``model``."""
        out = model(**batch, output_hidden_states=True, **({"output_attentions": True} if attentions else {}))
        return None, out.hidden_states, (out.attentions if attentions else None)

    def run(self, model: Any, batch: Dict[str, Tensor], layers: List[int]) -> Outputs:
        """:meth:`call`, with the attention of ``layers`` that the attention loss needs (none when it is off)."""
        kind = self.weights.attention_loss
        with AttentionScores(self.encoder(model), layers) if kind == "scores" else nullcontext() as scores:
            extra, hidden, probs = self.call(model, batch, kind == "kl")
            if scores is not None:  # kind == "scores"
                return extra, hidden, {i: scores.get(i) for i in layers}
        return extra, hidden, (dict(enumerate(probs)) if kind == "kl" and probs is not None else {})

    @torch.no_grad()
    def teacher_outputs(self, batch: Dict[str, Tensor]) -> Outputs:
        """The teacher's :meth:`run`, in chunks of ``teacher_batch_size`` rows."""
        self.teacher.eval()
        layers, rows = sorted(set(self.mapping.values())), len(batch["input_ids"])
        size = self.teacher_batch_size or rows
        if size >= rows:
            return self.run(self.teacher, batch, layers)
        parts = [self.run(self.teacher, {k: v[i : i + size] for k, v in batch.items()}, layers)
                 for i in range(0, rows, size)]
        extra = None if parts[0][0] is None else torch.cat([p[0] for p in parts])
        hidden = [torch.cat([p[1][j] for p in parts]) for j in range(len(parts[0][1]))]
        return extra, hidden, {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}

    def layer_terms(self, batch: Dict[str, Tensor]) -> Tuple[Terms, Any, Any]:
        """The unweighted terms (``embeddings``, ``hidden``, ``attention`` unless off) and the student's and the
        teacher's task outputs."""
        t_extra, t_hidden, t_attn = self.teacher_outputs(batch)
        s_extra, s_hidden, s_attn = self.run(self.student, batch, list(self.mapping))
        mask = batch[self.mask_key]
        embeddings, hidden = layerwise_hidden_mse(s_hidden, t_hidden, self.mapping, self.projections, mask)
        terms: Terms = {"embeddings": embeddings, "hidden": hidden}
        if self.attention is not None:
            terms["attention"] = sum(self.attention(s_attn[s], t_attn[t], self.weights.temperature, mask)
                                     for s, t in self.mapping.items())
        return terms, s_extra, t_extra

    def remember(self, terms: Dict[str, Any]) -> None:
        """Keep ``terms`` as floats in ``last_terms`` (an empty mapping's ``hidden`` is the int 0)."""
        self.last_terms = {k: float(v.detach() if isinstance(v, Tensor) else v) for k, v in terms.items()}

    def forward(self, batch: Dict[str, Tensor]) -> Tensor:
        terms, _, _ = self.layer_terms(batch)
        self.remember(terms)
        return self.weights.total(terms)
