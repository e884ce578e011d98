"""Intermediate-layer (TinyBERT) distillation of a reader: the stage behind ``distil_intermediate_layers_from``.

Loss per batch::

    L_inter = w_emb * MSE(P_emb(E_s), E_t) + w_hid * sum_i MSE(P_i(H_s[i]), H_t[map(i)])
              + w_att * sum_i A(student layer i, teacher layer map(i))
    L       = (1 - w) * L_inter + w * span_KD(student logits, teacher logits; distillation_loss, temperature)

with ``w = distillation_loss_weight`` and ``A`` the attention term: MSE of masked pre-softmax scores
(``"scores"``, TinyBERT's choice), KL between attention distributions (``"kl"``), or off (``"none"``); head
counts may differ (head-averaged). ``P`` are trained ``Linear`` projections, created only when widths differ,
registered in the optimizer, checkpointed and saved as ``projections.safetensors`` with the student.

Deliberate differences from farm-haystack 1.26.4 (research report section 2.2): projections train (they were
created after the optimizer) and each layer has its own (a leaked loop variable made all share one); attention
uses pre-softmax scores with a padding mask (1.26.4 compared post-softmax probabilities, masking nothing);
any layer counts, widths and head counts work; ``distillation_loss``, ``distillation_loss_weight``,
``temperature`` and ``teacher_batch_size`` are used instead of silently ignored.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor, nn

from ..attention import AttentionScores
from ..layers import LayerMapping, count_layers, resolve_layer_mapping
from ..losses import (
    DistillationLoss,
    attention_kl,
    attention_score_mse,
    hidden_projections,
    layerwise_hidden_mse,
    span_kd_loss,
)
from ..teacher_cache import fingerprint_file
from ..training import TrainConfig, config_fields, ensure_distributed, is_main_process, train
from . import common
from .prediction import finish, kd_valid_mask

logger = logging.getLogger(__name__)
ATTENTION_LOSSES = ("scores", "kl", "none")


def _hf(model: Any) -> nn.Module:
    return model.language_model.model


class IntermediateLayerLoss(nn.Module):
    """TinyBERT stage-1 loss between a student and a teacher ``AdaptiveModel``; owns the projections."""

    def __init__(self, student: Any, teacher: Any, mapping: Dict[int, int], *, embedding_weight: float = 1.0,
                 hidden_weight: float = 1.0, attention_weight: float = 1.0, attention_loss: str = "scores",
                 prediction_weight: float = 0.5, prediction_loss: DistillationLoss = "mse",
                 temperature: float = 1.0, kd_mask: str = "span", teacher_batch_size: Optional[int] = None) -> None:
        super().__init__()
        self.mapping = dict(mapping)
        # lists keep the two models out of this module's parameters and state_dict: it owns only projections
        self._models = [student, teacher]
        d_s, d_t = _hf(student).config.hidden_size, _hf(teacher).config.hidden_size
        self.projections = hidden_projections(d_s, d_t, list(self.mapping))
        self.weights = {"embeddings": embedding_weight, "hidden": hidden_weight, "attention": attention_weight}
        self.attention_loss, self.prediction_weight = attention_loss, prediction_weight
        self.prediction_loss, self.temperature, self.kd_mask = prediction_loss, temperature, kd_mask
        self.teacher_batch_size = teacher_batch_size
        self.last_terms: Dict[str, float] = {}

    @property
    def student(self) -> Any:
        return self._models[0]

    @property
    def teacher(self) -> Any:
        return self._models[1]

    def _run(self, model: Any, batch: Dict[str, Tensor], layers: list) -> tuple:
        inputs = dict(input_ids=batch["input_ids"], segment_ids=batch["segment_ids"],
                      padding_mask=batch["padding_mask"], output_hidden_states=True,
                      output_attentions=self.attention_loss == "kl")
        if self.attention_loss == "scores":
            with AttentionScores(_hf(model), layers) as scores:
                out = model.forward(**inputs)
                return out[0][0], out[1], {i: scores.get(i) for i in layers}
        out = model.forward(**inputs)
        return out[0][0], out[1], (dict(enumerate(out[2])) if self.attention_loss == "kl" else {})

    @torch.no_grad()
    def _teacher_outputs(self, batch: Dict[str, Tensor]) -> tuple:
        self.teacher.eval()
        size = self.teacher_batch_size or len(batch["input_ids"])
        parts = [self._run(self.teacher, {k: v[i : i + size] for k, v in batch.items()},
                           sorted(set(self.mapping.values())))
                 for i in range(0, len(batch["input_ids"]), size)]
        logits = torch.cat([p[0] for p in parts])
        hidden = [torch.cat([p[1][j] for p in parts]) for j in range(len(parts[0][1]))]
        attention = {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}
        return logits, hidden, attention

    def forward(self, batch: Dict[str, Tensor]) -> Tensor:
        t_logits, t_hidden, t_attn = self._teacher_outputs(batch)
        s_logits, s_hidden, s_attn = self._run(self.student, batch, list(self.mapping))
        mask = batch["padding_mask"]
        embeddings, hidden = layerwise_hidden_mse(s_hidden, t_hidden, self.mapping, self.projections, mask)
        terms = {"embeddings": embeddings, "hidden": hidden}
        if self.attention_loss == "scores":
            terms["attention"] = sum(attention_score_mse(s_attn[s], t_attn[t], mask) for s, t in self.mapping.items())
        elif self.attention_loss == "kl":
            terms["attention"] = sum(attention_kl(s_attn[s], t_attn[t], mask, self.temperature)
                                     for s, t in self.mapping.items())
        inter = sum(self.weights[name] * value for name, value in terms.items())
        total = (1 - self.prediction_weight) * inter
        if self.prediction_weight > 0:
            kd = span_kd_loss(s_logits, t_logits.to(s_logits.dtype), kd_valid_mask(batch, self.kd_mask),
                              self.prediction_loss, self.temperature)
            total = total + self.prediction_weight * kd
            terms["prediction"] = kd
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
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


def distil_intermediate_layers(student: Any, teacher: Any, *, data_dir: str, train_filename: str,
                               dev_filename: Optional[str], test_filename: Optional[str], use_gpu: Optional[bool],
                               devices: Any, batch_size: int, teacher_batch_size: Optional[int], n_epochs: int,
                               learning_rate: float, max_seq_len: Optional[int], warmup_proportion: float,
                               dev_split: float, evaluate_every: int, save_dir: Optional[str], use_amp: bool,
                               checkpoint_root_dir: Path, checkpoint_every: Optional[int], checkpoints_to_keep: int,
                               caching: bool, cache_path: Path, distillation_loss: DistillationLoss,
                               distillation_loss_weight: float,
                               temperature: float, processor: Any, grad_acc_steps: int, early_stopping: Any,
                               seed: int = 42, layer_mapping: LayerMapping = "uniform",
                               embedding_weight: float = 1.0, hidden_weight: float = 1.0,
                               attention_weight: float = 1.0, attention_loss: str = "scores",
                               kd_mask: str = "span", resume: Union[bool, str] = False,
                               doc_stride: Optional[int] = None, max_query_length: Optional[int] = None,
                               show_progress: bool = True, group_by_length: bool = False) -> Dict[str, Any]:
    """Run the stage (joining torch.distributed first when launched by torchrun).

    See :meth:`DistillationMixin.distil_intermediate_layers_from` for the arguments.
    """
    ensure_distributed()
    common.validate_hyperparameters(temperature, distillation_loss_weight, distillation_loss, batch_size, n_epochs,
                                    grad_acc_steps, kd_mask, learning_rate)
    train_path, dev_path, test_path, save_path, settings = common.stage_inputs(
        student, data_dir, train_filename, dev_filename, test_filename, save_dir, "_tinybert_stage_1", max_seq_len,
        doc_stride, max_query_length, teacher)
    max_seq_len, doc_stride, max_query_length = settings
    common.check_pair(teacher, student, max_seq_len)
    for role, reader in (("teacher", teacher), ("student", student)):
        check_attention_support(reader.inferencer.model, attention_loss, role)
    loss_fn = build_intermediate_loss(
        student, teacher, layer_mapping, embedding_weight=embedding_weight, hidden_weight=hidden_weight,
        attention_weight=attention_weight, attention_loss=attention_loss, prediction_weight=distillation_loss_weight,
        prediction_loss=distillation_loss, temperature=temperature, kd_mask=kd_mask,
        teacher_batch_size=teacher_batch_size)
    device = common.resolve_device(use_gpu, devices)

    train_paras, dev_paras, features = common.training_data(student, train_path, dev_path, dev_split, seed, processor,
                                                            settings, data_dir, caching, cache_path)
    logger.info("%d training features; layer mapping %s; projections %s", len(features["input_ids"]),
                loss_fn.mapping, list(loss_fn.projections) or "none (same width)")

    model = student.inferencer.model.to(device)
    teacher.inferencer.model.to(device)
    loss_fn.to(device)
    common.freeze_confidence_temperature(model)
    config = TrainConfig(
        n_epochs=n_epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_proportion=warmup_proportion,
        grad_acc_steps=grad_acc_steps, seed=seed, use_amp=use_amp, device=str(device),
        evaluate_every=evaluate_every if dev_paras else 0,
        checkpoint_dir=str(Path(checkpoint_root_dir) / "intermediate_layers"), checkpoint_every=checkpoint_every,
        checkpoints_to_keep=checkpoints_to_keep, resume=resume, show_progress=show_progress,
        **common.batching(group_by_length))
    config.run_fields = {
        **config_fields(config), "stage": "intermediate_layers", "mapping": loss_fn.mapping,
        "attention_loss": attention_loss, "weights": [embedding_weight, hidden_weight, attention_weight],
        "prediction": [str(distillation_loss), distillation_loss_weight, temperature],
        "teacher": common.teacher_key(teacher, student, train_path, max_seq_len, doc_stride,
                                      max_query_length)["teacher_weights"],
        "train_file": fingerprint_file(train_path),
        "n_features": len(features["input_ids"])}
    started = time.perf_counter()
    result = train(model, features, loss_fn, config, extra_modules=loss_fn,
                   eval_fn=common.make_eval_fn(student, dev_paras), early_stopping=early_stopping)
    timings = {"train_seconds": time.perf_counter() - started}
    metrics = finish(student, save_path, result, {**timings, **{f"last_{k}": v for k, v in
                                                                 loss_fn.last_terms.items()}},
                     dev_paras, test_path, {"stage": "intermediate_layers",
                                            **{k: str(v) for k, v in config.run_fields.items()}},
                     extra=lambda folder: save_projections(loss_fn, folder))
    return metrics
