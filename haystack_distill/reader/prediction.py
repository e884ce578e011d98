"""Prediction-layer distillation of a Haystack reader: the stage behind ``distil_prediction_layer_from``.

Differences from farm-haystack 1.26.4, each a fix of a bug there (research report section 0):
tokenizers are checked before any teacher work; teacher logits are computed once for the training set only,
fp16 on disk, under a key covering teacher, tokenizers, sequence settings and data; the KD softmax covers
only context tokens and the no-answer position (``kd_mask="span"``); start and end KD are averaged like the
hard loss; ``"mse"`` and callables work; the seed is a parameter; the QA head's confidence temperature is
not trained; the method returns metrics. By default batches are computed padded to ``max_seq_len``, as Haystack
does, because the hard QA loss's softmax covers the padding and that trained better students in our benchmark;
``hard_loss_padding`` trades this for batches computed without most of their padding (about 1.5x faster steps).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

from torch import Tensor

from ..losses import DistillationLoss, combine_losses, span_cross_entropy, span_kd_loss
from ..sparse_logits import decode_top_k, validate_top_k
from ..teacher_cache import fingerprint_file
from ..training import TrainConfig, config_fields, ensure_distributed, train, world
from . import common

logger = logging.getLogger(__name__)


def kd_valid_mask(batch: Dict[str, Tensor], kd_mask: str) -> Optional[Tensor]:
    """Positions allowed in the KD softmax: ``span`` (context + no-answer), ``padding`` (all real tokens), ``none``."""
    if kd_mask == "span":
        return batch["span_mask"].bool()
    if kd_mask == "padding":
        return batch["padding_mask"].bool()
    return None


class KDMask:
    """``batch -> [B, S]`` KD positions for one ``kd_mask`` setting (picklable, named for the cache key)."""

    def __init__(self, mask: str) -> None:
        self.mask = mask

    def __call__(self, batch: Dict[str, Tensor]) -> Optional[Tensor]:
        return kd_valid_mask(batch, self.mask)


class PredictionLayerLoss:
    """``w * span_KD(student, teacher) + (1 - w) * hard QA loss``, both averaged over start and end.

    The hard loss is Haystack's QA cross-entropy, as if padded to ``padded_length`` when given
    (:func:`..losses.span_cross_entropy`). With ``top_k`` set, ``batch["teacher_logits"]`` holds packed top-k
    rows (:mod:`..sparse_logits`).
    """

    def __init__(self, model: Any, weight: float, loss: DistillationLoss, temperature: float, kd_mask: str,
                 top_k: Optional[int] = None, padded_length: Optional[int] = None) -> None:
        self.model, self.weight, self.loss, self.temperature, self.kd_mask = model, weight, loss, temperature, kd_mask
        self.top_k, self.padded_length = top_k, padded_length

    def __call__(self, batch: Dict[str, Tensor]) -> Tensor:
        logits = self.model.forward(input_ids=batch["input_ids"], segment_ids=batch["segment_ids"],
                                    padding_mask=batch["padding_mask"])[0]
        hard = span_cross_entropy(logits, batch["labels"][:, 0, :], batch["padding_mask"], self.padded_length).mean()
        if self.weight == 0:
            return hard
        teacher = batch["teacher_logits"]
        if self.top_k is not None:
            teacher = decode_top_k(teacher, logits.shape[1])
        teacher = teacher.to(logits.dtype)
        kd = span_kd_loss(logits, teacher, kd_valid_mask(batch, self.kd_mask), self.loss, self.temperature)
        return combine_losses(hard, kd, self.weight)


HARD_LOSS_PADDING = ("padded", "max_seq_len", "batch")


def check_hard_loss_padding(hard_loss_padding: str, group_by_length: bool) -> None:
    """Refuse an unknown ``hard_loss_padding``, or length grouping with whole padded batches."""
    if hard_loss_padding not in HARD_LOSS_PADDING:
        raise ValueError(f"hard_loss_padding={hard_loss_padding!r}: use 'padded' (batches computed at max_seq_len, "
                         f"Haystack's exact loss), 'max_seq_len' (length-sorted slices, the padding's share of "
                         f"the loss estimated) or 'batch' (slices, the positions each slice holds).")
    if hard_loss_padding == "padded" and group_by_length:
        raise ValueError("group_by_length=True needs batches computed in slices; with it, pass "
                         "hard_loss_padding='max_seq_len' (or 'batch').")


def check_top_k(k: int, max_seq_len: int, loss: Any, tokenizer_alignment: Optional[str]) -> None:
    """A top-k teacher cache needs a distribution loss (the tail is only right in probability) and one tokenizer."""
    validate_top_k(k, max_seq_len)
    if loss not in ("kl_div", "soft_ce"):
        raise ValueError(f"teacher_top_k={k} keeps the teacher's distribution, not its raw logits, so it works with "
                         f"distillation_loss 'kl_div' or 'soft_ce', not {loss!r}; use teacher_top_k=None.")
    if tokenizer_alignment is not None:
        raise ValueError("teacher_top_k cannot be combined with tokenizer_alignment yet; use teacher_top_k=None.")


def distil_prediction_layer(student: Any, teacher: Optional[Any], *, data_dir: str, train_filename: str,
                            dev_filename: Optional[str], test_filename: Optional[str], use_gpu: Optional[bool],
                            devices: Any, batch_size: int, teacher_batch_size: Optional[int], n_epochs: int,
                            learning_rate: float, max_seq_len: Optional[int], warmup_proportion: float,
                            dev_split: float, evaluate_every: int, save_dir: Optional[str], use_amp: bool,
                            checkpoint_root_dir: Path, checkpoint_every: Optional[int], checkpoints_to_keep: int,
                            caching: bool, cache_path: Path, distillation_loss_weight: float,
                            distillation_loss: DistillationLoss, temperature: float, processor: Any,
                            grad_acc_steps: int, early_stopping: Any, seed: int = 42, kd_mask: str = "span",
                            resume: Union[bool, str] = False, doc_stride: Optional[int] = None,
                            max_query_length: Optional[int] = None, show_progress: bool = True,
                            tokenizer_alignment: Optional[str] = None,
                            teacher_top_k: Optional[int] = None, group_by_length: bool = False,
                            hard_loss_padding: str = "padded") -> Dict[str, Any]:
    """Run the stage (joining torch.distributed first when launched by torchrun).

    See :meth:`DistillationMixin.distil_prediction_layer_from` for the arguments.
    """
    fine_tune_only = teacher is None
    check_hard_loss_padding(hard_loss_padding, group_by_length)
    ensure_distributed()
    common.validate_hyperparameters(temperature, distillation_loss_weight, distillation_loss, batch_size, n_epochs,
                                    grad_acc_steps, kd_mask, learning_rate)
    train_path, dev_path, test_path, save_path, settings = common.stage_inputs(
        student, data_dir, train_filename, dev_filename, test_filename, save_dir, "", max_seq_len, doc_stride,
        max_query_length, teacher)
    max_seq_len, doc_stride, max_query_length = settings
    padded_length = max_seq_len if hard_loss_padding == "max_seq_len" else None
    if teacher_top_k is not None and not fine_tune_only:
        check_top_k(teacher_top_k, max_seq_len, distillation_loss, tokenizer_alignment)
    common.check_reader_vocab(student, "student")
    if not fine_tune_only and tokenizer_alignment is None:
        common.check_pair(teacher, student, max_seq_len)
    elif not fine_tune_only:
        from .cross_tokenizer import check_alignable

        check_alignable(teacher, student, tokenizer_alignment, distillation_loss)
    device = common.resolve_device(use_gpu, devices)

    train_paras, dev_paras, features = common.training_data(student, train_path, dev_path, dev_split, seed, processor,
                                                            settings, data_dir, caching, cache_path)
    logger.info("%d training features from %d paragraphs", len(features["input_ids"]), len(train_paras))

    timings: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="teacher-cache-") as scratch:
        if not fine_tune_only:
            started = time.perf_counter()
            key = common.teacher_key(teacher, student, train_path, max_seq_len, doc_stride, max_query_length,
                                     {"dev_split": dev_split, "seed": seed if dev_split else None})
            shared = caching or world()[1] > 1  # under torchrun the ranks share one cache folder
            cache_dir = Path(cache_path) / "teacher_outputs" if shared else Path(scratch)
            if tokenizer_alignment is None:
                top_k = None if teacher_top_k is None else (teacher_top_k, temperature, KDMask(kd_mask))
                features["teacher_logits"] = common.teacher_span_logits(
                    teacher, features, teacher_batch_size or batch_size, device, cache_dir, key, use_amp, top_k)
            else:
                from .cross_tokenizer import aligned_teacher_logits

                features["teacher_logits"] = aligned_teacher_logits(
                    teacher, student, features, train_paras, teacher_batch_size or batch_size, device, cache_dir,
                    {**key, "alignment": tokenizer_alignment})
            timings["teacher_seconds"] = time.perf_counter() - started
        model = student.inferencer.model.to(device)
        common.freeze_confidence_temperature(model)
        config = TrainConfig(
            n_epochs=n_epochs, batch_size=batch_size, learning_rate=learning_rate,
            warmup_proportion=warmup_proportion, grad_acc_steps=grad_acc_steps, seed=seed, use_amp=use_amp,
            device=str(device), evaluate_every=evaluate_every if dev_paras else 0,
            checkpoint_dir=str(Path(checkpoint_root_dir) / "prediction_layer"), checkpoint_every=checkpoint_every,
            checkpoints_to_keep=checkpoints_to_keep, resume=resume, show_progress=show_progress,
            **common.batching(group_by_length, () if teacher_top_k and not fine_tune_only else ("teacher_logits",),
                              cut=hard_loss_padding != "padded"))
        config.run_fields = {**config_fields(config), "stage": "prediction_layer", "loss": str(distillation_loss),
                             "temperature": temperature, "weight": distillation_loss_weight, "kd_mask": kd_mask,
                             "teacher_top_k": teacher_top_k, "hard_loss_padding": hard_loss_padding,
                             "train_file": fingerprint_file(train_path),  # its content: an edited file differs
                             "n_features": len(features["input_ids"])}
        loss_fn = PredictionLayerLoss(model, 0.0 if fine_tune_only else distillation_loss_weight,
                                      distillation_loss, temperature, kd_mask,
                                      None if fine_tune_only else teacher_top_k, padded_length)
        started = time.perf_counter()
        result = train(model, features, loss_fn, config, eval_fn=common.make_eval_fn(student, dev_paras),
                       early_stopping=early_stopping)
        timings["train_seconds"] = time.perf_counter() - started
    return finish(student, save_path, result, timings, dev_paras, test_path,
                  {"stage": "prediction_layer", "world_size": world()[1],
                   **{k: str(v) for k, v in config.run_fields.items()}})


def finish(student: Any, save_path: Path, result: Any, timings: Dict[str, float], dev_paras: list,
           test_path: Optional[Path], record: Dict[str, Any], extra: Any = None) -> Dict[str, Any]:
    """Evaluate on dev/test, save the student with its run record (and ``extra(folder)``'s files), return the
    metrics."""
    metrics: Dict[str, Any] = {"loss": result.loss, "global_step": result.global_step,
                               "stopped_early": result.stopped_early, **timings}
    if dev_paras:
        metrics.update(common.make_eval_fn(student, dev_paras)())
    if test_path is not None:
        test = common.make_eval_fn(student, common.read_paragraphs(test_path))()
        metrics.update({f"test_{k}": v for k, v in test.items()})
    common.save_reader(student, save_path, {**record, "metrics": metrics}, extra)
    metrics["save_dir"] = str(save_path)
    return metrics

