"""Prediction-layer distillation of a Haystack reader: the stage behind ``distil_prediction_layer_from``.

Differences from farm-haystack 1.26.4, each a fix of a bug there:
tokenizers are checked before any teacher work; teacher logits are computed once for the training set only,
fp16 on disk, under a key covering teacher, tokenizers, sequence settings and data; the KD softmax covers
only context tokens and the no-answer position (``kd_mask="span"``); start and end KD are averaged like the
hard loss; ``"mse"`` and callables work; the seed is a parameter; the QA head's confidence temperature is
not trained; the method returns metrics. By default batches are computed padded to ``max_seq_len``, as Haystack
does, because the hard QA loss's softmax covers the padding and that trains better students (see BENCHMARKS.md);
``hard_loss_padding`` trades this for batches computed without most of their padding (faster steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..distributed import world
from ..losses import DistillationLoss, SpanKDLoss, combine_losses, span_cross_entropy
from ..spans import best_spans
from .config import PredictionLayerConfig
from .data import StageData, StageInputs, batching, kd_valid_mask, unlabeled_fingerprint
from .sparse_logits import decode_top_k, validate_top_k
from .stage import Loss, ReaderStage, check_pair, check_reader_vocab
from .targets import TeacherTargetSpec, teacher_key, teacher_span_logits

#: How ``hard_loss_padding`` is recorded in the run identity: under the name runs had before ``"slices"``, so
#: their checkpoints resume and their records compare.
RECORDED_PADDING = {"slices": "max_seq_len"}


class PredictionLayerLoss:
    """``w * span_KD(student, teacher) + (1 - w) * hard QA loss``, both averaged over start and end.

    The hard loss is Haystack's QA cross-entropy, as if padded to ``padded_length`` when given
    (:func:`..losses.span_cross_entropy`). With ``top_k`` set, ``batch["teacher_logits"]`` holds packed top-k
    rows (:mod:`.sparse_logits`). Rows with ``batch["labeled"] == 0`` (unlabelled questions) add no hard loss,
    only KD; with ``pseudo_label_threshold`` set they take the teacher's best span as their label where its
    probability reaches the threshold (:func:`..spans.best_spans`). The hard loss is summed over the rows that
    have a label and divided by the batch size, so a batch of labelled rows gets exactly the plain loss.
    """

    def __init__(self, model: Any, weight: float, loss: DistillationLoss, temperature: float, kd_mask: str,
                 top_k: Optional[int] = None, padded_length: Optional[int] = None,
                 pseudo_label_threshold: Optional[float] = None) -> None:
        self.model, self.weight, self.kd_mask = model, weight, kd_mask
        self.kd = SpanKDLoss(loss, temperature)
        self.top_k, self.padded_length = top_k, padded_length
        self.pseudo_label_threshold = pseudo_label_threshold

    def __call__(self, batch: Dict[str, Tensor]) -> Tensor:
        logits = self.model.forward(input_ids=batch["input_ids"], segment_ids=batch["segment_ids"],
                                    padding_mask=batch["padding_mask"])[0]
        teacher = batch.get("teacher_logits")
        if teacher is not None and self.top_k is not None:
            teacher = decode_top_k(teacher, logits.shape[1])
        labels, has_label = self._labels(batch, teacher)
        per_row = span_cross_entropy(logits, labels, batch["padding_mask"], self.padded_length)
        hard = (per_row * has_label).sum() / len(per_row)
        if self.weight == 0:
            return hard
        return combine_losses(hard, self.kd(logits, teacher, kd_valid_mask(batch, self.kd_mask)), self.weight)

    def _labels(self, batch: Dict[str, Tensor], teacher: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Gold ``[B, 2]`` start/end per row and a ``[B]`` 0/1 weight: 1 for labelled rows and confident
        pseudo-labels."""
        labels = batch["labels"][:, 0, :]
        labeled = batch["labeled"].to(labels.device).bool() if "labeled" in batch else \
            torch.ones(len(labels), dtype=torch.bool, device=labels.device)
        if self.pseudo_label_threshold is None or teacher is None or bool(labeled.all()):
            return labels, labeled.float()
        spans, prob = best_spans(teacher, batch["span_mask"])
        confident = ~labeled & (prob.to(labeled.device) >= self.pseudo_label_threshold)
        labels = torch.where(labeled[:, None], labels, spans.to(labels.device))
        return labels, (labeled | confident).float()


def check_top_k(k: int, max_seq_len: int, loss: Any, tokenizer_alignment: Optional[str]) -> None:
    """A top-k teacher cache needs a distribution loss (the tail is only right in probability) and one tokenizer."""
    validate_top_k(k, max_seq_len)
    if loss not in ("kl_div", "soft_ce"):
        raise ValueError(f"teacher_top_k={k} keeps the teacher's distribution, not its raw logits, so it works with "
                         f"distillation_loss 'kl_div' or 'soft_ce', not {loss!r}; use teacher_top_k=None.")
    if tokenizer_alignment is not None:
        raise ValueError("teacher_top_k cannot be combined with tokenizer_alignment yet; use teacher_top_k=None.")


class PredictionStage(ReaderStage):
    """Teacher targets cached once (dense, top-k or aligned to the student's tokens); KD + Haystack's hard loss.
    Without a teacher: plain fine-tuning on the labels (``train_reader``)."""

    name = "prediction_layer"
    config: PredictionLayerConfig

    @property
    def top_k(self) -> Optional[int]:
        """The top-k cache size, None for dense targets or without a teacher."""
        return None if self.teacher is None else self.config.teacher_top_k

    def check(self, inputs: StageInputs) -> None:
        c, max_seq_len = self.config, inputs.settings.max_seq_len
        if self.top_k is not None:
            check_top_k(self.top_k, max_seq_len, c.distillation_loss, c.tokenizer_alignment)
        check_reader_vocab(self.student, "student")
        if self.teacher is None and inputs.unlabeled:
            raise ValueError("unlabeled_filename needs a teacher: unlabelled questions learn only from its answers; "
                             "use distil_prediction_layer_from(teacher, ...).")
        if self.teacher is not None:
            if c.tokenizer_alignment is None:
                check_pair(self.teacher, self.student, max_seq_len)
            else:
                from .cross_tokenizer import check_alignable

                check_alignable(self.teacher, self.student, c.tokenizer_alignment, c.distillation_loss)

    def teacher_targets(self, data: StageData, inputs: StageInputs, device: torch.device, scratch: Path) -> bool:
        if self.teacher is None:
            return False
        c = self.config
        extra: Dict[str, Any] = {"dev_split": c.dev_split, "seed": c.seed if c.dev_split else None}
        if inputs.unlabeled:  # absent otherwise, so the caches of earlier runs stay valid
            extra["unlabeled_file"] = unlabeled_fingerprint(inputs.unlabeled)
        key = teacher_key(self.teacher, self.student, inputs.train, inputs.settings, extra)
        shared = c.caching or world()[1] > 1  # under torchrun the ranks share one cache folder
        cache_dir = Path(c.cache_path) / "teacher_outputs" if shared else scratch
        batch_size = c.teacher_batch_size or c.batch_size
        if c.tokenizer_alignment is None:
            spec = TeacherTargetSpec(self.top_k, c.temperature, c.kd_mask)
            data.features["teacher_logits"] = teacher_span_logits(
                self.teacher, data.features, batch_size, device, cache_dir, key, c.use_amp, spec,
                self.teacher_stats)
        else:
            from .cross_tokenizer import aligned_teacher_logits

            data.features["teacher_logits"] = aligned_teacher_logits(
                self.teacher, self.student, data.features, data.train, batch_size, device, cache_dir,
                {**key, "alignment": c.tokenizer_alignment}, self.teacher_stats)
        return True

    def loss(self, inputs: StageInputs, device: torch.device) -> Loss:
        c = self.config
        padded_length = inputs.settings.max_seq_len if c.hard_loss_padding == "slices" else None
        return PredictionLayerLoss(self.student.inferencer.model, 0.0 if self.teacher is None else
                                   c.distillation_loss_weight, c.distillation_loss, c.temperature, c.kd_mask,
                                   self.top_k, padded_length,
                                   c.pseudo_label_threshold if c.pseudo_labels else None)

    def batching(self) -> Dict[str, Any]:
        dense_targets = () if self.config.teacher_top_k and self.teacher is not None else ("teacher_logits",)
        return batching(self.config.group_by_length, dense_targets, cut=self.config.hard_loss_padding != "padded")

    def run_fields(self, inputs: StageInputs, loss_fn: Loss) -> Dict[str, Any]:
        c = self.config
        return {"loss": str(c.distillation_loss), "temperature": c.temperature,
                "weight": c.distillation_loss_weight, "kd_mask": c.kd_mask, "teacher_top_k": c.teacher_top_k,
                "hard_loss_padding": RECORDED_PADDING.get(c.hard_loss_padding, c.hard_loss_padding),
                **({"pseudo_label_threshold": c.pseudo_label_threshold} if c.pseudo_labels else {})}


def distil_prediction_layer(student: Any, teacher: Optional[Any], config: PredictionLayerConfig) -> Dict[str, Any]:
    """Run the stage (joining torch.distributed first when launched by torchrun); ``teacher=None`` fine-tunes on
    the labels alone. See :meth:`DistillationMixin.distil_prediction_layer_from` for the settings."""
    return PredictionStage(student, teacher, config).run()
