"""The loss core shared by readers, sentence embeddings and classifiers.

Pure PyTorch, no Haystack import. Every loss is a function (``kd_kl_div`` ...); names given in settings
(``distillation_loss="kl_div"``, ``attention_loss="scores"``, an embedding ``loss="cosine"``) are looked up in one
registry, :data:`LOSSES` (:func:`get_loss`). Conventions:

* ``mask`` is a boolean tensor broadcastable to the logits without their last (class) dimension;
  ``True`` marks valid positions. Masked positions never enter a softmax and contribute nothing.
* Soft-target losses (KL, soft cross-entropy) are computed at temperature ``T`` and multiplied by
  ``T**2`` (Hinton et al., 2015) so that gradients keep their scale when ``T`` changes.
* Reductions average over rows (``batchmean``): every leading dimension is a row; rows whose entries are all
  masked (e.g. ignored tokens) are left out of the average.

Example:
    >>> import torch
    >>> from haystack_distill.losses import kd_kl_div
    >>> s, t = torch.zeros(2, 3), torch.zeros(2, 3)
    >>> float(kd_kl_div(s, t, temperature=2.0))
    0.0
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
DistillationLoss = Union[str, LossFn]

#: Value written into masked logits before they are handed to a user callable; exp(-1e4) is 0 in
#: every float dtype, and the same value in student and teacher makes differences vanish.
MASK_FILL_VALUE = -1e4



def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}; typical values are 1 to 5.")


def _row_mask(mask: Optional[Tensor], logits: Tensor) -> Tensor:
    """Boolean mask of shape ``logits.shape`` (class dim included) from a row-level mask."""
    if mask is None:
        return torch.ones_like(logits, dtype=torch.bool)
    return mask.to(torch.bool).unsqueeze(-1).expand_as(logits) if mask.dim() < logits.dim() else mask.bool()


def _masked_log_softmax(logits: Tensor, valid: Tensor) -> Tensor:
    filled = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    return torch.where(valid, F.log_softmax(filled, dim=-1), torch.zeros_like(logits))


def _rows(valid: Tensor) -> Tensor:
    """Number of rows with at least one valid entry (fully masked rows, e.g. ignored tokens, do not count)."""
    return valid.any(-1).sum().clamp_min(1)


def kd_kl_div(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Optional[Tensor] = None
) -> Tensor:
    """KL(teacher_T || student_T) * T^2 over the last dimension, averaged over rows.

    Args:
        student_logits: ``[..., C]`` raw student scores.
        teacher_logits: ``[..., C]`` raw teacher scores, same shape.
        temperature: softening temperature ``T > 0``.
        mask: optional ``[..., C]`` boolean mask of classes/positions allowed in the softmax.

    Example:
        >>> import torch
        >>> s = torch.tensor([[1.0, 2.0, 3.0]]); t = torch.tensor([[3.0, 2.0, 1.0]])
        >>> round(float(kd_kl_div(s, t)), 4)
        1.1504
    """
    _check_temperature(temperature)
    valid = _row_mask(mask, student_logits)
    log_p_s = _masked_log_softmax(student_logits / temperature, valid)
    log_p_t = _masked_log_softmax(teacher_logits.detach() / temperature, valid)
    p_t = torch.where(valid, log_p_t.exp(), torch.zeros_like(log_p_t))
    per_class = p_t * (log_p_t - log_p_s)
    return per_class.sum() / _rows(valid) * temperature**2


def soft_cross_entropy(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Optional[Tensor] = None
) -> Tensor:
    """Cross-entropy with the teacher's softened distribution as target, times T^2, row-averaged.

    Equals :func:`kd_kl_div` plus the teacher entropy (constant for the student).
    """
    _check_temperature(temperature)
    valid = _row_mask(mask, student_logits)
    log_p_s = _masked_log_softmax(student_logits / temperature, valid)
    log_p_t = _masked_log_softmax(teacher_logits.detach() / temperature, valid)
    p_t = torch.where(valid, log_p_t.exp(), torch.zeros_like(log_p_t))
    return -(p_t * log_p_s).sum() / _rows(valid) * temperature**2


def logit_mse(student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean squared error between raw logits over valid elements (temperature-free)."""
    valid = _row_mask(mask, student_logits)
    diff = (student_logits - teacher_logits.detach()) * valid
    return diff.pow(2).sum() / valid.sum().clamp_min(1)


def _call_user_loss(fn: Callable[..., Tensor], student: Tensor, teacher: Tensor) -> Tensor:
    """Call ``fn`` with keywords if it declares Haystack's names, else positionally."""
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "student_logits" in params and "teacher_logits" in params:
        out = fn(student_logits=student, teacher_logits=teacher)
    else:
        out = fn(student, teacher)
    if not isinstance(out, Tensor) or out.numel() != 1:
        raise TypeError(
            f"distillation_loss callable {getattr(fn, '__name__', fn)!r} must return a scalar tensor, "
            f"got {type(out).__name__} {getattr(out, 'shape', '')}."
        )
    return out.reshape(())


def validate_distillation_loss(loss: DistillationLoss) -> DistillationLoss:
    """Return ``loss`` if it is a supported name or a callable; raise a ValueError naming the choices."""
    if callable(loss) or loss in LOSSES["logits"]:
        return loss
    raise ValueError(
        f"distillation_loss={loss!r} is not supported; use one of {', '.join(LOSSES['logits'])} "
        "or a callable (student_logits, teacher_logits) -> scalar tensor."
    )


def logits_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    loss: DistillationLoss = "kl_div",
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Dispatch one KD term over the last dimension: a name of ``LOSSES["logits"]`` or a callable.

    A callable receives ``student / T`` and ``teacher / T`` with masked entries set to
    :data:`MASK_FILL_VALUE` in both, and its result is multiplied by ``T**2`` (Haystack's convention).
    """
    _check_temperature(temperature)
    loss = validate_distillation_loss(loss)  # returns it unchanged, or raises
    if isinstance(loss, str):  # a name of LOSSES["logits"]; else a callable
        return LOSSES["logits"][loss](student_logits, teacher_logits, temperature, mask)
    valid = _row_mask(mask, student_logits)
    s = (student_logits / temperature).masked_fill(~valid, MASK_FILL_VALUE)
    t = (teacher_logits.detach() / temperature).masked_fill(~valid, MASK_FILL_VALUE)
    return _call_user_loss(loss, s, t) * temperature**2


def span_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    valid_mask: Optional[Tensor] = None,
    loss: DistillationLoss = "kl_div",
    temperature: float = 1.0,
) -> Tensor:
    """KD for extractive-QA span logits, start and end averaged like the hard loss.

    Args:
        student_logits: ``[B, S, 2]`` start/end logits (Haystack's QA head layout).
        teacher_logits: ``[B, S, 2]``.
        valid_mask: ``[B, S]`` boolean, True for context tokens and the no-answer position;
            question, special and padding tokens are excluded from the softmax.
        loss: ``"kl_div"``, ``"soft_ce"``, ``"mse"`` or a callable (applied to start and end separately).
        temperature: ``T > 0``.

    Returns ``(L(start) + L(end)) / 2``; Haystack sums the two, doubling the KD weight.

    Example:
        >>> import torch
        >>> s = torch.zeros(1, 4, 2); t = torch.zeros(1, 4, 2)
        >>> float(span_kd_loss(s, t, torch.tensor([[True, False, True, True]])))
        0.0
    """
    if student_logits.shape != teacher_logits.shape or student_logits.shape[-1] != 2:
        raise ValueError(
            f"span logits must both be [batch, seq_len, 2]; got student {tuple(student_logits.shape)} "
            f"and teacher {tuple(teacher_logits.shape)}."
        )
    terms = [
        logits_kd(student_logits[..., k], teacher_logits[..., k], loss, temperature, valid_mask) for k in (0, 1)
    ]
    return (terms[0] + terms[1]) / 2


def combine_losses(hard_loss: Tensor, kd_loss: Tensor, distillation_loss_weight: float) -> Tensor:
    """``w * kd + (1 - w) * hard`` with ``w`` in [0, 1] (Haystack's ``distillation_loss_weight``)."""
    if not 0.0 <= distillation_loss_weight <= 1.0:
        raise ValueError(f"distillation_loss_weight must be in [0, 1], got {distillation_loss_weight!r}.")
    return distillation_loss_weight * kd_loss + (1.0 - distillation_loss_weight) * hard_loss


def span_cross_entropy(logits: Tensor, positions: Tensor, padding_mask: Tensor,
                       padded_length: Optional[int] = None) -> Tensor:
    """Per-feature hard QA loss: cross-entropy of the gold start and end over positions, averaged (``[B]``).

    Without ``padded_length`` the softmax covers all ``S`` given positions, as Haystack's ``logits_to_loss``.
    Haystack pads every batch to ``max_seq_len`` and its softmax includes that padding, so the loss depends on
    how wide a batch is computed. ``padded_length=L`` gives each feature the loss it has when padded to ``L``
    without computing that padding: the row's padding positions that are present stand in for all ``L - n_real``
    of them (their exp-logits are scaled by ``(L - n_real) / n_present``). Exact when the padding positions share
    one logit; a row with no padding present gets none.

    Args:
        logits: ``[B, S, 2]`` start/end logits.
        positions: ``[B, 2]`` gold start and end (negative values are clamped to 0, as in Haystack).
        padding_mask: ``[B, S]``, 1 for real tokens.
        padded_length: ``L >= S``, or ``None``.

    Example:
        >>> logits = torch.zeros(1, 4, 2)
        >>> mask = torch.tensor([[1, 1, 1, 0]])
        >>> round(span_cross_entropy(logits, torch.tensor([[0, 2]]), mask, padded_length=8).item(), 4)  # log 8
        2.0794
    """
    if padded_length is not None:
        if padded_length < logits.shape[1]:
            raise ValueError(f"padded_length={padded_length} is shorter than the batch ({logits.shape[1]}).")
        real = padding_mask.bool()
        scale = (padded_length - real.sum(1)) / (~real).sum(1).clamp(min=1)  # [B]
        shift = torch.where(real, 0.0, scale.clamp(min=1e-30).log()[:, None])  # [B, S]
        logits = logits + shift[:, :, None].to(logits.dtype)
    # class dimension 1 (positions), one target per start / end
    return F.cross_entropy(logits, positions.clamp(min=0).long(), reduction="none").mean(1)


def haystack_equivalent_weight(haystack_weight: float) -> float:
    """Our ``distillation_loss_weight`` that gives the KD:labels balance of farm-haystack 1.26.4's ``haystack_weight``.

    Haystack adds ``KD(start) + KD(end)`` but averages the hard loss over start and end, so its weight ``w``
    balances KD against the labels ``2w : (1 - w)``; we average both. Equal balance needs ``2w / (1 + w)``;
    the two losses then differ only by the constant factor ``1 / (1 + w)``.

    Example:
        >>> round(haystack_equivalent_weight(0.75), 4)   # 6/7
        0.8571
    """
    if not 0.0 <= haystack_weight <= 1.0:
        raise ValueError(f"haystack_weight must be in [0, 1], got {haystack_weight!r}.")
    return 2.0 * haystack_weight / (1.0 + haystack_weight)


def hidden_state_mse(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    projection: Optional[nn.Module] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """MSE between ``projection(student_hidden)`` and ``teacher_hidden``, averaged over valid tokens.

    Args:
        student_hidden: ``[B, S, d_s]``.
        teacher_hidden: ``[B, S, d_t]``.
        projection: maps ``d_s -> d_t`` (e.g. a trained ``nn.Linear``); required when widths differ.
        mask: ``[B, S]`` attention mask; padding tokens are ignored.
    """
    projected = projection(student_hidden) if projection is not None else student_hidden
    if projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"hidden states differ in shape: student {tuple(projected.shape)} vs teacher "
            f"{tuple(teacher_hidden.shape)}; pass a projection from {student_hidden.shape[-1]} to "
            f"{teacher_hidden.shape[-1]}."
        )
    return logit_mse(projected, teacher_hidden, mask)


def hidden_projections(student_width: int, teacher_width: int, student_layers: Sequence[int]) -> nn.ModuleDict:
    """Trained ``Linear`` maps from the student's width to the teacher's: ``"embeddings"`` and one ``"layer_i"``
    per mapped student layer; empty when the widths match (no projection needed)."""
    if student_width == teacher_width:
        return nn.ModuleDict()
    keys = ["embeddings", *(f"layer_{i}" for i in student_layers)]
    return nn.ModuleDict({k: nn.Linear(student_width, teacher_width, bias=False) for k in keys})


def layerwise_hidden_mse(student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor],
                         mapping: Dict[int, int], projections: nn.ModuleDict,
                         mask: Optional[Tensor] = None) -> Tuple[Tensor, Union[Tensor, int]]:
    """TinyBERT's embedding and hidden-state terms: (MSE of the embedding outputs, sum over ``mapping``
    ``{student_layer: teacher_layer}`` of the layer outputs' MSE, the int 0 for an empty ``mapping``).
    ``*_hidden`` are transformers' ``output_hidden_states`` tuples (index 0 the embeddings, ``i + 1`` the output of
    layer ``i``); ``projections`` as :func:`hidden_projections` builds them."""

    def project(key: str) -> Optional[nn.Module]:
        return projections[key] if key in projections else None

    embeddings = hidden_state_mse(student_hidden[0], teacher_hidden[0], project("embeddings"), mask)
    layers = sum(hidden_state_mse(student_hidden[s + 1], teacher_hidden[t + 1], project(f"layer_{s}"), mask)
                 for s, t in mapping.items())
    return embeddings, layers


def embedding_mse(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    """Mean squared error between ``[N, d]`` embeddings (sentence-transformers' MSELoss)."""
    return F.mse_loss(student_embeddings, teacher_embeddings.detach())


def embedding_cosine(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    """Mean of ``1 - cos(student, teacher)`` over ``[N, d]`` embeddings."""
    return (1 - F.cosine_similarity(student_embeddings, teacher_embeddings.detach(), dim=-1)).mean()


def classification_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Optional[Tensor],
    alpha: float = 0.5,
    temperature: float = 2.0,
    loss: DistillationLoss = "kl_div",
    ignore_index: int = -100,
) -> Tensor:
    """``alpha * CE(labels) + (1 - alpha) * KD`` for sequence or token classification logits ``[..., C]``.

    Token positions whose label is ``ignore_index`` are left out of both terms. ``alpha`` weights the
    hard loss, as in the common Trainer recipe; with no labels only the KD term is returned.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    mask = None if labels is None else labels.ne(ignore_index)
    kd = logits_kd(student_logits, teacher_logits, loss, temperature, mask)
    if labels is None:
        return kd
    ce = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), labels.reshape(-1),
                         ignore_index=ignore_index)
    return alpha * ce + (1 - alpha) * kd


class SpanKDLoss(nn.Module):
    """Module form of :func:`span_kd_loss`: the span KD term of both reader stages.

    The teacher's logits (e.g. fp16 from the cache) are cast to the student's dtype first.
    """

    def __init__(self, loss: DistillationLoss = "kl_div", temperature: float = 1.0) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.loss = validate_distillation_loss(loss)
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, valid_mask: Optional[Tensor] = None) -> Tensor:
        teacher_logits = teacher_logits.to(student_logits.dtype)
        return span_kd_loss(student_logits, teacher_logits, valid_mask, self.loss, self.temperature)


def match_heads(student_attention: Tensor, teacher_attention: Tensor) -> Tuple[Tensor, Tensor]:
    """Average over heads (dim 1) when the head counts differ, so any student can learn from any teacher."""
    if student_attention.shape[1] == teacher_attention.shape[1]:
        return student_attention, teacher_attention
    return student_attention.mean(1, keepdim=True), teacher_attention.mean(1, keepdim=True)


def _pair_mask(mask: Optional[Tensor], attention: Tensor) -> Tensor:
    """``[B, 1, S, S]`` mask of valid (query, key) pairs from a ``[B, S]`` token mask."""
    if mask is None:
        return torch.ones_like(attention, dtype=torch.bool)
    token = mask.to(torch.bool)
    return (token[:, None, :, None] & token[:, None, None, :]).expand_as(attention)


def attention_score_mse(student_scores: Tensor, teacher_scores: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """TinyBERT's attention loss: MSE of pre-softmax scores ``[B, H, S, S]`` over valid (query, key) pairs.

    Head counts may differ (both sides are then head-averaged); ``mask`` is the ``[B, S]`` padding mask.
    """
    student_scores, teacher_scores = match_heads(student_scores, teacher_scores)
    return logit_mse(student_scores, teacher_scores, _pair_mask(mask, student_scores))


def attention_kl(student_probs: Tensor, teacher_probs: Tensor, mask: Optional[Tensor] = None,
                 temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) between attention distributions ``[B, H, S, S]`` (rows sum to 1 over keys),
    averaged over valid query rows and heads; padding keys and queries are excluded. Heads may differ.
    """
    _check_temperature(temperature)
    student_probs, teacher_probs = match_heads(student_probs, teacher_probs)
    valid = _pair_mask(mask, student_probs)
    tiny = torch.finfo(student_probs.dtype).tiny
    log_s = _masked_log_softmax(student_probs.clamp_min(tiny).log() / temperature, valid)
    log_t = _masked_log_softmax(teacher_probs.detach().clamp_min(tiny).log() / temperature, valid)
    p_t = torch.where(valid, log_t.exp(), torch.zeros_like(log_t))
    per_row = (p_t * (log_t - log_s)).sum(-1)
    rows = valid.any(-1)
    return per_row.sum() / rows.sum().clamp_min(1) * temperature**2


def _logit_mse_at(student: Tensor, teacher: Tensor, temperature: float, mask: Optional[Tensor]) -> Tensor:
    return logit_mse(student, teacher, mask)  # on raw logits: the temperature does not apply


def _attention_scores_at(student: Tensor, teacher: Tensor, temperature: float, mask: Optional[Tensor]) -> Tensor:
    return attention_score_mse(student, teacher, mask)  # pre-softmax scores: the temperature does not apply


def _attention_kl_at(student: Tensor, teacher: Tensor, temperature: float, mask: Optional[Tensor]) -> Tensor:
    return attention_kl(student, teacher, mask, temperature)


#: Every loss that a setting names, by family. One call shape per family:
#: ``"logits"`` and ``"attention"``: ``fn(student, teacher, temperature, mask)``; ``"embedding"``: ``fn(student,
#: teacher)``. Reader stages (``distillation_loss``, ``attention_loss``), the HF trainer and the embedding
#: distillation (``loss``) all look names up here.
LOSSES: Dict[str, Dict[str, Callable[..., Tensor]]] = {
    "logits": {"kl_div": kd_kl_div, "mse": _logit_mse_at, "soft_ce": soft_cross_entropy},
    "attention": {"scores": _attention_scores_at, "kl": _attention_kl_at},
    "embedding": {"mse": embedding_mse, "cosine": embedding_cosine},
}
BUILTIN_LOSSES = tuple(LOSSES["logits"])  # the names ``distillation_loss`` accepts besides a callable


def get_loss(family: str, name: str, setting: str = "loss") -> Callable[..., Tensor]:
    """``LOSSES[family][name]``; an unknown name raises ValueError naming ``setting`` and the choices.

    Example:
        >>> get_loss("embedding", "cosine").__name__
        'embedding_cosine'
    """
    choices = LOSSES[family]
    if name not in choices:
        raise ValueError(f"{setting}={name!r} is not supported; use one of {', '.join(choices)}.")
    return choices[name]
