"""Intermediate-layer (TinyBERT) distillation of a reader: the stage behind ``distil_intermediate_layers_from``.

Loss per batch::

    L = (1 - w) * L_inter + w * span_KD(student logits, teacher logits; distillation_loss, temperature)

with ``w = distillation_loss_weight`` and ``L_inter`` TinyBERT's layer-matching loss
(:class:`~haystack_distill.layer_match.LayerMatchLoss`: embeddings, hidden states and attention, the attention
term ``"scores"``, ``"kl"`` or ``"none"``). Its projections (created only when widths differ) are registered in the
optimizer, checkpointed and saved as ``projections.safetensors`` with the student.

Deliberate differences from farm-haystack 1.26.4 (research report section 2.2): projections train (they were
created after the optimizer) and each layer has its own (a leaked loop variable made all share one); attention
uses pre-softmax scores with a padding mask (1.26.4 compared post-softmax probabilities, masking nothing);
any layer counts, widths and head counts work; ``distillation_loss``, ``distillation_loss_weight``,
``temperature`` and ``teacher_batch_size`` are used instead of silently ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..defaults import ATTENTION_WEIGHT
from ..distributed import is_main_process
from ..layer_match import LayerMatchLoss, LayerMatchWeights
from ..layers import LayerMapping, count_layers, resolve_layer_mapping
from ..losses import DistillationLoss, SpanKDLoss
from .config import ATTENTION_LOSSES, IntermediateLayerConfig
from .data import StageInputs, kd_valid_mask
from .stage import Loss, ReaderStage, check_pair
from .targets import teacher_fingerprint

logger = logging.getLogger(__name__)


def _hf(model: Any) -> nn.Module:
    return model.language_model.model


class IntermediateLayerLoss(LayerMatchLoss):
    """TinyBERT stage-1 loss between a student and a teacher ``AdaptiveModel``: the layer-matching loss mixed with
    span KD on their logits; owns the projections."""

    mask_key = "padding_mask"

    def __init__(self, student: Any, teacher: Any, mapping: Dict[int, int], *, embedding_weight: float = 1.0,
                 hidden_weight: float = 1.0, attention_weight: float = ATTENTION_WEIGHT, attention_loss: str = "scores",
                 prediction_weight: float = 0.5, prediction_loss: DistillationLoss = "mse",
                 temperature: float = 1.0, kd_mask: str = "span", teacher_batch_size: Optional[int] = None) -> None:
        weights = LayerMatchWeights(embedding_weight, hidden_weight, attention_weight, attention_loss, temperature)
        super().__init__(student, teacher, mapping, weights, teacher_batch_size)
        self.prediction_weight, self.kd_mask = prediction_weight, kd_mask
        self.kd = SpanKDLoss(prediction_loss, temperature)

    def encoder(self, model: Any) -> nn.Module:
        return _hf(model)

    def call(self, model: Any, batch: Dict[str, Tensor],
             attentions: bool) -> Tuple[Tensor, Sequence[Tensor], Optional[Sequence[Tensor]]]:
        out = model.forward(input_ids=batch["input_ids"], segment_ids=batch["segment_ids"],
                            padding_mask=batch["padding_mask"], output_hidden_states=True,
                            output_attentions=attentions)
        return out[0][0], out[1], (out[2] if attentions else None)

    def forward(self, batch: Dict[str, Tensor]) -> Tensor:
        terms, s_logits, t_logits = self.layer_terms(batch)
        total = (1 - self.prediction_weight) * self.weights.total(terms)
        if self.prediction_weight > 0:
            kd = self.kd(s_logits, t_logits, kd_valid_mask(batch, self.kd_mask))
            total = total + self.prediction_weight * kd
            terms["prediction"] = kd
        self.remember(terms)
        return total


def check_attention_support(model: Any, attention_loss: str, role: str) -> None:
    """Fail before training if the requested attention term cannot be computed for ``model``."""
    if attention_loss not in ATTENTION_LOSSES:
        raise ValueError(f"attention_loss={attention_loss!r}: use one of {ATTENTION_LOSSES}.")
    if attention_loss == "kl":
        impl = getattr(_hf(model).config, "_attn_implementation", "eager")
        if impl not in ("eager", None):
            raise ValueError(
                f"attention_loss='kl' needs attention probabilities, which the {role} ({impl!r} attention) does "
                "not return; load it with model_kwargs={'attn_implementation': 'eager'}, or use "
                "attention_loss='scores' (works with any attention implementation)."
            )


def build_intermediate_loss(student: Any, teacher: Any, layer_mapping: LayerMapping, **kwargs: Any):
    """Resolve the mapping against both models and build :class:`IntermediateLayerLoss`."""
    s_model, t_model = student.inferencer.model, teacher.inferencer.model
    mapping = resolve_layer_mapping(layer_mapping, count_layers(_hf(s_model)), count_layers(_hf(t_model)))
    return IntermediateLayerLoss(s_model, t_model, mapping, **kwargs)


def save_projections(loss: IntermediateLayerLoss, save_dir: Path) -> None:
    """Store the trained projections next to the student (safetensors)."""
    if not loss.projections or not is_main_process():
        return
    from safetensors.torch import save_file

    tmp = save_dir / ".projections.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in loss.projections.state_dict().items()}, str(tmp))
    tmp.replace(save_dir / "projections.safetensors")


class IntermediateStage(ReaderStage):
    """The teacher runs online in every step (no cached targets); the loss owns the trained projections."""

    name = "intermediate_layers"
    save_suffix = "_tinybert_stage_1"
    config: IntermediateLayerConfig
    teacher: Any  # required: check() refuses a stage without one (check_pair)

    def check(self, inputs: StageInputs) -> None:
        c = self.config
        check_pair(self.teacher, self.student, inputs.settings.max_seq_len)
        for role, reader in (("teacher", self.teacher), ("student", self.student)):
            check_attention_support(reader.inferencer.model, c.attention_loss, role)
        # built here, before any data work, so a bad layer_mapping fails early
        self.loss_fn = build_intermediate_loss(
            self.student, self.teacher, c.layer_mapping, embedding_weight=c.embedding_weight,
            hidden_weight=c.hidden_weight, attention_weight=c.attention_weight, attention_loss=c.attention_loss,
            prediction_weight=c.distillation_loss_weight, prediction_loss=c.distillation_loss,
            temperature=c.temperature, kd_mask=c.kd_mask, teacher_batch_size=c.teacher_batch_size)
        logger.info("layer mapping %s; projections %s", self.loss_fn.mapping,
                    list(self.loss_fn.projections) or "none (same width)")

    def loss(self, inputs: StageInputs, device: torch.device) -> Loss:
        self.teacher.inferencer.model.to(device)
        return self.loss_fn.to(device)

    def run_fields(self, inputs: StageInputs, loss_fn: Loss) -> Dict[str, Any]:
        c = self.config
        return {"mapping": self.loss_fn.mapping, "attention_loss": c.attention_loss,
                "weights": [c.embedding_weight, c.hidden_weight, c.attention_weight],
                "prediction": [str(c.distillation_loss), c.distillation_loss_weight, c.temperature],
                "teacher": teacher_fingerprint(self.teacher)}

    def extra_modules(self, loss_fn: Loss) -> Optional[nn.Module]:
        return self.loss_fn

    def extra_metrics(self, loss_fn: Loss) -> Dict[str, Any]:
        return {f"last_{k}": v for k, v in self.loss_fn.last_terms.items()}

    def save_extra(self, loss_fn: Loss) -> Optional[Callable[[Path], None]]:
        return lambda folder: save_projections(self.loss_fn, folder)


def distil_intermediate_layers(student: Any, teacher: Any, config: IntermediateLayerConfig) -> Dict[str, Any]:
    """Run the stage (joining torch.distributed first when launched by torchrun).

    See :meth:`DistillationMixin.distil_intermediate_layers_from` for the settings.
    """
    return IntermediateStage(student, teacher, config).run()
