"""The :class:`DistillationTrainer`: ``transformers.Trainer`` with the distillation loss, a frozen teacher on the
student's device, non-finite guards on loss, gradients and saved weights, and optionally precomputed teacher
logits (computed once, or loaded from the on-disk cache)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from haystack_distill.fingerprint import fingerprint_module
from haystack_distill.losses import classification_kd_loss, logits_kd, validate_distillation_loss
from haystack_distill.safety import check_finite, check_finite_value, grad_norm
from haystack_distill.teacher_cache import cache_key, cached_outputs
from haystack_distill.tokenizers import tokenizer_fingerprint

from .arguments import DistillationTrainingArguments, check_alpha_temperature
from .checks import (
    _check_separate_models,
    check_label_compatibility,
    check_task_compatibility,
    check_tokenizers,
    classification_kind,
)
from .fingerprints import config_fingerprint, dataset_fingerprint, token_counts
from .logit_cache import CACHE_FORMAT_VERSION, TEACHER_INDEX_KEY, TeacherLogitCache, _batch_rows, _with_index

logger = logging.getLogger(__name__)

#: Hugging Face's label value for positions left out of the loss.
IGNORE_INDEX = -100


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` whose loss is ``alpha * CE + (1 - alpha) * KD(student, teacher)``.

    Args:
        model: the student (``*ForSequenceClassification`` or ``*ForTokenClassification``).
        args: :class:`DistillationTrainingArguments`.
        *trainer_args: further positional ``Trainer`` arguments (``data_collator``, ``train_dataset``, ...).
        teacher_model: the teacher, same head kind, label count and label map as the student. It is moved to the
            student's device, put in eval mode and frozen (``requires_grad_(False)``) in place.
        teacher_tokenizer: the teacher's tokenizer; if given, it must be compatible with the student's
            tokenizer (``processing_class``/``tokenizer``), else :class:`TokenizerMismatchError` is raised. Without it,
            the configs' ``vocab_size`` must match.
        distillation_loss: optional callable ``(student_logits, teacher_logits) -> scalar`` overriding
            ``args.distillation_loss`` (it receives logits divided by ``T``; the result is multiplied by ``T**2``).
        **kwargs: any other ``Trainer`` keyword argument.

    Without labels in a batch, only the KD term is used (for token classification, over attended tokens).
    Token positions labelled ``-100`` are left out of both terms. The returned loss is the batch mean; the
    Trainer divides it by ``gradient_accumulation_steps`` (``num_items_in_batch`` is not used).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, num_labels=2)
        >>> teacher, student = BertForSequenceClassification(cfg), BertForSequenceClassification(cfg)
        >>> args = DistillationTrainingArguments(output_dir=tmp.name, report_to="none", use_cpu=True)
        >>> trainer = DistillationTrainer(student, args, teacher_model=teacher)
        >>> trainer.teacher.training, any(p.requires_grad for p in trainer.teacher.parameters())
        (False, False)
        >>> tmp.cleanup()
    """

    train_dataset: Any  # the Trainer's attribute; replaced by an indexed copy when logits are precomputed

    def __init__(
        self,
        model: Optional[nn.Module] = None,
        args: Optional[DistillationTrainingArguments] = None,
        *trainer_args: Any,
        teacher_model: Optional[nn.Module] = None,
        teacher_tokenizer: Optional[PreTrainedTokenizerBase] = None,
        distillation_loss: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        **kwargs: Any,
    ) -> None:
        args = self._check_args(args)
        student, teacher = self._check_models(model, teacher_model)
        super().__init__(student, args, *trainer_args, **kwargs)
        check_tokenizers(teacher, student, teacher_tokenizer, self.processing_class)
        self.loss_fn = validate_distillation_loss(distillation_loss or args.distillation_loss)
        self.teacher: nn.Module = teacher
        self.teacher_tokenizer = teacher_tokenizer
        self._freeze_teacher(self.args.device)
        self._teacher_inputs = self._forward_arg_names(teacher)
        # Our loss is a batch mean: let the Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.teacher_cache: Optional[TeacherLogitCache] = None
        self.teacher_cache_path: Optional[Path] = None
        self.teacher_cache_hit: Optional[bool] = None
        self._last_finite_loss: Optional[float] = None
        if self.args.precompute_teacher_logits:
            self._check_precomputable(self.train_dataset)

    # -- construction checks -------------------------------------------------------------------------------
    @staticmethod
    def _check_args(args: Optional[TrainingArguments]) -> DistillationTrainingArguments:
        if args is None:
            return DistillationTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, DistillationTrainingArguments):
            raise TypeError(
                f"args must be DistillationTrainingArguments (it carries alpha, temperature, distillation_loss), "
                f"got {type(args).__name__}."
            )
        check_alpha_temperature(args.alpha, args.temperature)  # fields may have been changed after __init__
        validate_distillation_loss(args.distillation_loss)
        if args.label_smoothing_factor:
            logger.warning("label_smoothing_factor=%s is ignored by DistillationTrainer: the teacher's soft targets "
                           "replace it (lower alpha to lean on them more).", args.label_smoothing_factor)
        return args

    @staticmethod
    def _check_models(student: Optional[nn.Module], teacher: Optional[nn.Module]) -> Tuple[nn.Module, nn.Module]:
        if student is None:
            raise ValueError("DistillationTrainer needs the student as model= (model_init is not supported).")
        if teacher is None:
            raise ValueError("DistillationTrainer needs a teacher: pass teacher_model=<fine-tuned classifier>.")
        _check_separate_models(teacher, student)
        check_task_compatibility(teacher, student)
        check_label_compatibility(teacher, student)
        return student, teacher

    @staticmethod
    def _check_precomputable(dataset: Any) -> None:
        if dataset is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                "precompute_teacher_logits=True needs a map-style train_dataset (with __len__ and __getitem__); "
                f"got {type(dataset).__name__}. Set precompute_teacher_logits=False to run the teacher on the fly."
            )

    @staticmethod
    def _forward_arg_names(model: nn.Module) -> Optional[set]:
        params = inspect.signature(model.forward).parameters
        if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None  # accepts anything
        return set(params) - {"labels"}

    # -- teacher -------------------------------------------------------------------------------------------
    def _freeze_teacher(self, device: Any) -> None:
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._teacher_to(device)

    def _teacher_to(self, device: Any) -> None:
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != torch.device(device):
            self.teacher.to(device)

    def _teacher_forward(self, inputs: Dict[str, Any], device: Any) -> Tensor:
        """Teacher logits for a batch, on ``device``, without gradients."""
        self._teacher_to(device)
        if self.teacher.training:
            self.teacher.eval()
        names = self._teacher_inputs
        feed = {k: v for k, v in inputs.items() if k not in ("labels", TEACHER_INDEX_KEY)}
        if names is not None:
            feed = {k: v for k, v in feed.items() if k in names}
        with torch.no_grad():
            out = self.teacher(**feed)
        return out["logits"] if isinstance(out, dict) else out[0]

    # -- loss ----------------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: Dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Optional[int] = None,
    ) -> Union[Tensor, Tuple[Tensor, Any]]:
        """``alpha * CE + (1 - alpha) * KD``; the student's own loss head is not used."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        index = inputs.pop(TEACHER_INDEX_KEY, None)
        outputs = model(**inputs)
        student_logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        teacher_logits = self._batch_teacher_logits(inputs, index, student_logits)
        loss = self.distillation_objective(student_logits, teacher_logits, labels, inputs.get("attention_mask"))
        if model.training:
            value = float(loss.detach())
            check_finite_value(value, self.state.global_step + 1, self._last_finite_loss)
            self._last_finite_loss = value
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self) -> torch.optim.Optimizer:
        """The Trainer's optimizer (``args.optim``), made to refuse a step on a non-finite gradient.

        The gradient is checked in a step pre-hook, i.e. after accumulation and clipping; with fp16 AMP the
        Trainer's gradient scaler skips such steps itself and the hook never sees them.
        """
        optimizer = super().create_optimizer()
        if getattr(self, "_hooked_optimizer", None) is not optimizer:
            optimizer.register_step_pre_hook(self._check_gradients)
            self._hooked_optimizer = optimizer
        return optimizer

    def _check_gradients(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        check_finite_value(grad_norm(params), self.state.global_step + 1, self._last_finite_loss, "grad")

    def _save(self, output_dir: Optional[str] = None, state_dict: Any = None) -> None:
        """Refuse to save a student with NaN/inf weights, then save as the Trainer does."""
        check_finite(self.model, "the student")
        super()._save(output_dir, state_dict)

    def _batch_teacher_logits(self, inputs: Dict[str, Any], index: Optional[Tensor], student_logits: Tensor) -> Tensor:
        if index is not None and self.teacher_cache is not None:
            teacher = self.teacher_cache.lookup(
                index, inputs.get("attention_mask"), student_logits.shape, student_logits.device
            )
        else:
            teacher = self._teacher_forward(inputs, student_logits.device)
        if teacher.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher.shape)} and student logits {tuple(student_logits.shape)} differ in "
                "shape; teacher and student need the same head and label count."
            )
        return teacher

    def distillation_objective(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Optional[Tensor], attention_mask: Optional[Tensor]
    ) -> Tensor:
        """The combined loss for one batch (fp32), see the class docstring.

        Token logits are reduced to the kept positions first (label != -100, or attended tokens without
        labels), so CE and KD are both means over the same tokens, whatever the padding.
        """
        s, t = student_logits.float(), teacher_logits.float()
        if s.dim() == 3:
            keep = labels.ne(IGNORE_INDEX) if labels is not None else attention_mask
            if keep is not None:
                keep = keep.bool()
                if not keep.any():
                    return s.sum() * 0.0
                s, t = s[keep], t[keep]
                labels = labels[keep] if labels is not None else None
        if labels is None:
            return logits_kd(s, t, self.loss_fn, self.args.temperature)
        return classification_kd_loss(s, t, labels, self.args.alpha, self.args.temperature, self.loss_fn, IGNORE_INDEX)

    # -- precomputed teacher logits --------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if TEACHER_INDEX_KEY not in self._signature_columns:
            self._signature_columns.append(TEACHER_INDEX_KEY)

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's loader; with ``precompute_teacher_logits`` the teacher logits are prepared first."""
        if self.args.precompute_teacher_logits and self.teacher_cache is None:
            self.prepare_teacher_logits()
        return super().get_train_dataloader()

    def teacher_cache_fields(self, dataset: Any, token_level: bool) -> Dict[str, Any]:
        """Everything that changes the cached logits: teacher weights and config, inputs, tokenizer, layout."""
        tok = self.teacher_tokenizer or self.processing_class
        return {
            "what": "hf-classification-teacher-logits",
            "version": CACHE_FORMAT_VERSION,
            "teacher_weights": fingerprint_module(self.teacher),
            "teacher_config": config_fingerprint(self.teacher),
            "data": dataset_fingerprint(dataset),
            "tokenizer": tokenizer_fingerprint(tok) if isinstance(tok, PreTrainedTokenizerBase) else None,
            "token_level": token_level,
        }

    def prepare_teacher_logits(self) -> TeacherLogitCache:
        """Compute (or load from ``teacher_logits_cache_dir``) the teacher logits of the whole training set.

        Called automatically by :meth:`get_train_dataloader`; afterwards the training set carries an index
        column and the teacher is not run during training. Sets :attr:`teacher_cache_hit`.
        """
        dataset = self.train_dataset
        self._check_precomputable(dataset)
        token_level = self._teacher_is_token_level(dataset)
        counts = token_counts(dataset) if token_level else np.ones(len(dataset), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        with self.args.main_process_first(desc="teacher logits"):
            logits = self._stored_teacher_logits(dataset, token_level, int(offsets[-1]))
        self.teacher_cache = TeacherLogitCache(logits, offsets, token_level)
        self.train_dataset = _with_index(dataset)
        return self.teacher_cache

    def _stored_teacher_logits(self, dataset: Any, token_level: bool, n_rows: int) -> np.ndarray:
        produced = []

        def produce() -> Iterator[np.ndarray]:
            produced.append(True)
            return self._teacher_rows(dataset)

        cache_dir = self.args.teacher_logits_cache_dir
        if cache_dir is None:
            logits = np.concatenate(list(produce()))
            if len(logits) != n_rows:
                raise RuntimeError(f"teacher produced {len(logits)} logit rows, expected {n_rows}.")
        else:
            fields = self.teacher_cache_fields(dataset, token_level)
            self.teacher_cache_path = Path(cache_dir) / cache_key(fields)
            logits = cached_outputs(cache_dir, fields, n_rows, (self._num_labels(),), produce)
        self.teacher_cache_hit = not produced
        logger.info("Teacher logits for %d training examples %s", len(dataset),
                    f"loaded from {self.teacher_cache_path}" if self.teacher_cache_hit else "computed")
        return logits

    def _num_labels(self) -> int:
        config = getattr(self.teacher, "config", None) or getattr(self.model, "config", None)
        if config is None:
            raise ValueError("precompute_teacher_logits needs a teacher with config.num_labels.")
        return int(config.num_labels)

    def _teacher_is_token_level(self, dataset: Any) -> bool:
        kind = classification_kind(self.teacher) or classification_kind(self.model)
        if kind is not None:
            return kind == "token"
        first = next(iter(self._teacher_loader(torch.utils.data.Subset(dataset, [0]))))
        return self._teacher_forward(first, self.args.device).dim() == 3

    def _teacher_loader(self, dataset: Any) -> DataLoader:
        collator = self.data_collator
        if hasattr(dataset, "column_names") and hasattr(dataset, "remove_columns"):
            dataset = self._remove_unused_columns(dataset, description="teacher logits")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="teacher logits")
        return DataLoader(
            dataset,
            batch_size=self.args.per_device_eval_batch_size,
            sampler=SequentialSampler(dataset),
            collate_fn=collator,
            num_workers=self.args.dataloader_num_workers,
        )

    def _teacher_rows(self, dataset: Any) -> Iterator[np.ndarray]:
        device = self.args.device
        loader = self._teacher_loader(dataset)
        quiet = self.args.disable_tqdm or not self.is_local_process_zero()
        for batch in tqdm(loader, desc="teacher logits", disable=quiet):
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            yield _batch_rows(self._teacher_forward(batch, device), batch.get("attention_mask"))
