"""Hugging Face ``Trainer`` adapter for classification distillation, on the shared loss core.

:class:`DistillationTrainer` trains a student ``*ForSequenceClassification`` or ``*ForTokenClassification``
model with ``loss = alpha * CE(labels) + (1 - alpha) * KD(student, teacher)``, where the KD term is
:func:`haystack_distill.losses.classification_kd_loss` (KL at temperature ``T``, times ``T**2``, by default).
The teacher lives on the student's device, in eval mode, without gradients, and is never handed to the
optimizer. Teacher logits can be computed once before training and cached on disk (fp16), keyed by the
teacher's weights, the training data and the tokenizer, so a second run with the same inputs skips the
teacher entirely.

Everything that can be checked is checked when the trainer is built, before any training step: ``alpha``,
``temperature``, the distillation loss, label counts and label maps, sequence- versus token-level heads and
tokenizer compatibility (:func:`haystack_distill.tokenizers.check_tokenizer_compatibility`).

Example:
    >>> args = DistillationTrainingArguments(output_dir="out", alpha=0.5, temperature=2.0, report_to="none")
    >>> (args.alpha, args.temperature, args.distillation_loss)
    (0.5, 2.0, 'kl_div')
    >>> DistillationTrainingArguments(output_dir="out", alpha=1.5)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in [0, 1] (the weight of the hard-label cross-entropy), got 1.5.

A full run (see ``tutorials/04_classification_kd.ipynb``)::

    trainer = DistillationTrainer(
        student, args, teacher_model=teacher, train_dataset=train, processing_class=tokenizer,
        teacher_tokenizer=teacher_tokenizer,
    )
    trainer.train()
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from haystack_distill.losses import BUILTIN_LOSSES, classification_kd_loss, logits_kd, validate_distillation_loss
from haystack_distill.safety import check_finite, check_finite_value, grad_norm
from haystack_distill.teacher_cache import cache_key, cached_outputs, fingerprint_module
from haystack_distill.tokenizers import TokenizerMismatchError, check_tokenizer_compatibility, tokenizer_fingerprint

logger = logging.getLogger(__name__)

#: Column added to the training set when teacher logits are precomputed: the example's row in the cache.
TEACHER_INDEX_KEY = "distill_teacher_index"
#: Hugging Face's label value for positions left out of the loss.
IGNORE_INDEX = -100
CACHE_FORMAT_VERSION = 1
#: Columns whose values reach the teacher (and so key the logits cache).
MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_FP16_MAX = float(np.finfo(np.float16).max)
_UNSUPPORTED_PROBLEMS = ("regression", "multi_label_classification")


# --------------------------------------------------------------------------------------------------- arguments


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the distillation knobs; invalid values raise when the object is built.

    Attributes:
        alpha: weight of the hard-label cross-entropy; the KD term gets ``1 - alpha`` (in [0, 1]).
        temperature: softening temperature ``T > 0``; the KD term is multiplied by ``T**2``.
        distillation_loss: ``"kl_div"`` (default), ``"soft_ce"`` or ``"mse"`` (on raw logits). Pass a callable
            to :class:`DistillationTrainer` (``distillation_loss=``) instead; arguments must stay picklable.
        precompute_teacher_logits: run the teacher once over the training set before training and reuse
            its logits every epoch (the training set must be map-style, i.e. have ``__len__``/``__getitem__``).
        teacher_logits_cache_dir: folder for the precomputed logits (fp16 ``.npy``), one sub-folder per
            teacher/data/tokenizer fingerprint; ``None`` keeps them in memory only.
    """

    alpha: float = field(default=0.5, metadata={"help": "Weight of the hard-label cross-entropy, in [0, 1]."})
    temperature: float = field(default=2.0, metadata={"help": "KD softening temperature T > 0."})
    distillation_loss: str = field(
        default="kl_div", metadata={"help": f"KD loss: one of {', '.join(BUILTIN_LOSSES)}."}
    )
    precompute_teacher_logits: bool = field(
        default=False, metadata={"help": "Compute teacher logits once before training and reuse them."}
    )
    teacher_logits_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where precomputed teacher logits are cached (None: memory only)."}
    )

    def __post_init__(self) -> None:
        check_alpha_temperature(self.alpha, self.temperature)
        if callable(self.distillation_loss):
            raise TypeError(
                "DistillationTrainingArguments.distillation_loss must be a name "
                f"({', '.join(BUILTIN_LOSSES)}); pass a callable as DistillationTrainer(distillation_loss=...)."
            )
        validate_distillation_loss(self.distillation_loss)
        super().__post_init__()


def check_alpha_temperature(alpha: float, temperature: float) -> None:
    """Raise ``ValueError`` unless ``0 <= alpha <= 1`` and ``temperature > 0`` (NaN fails both)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the hard-label cross-entropy), got {alpha!r}.")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; typical values are 1 to 5.")


# ------------------------------------------------------------------------------------------- model checks


def classification_kind(model: nn.Module) -> Optional[str]:
    """``"sequence"``, ``"token"`` or ``None`` (unknown) from the model class name."""
    name = type(model).__name__
    if name.endswith("ForTokenClassification"):
        return "token"
    if name.endswith("ForSequenceClassification"):
        return "sequence"
    return None


def _label_names(config: Any) -> Dict[int, str]:
    return {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}


def _is_default_label_map(names: Dict[int, str]) -> bool:
    return all(name == f"LABEL_{i}" for i, name in names.items())


def _check_problem_type(role: str, config: Any) -> None:
    problem = getattr(config, "problem_type", None)
    if problem in _UNSUPPORTED_PROBLEMS or getattr(config, "num_labels", 2) < 2:
        raise ValueError(
            f"the {role} is set up for problem_type={problem!r} with num_labels={config.num_labels}; "
            "DistillationTrainer distils single-label classification (softmax over >= 2 classes)."
        )


def check_label_compatibility(teacher: nn.Module, student: nn.Module) -> None:
    """Raise ``ValueError`` if teacher and student disagree on the number of labels or on their names.

    Explicit label names that differ are an error (the message lists every differing id). If only one
    side has names and the other has the generic ``LABEL_i`` defaults, a warning is logged instead.
    """
    t_cfg, s_cfg = getattr(teacher, "config", None), getattr(student, "config", None)
    if t_cfg is None or s_cfg is None:
        return
    for role, cfg in (("teacher", t_cfg), ("student", s_cfg)):
        _check_problem_type(role, cfg)
    t_names, s_names = _label_names(t_cfg), _label_names(s_cfg)
    if t_cfg.num_labels != s_cfg.num_labels:
        raise ValueError(
            f"teacher and student have different label counts: the teacher has {t_cfg.num_labels} labels "
            f"{list(t_names.values())}, the student has {s_cfg.num_labels} labels {list(s_names.values())}. Fix: "
            f"build the student with num_labels={t_cfg.num_labels}, id2label=teacher.config.id2label and "
            "label2id=teacher.config.label2id."
        )
    diffs = [i for i in sorted(set(t_names) | set(s_names)) if t_names.get(i) != s_names.get(i)]
    if not diffs:
        return
    if _is_default_label_map(t_names) or _is_default_label_map(s_names):
        logger.warning(
            "Only one of teacher/student names its labels (teacher %s, student %s); make sure both use the same "
            "label ids.", t_names, s_names,
        )
        return
    detail = "; ".join(f"id {i} is {t_names.get(i)!r} in the teacher but {s_names.get(i)!r} in the student"
                       for i in diffs)
    raise ValueError(
        f"teacher and student label maps differ: {detail}. Fix: give the student the teacher's id2label/label2id "
        "(and train it on labels encoded the same way)."
    )


def check_task_compatibility(teacher: nn.Module, student: nn.Module) -> None:
    """Raise ``ValueError`` if one model classifies sequences and the other tokens."""
    t_kind, s_kind = classification_kind(teacher), classification_kind(student)
    if t_kind and s_kind and t_kind != s_kind:
        raise ValueError(
            f"the teacher ({type(teacher).__name__}) is a {t_kind} classifier but the student "
            f"({type(student).__name__}) is a {s_kind} classifier; both need the same kind of head."
        )


def _check_separate_models(teacher: nn.Module, student: nn.Module) -> None:
    if teacher is student:
        raise ValueError("teacher_model is the student itself; pass a separate teacher (e.g. copy.deepcopy(model)).")
    student_params = {id(p) for p in student.parameters()}
    shared = [name for name, p in teacher.named_parameters() if id(p) in student_params]
    if shared:
        raise ValueError(
            f"teacher and student share {len(shared)} parameter tensors (e.g. {shared[0]!r}); the teacher is frozen, "
            "so this would freeze the student too. Build the student from a deep copy (haystack_distill.layers."
            "keep_layers copies)."
        )


def _check_vocab_sizes(teacher: nn.Module, student: nn.Module) -> None:
    t_vocab = getattr(getattr(teacher, "config", None), "vocab_size", None)
    s_vocab = getattr(getattr(student, "config", None), "vocab_size", None)
    if t_vocab is not None and s_vocab is not None and t_vocab != s_vocab:
        raise TokenizerMismatchError(
            f"teacher vocab_size {t_vocab} differs from student vocab_size {s_vocab}: the teacher would receive "
            "the student's token ids, which it cannot read. Use a teacher and student that share a tokenizer; if the "
            "embeddings were only resized, pass teacher_tokenizer= so the tokenizers themselves are compared."
        )


def check_tokenizers(
    teacher: nn.Module, student: nn.Module, teacher_tokenizer: Any, student_tokenizer: Any
) -> None:
    """Compare the tokenizers when both are known, else fall back to the configs' ``vocab_size``."""
    if teacher_tokenizer is None:
        _check_vocab_sizes(teacher, student)
        return
    if not isinstance(student_tokenizer, PreTrainedTokenizerBase):
        raise ValueError(
            "teacher_tokenizer was given but the trainer has no student tokenizer to compare it with; pass the "
            "student's tokenizer as processing_class= (or tokenizer=)."
        )
    check_tokenizer_compatibility(teacher_tokenizer, student_tokenizer)


# --------------------------------------------------------------------------------------------- fingerprints


def config_fingerprint(model: nn.Module) -> str:
    """Hash of a model's class and config (paths and version stamps excluded)."""
    config = getattr(model, "config", None)
    cfg = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "transformers_version"}
    payload = json.dumps({"class": type(model).__name__, "config": cfg}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _iter_rows(dataset: Any, columns: List[str]) -> Iterator[Dict[str, Any]]:
    if hasattr(dataset, "select_columns"):  # datasets.Dataset: fast column access
        yield from dataset.select_columns([c for c in columns if c in dataset.column_names])
        return
    for i in range(len(dataset)):
        row = dataset[i]
        yield {c: row[c] for c in columns if c in row}


def _as_array(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def dataset_fingerprint(dataset: Any, columns: Iterable[str] = MODEL_INPUT_COLUMNS) -> str:
    """Hash of the given input columns of every row, in order (labels and text columns do not matter).

    Example:
        >>> rows = [{"input_ids": [1, 2], "label": 0}, {"input_ids": [3], "label": 1}]
        >>> dataset_fingerprint(rows) == dataset_fingerprint(rows[::-1])
        False
    """
    columns = sorted(columns)
    digest = hashlib.sha256(str(len(dataset)).encode())
    for row in _iter_rows(dataset, columns):
        for col in columns:
            if col in row:
                array = _as_array(row[col])
                digest.update(col.encode() + str(array.shape).encode())
                digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def token_counts(dataset: Any) -> np.ndarray:
    """Attended tokens per row: ``sum(attention_mask)``, or ``len(input_ids)`` without a mask."""
    counts = []
    for row in _iter_rows(dataset, ["input_ids", "attention_mask"]):
        mask = row.get("attention_mask")
        counts.append(int(_as_array(mask).sum()) if mask is not None else len(_as_array(row["input_ids"])))
    return np.asarray(counts, dtype=np.int64)


# ------------------------------------------------------------------------------------------ teacher cache


class TeacherLogitCache:
    """Teacher logits for every training example: ``logits[offsets[i]:offsets[i + 1]]`` (fp16) is example ``i``.

    Sequence classification stores one row per example; token classification one row per attended
    token (``attention_mask == 1``), in order, so any right/left padding at training time lines up.
    """

    def __init__(self, logits: np.ndarray, offsets: np.ndarray, token_level: bool) -> None:
        self.logits, self.offsets, self.token_level = logits, offsets, token_level

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lookup(self, indices: Tensor, attention_mask: Optional[Tensor], shape: torch.Size, device: Any) -> Tensor:
        """Teacher logits (fp32) laid out like a student batch of logits with ``shape``."""
        idx = indices.detach().cpu().long().tolist()
        if not self.token_level:
            return torch.from_numpy(np.asarray(self.logits[idx], dtype=np.float32)).to(device)
        valid = attention_mask.bool().cpu() if attention_mask is not None else torch.ones(shape[:2], dtype=torch.bool)
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        found = valid.sum(dim=1).tolist()
        if lengths != found:
            bad = next(j for j, (a, b) in enumerate(zip(lengths, found)) if a != b)
            raise RuntimeError(
                f"cached teacher logits for training example {idx[bad]} cover {lengths[bad]} tokens but the batch has "
                f"{found[bad]}: the training set, tokenizer or collator changed after caching; delete the cache or "
                "pass the same data."
            )
        rows = np.concatenate([self.logits[self.offsets[i]:self.offsets[i + 1]] for i in idx]).astype(np.float32)
        out = torch.zeros(shape, dtype=torch.float32)
        out[valid] = torch.from_numpy(rows)
        return out.to(device)


def _batch_rows(logits: Tensor, attention_mask: Optional[Tensor]) -> np.ndarray:
    """fp16 rows of a teacher batch: one per sequence, or one per attended token (in order)."""
    logits = logits.detach().float().clamp(-_FP16_MAX, _FP16_MAX).cpu()
    if logits.dim() == 3:
        valid = attention_mask.bool().cpu() if attention_mask is not None else torch.ones(logits.shape[:2]).bool()
        logits = logits[valid]
    return logits.numpy().astype(np.float16)


class _IndexedDataset(Dataset):
    """Map-style dataset that adds each row's position under :data:`TEACHER_INDEX_KEY`."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {**self.base[i], TEACHER_INDEX_KEY: i}


def _with_index(dataset: Any) -> Any:
    if hasattr(dataset, "add_column") and hasattr(dataset, "column_names"):  # datasets.Dataset
        if TEACHER_INDEX_KEY in dataset.column_names:
            dataset = dataset.remove_columns(TEACHER_INDEX_KEY)
        return dataset.add_column(TEACHER_INDEX_KEY, list(range(len(dataset))))
    return _IndexedDataset(dataset)


# ------------------------------------------------------------------------------------------------ trainer


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
