"""Settings of the two reader stages, one dataclass each, checked by one ``validate()`` before any work.

:class:`PredictionLayerConfig` and :class:`IntermediateLayerConfig` share :class:`ReaderStageConfig` (the
farm-haystack 1.26.4 arguments both methods take, plus our common extras); like
:class:`haystack_distill.general.GeneralDistillationConfig`, ``validate()`` raises ``ValueError`` naming the bad
field and its fix, and returns the config.

Example:
    >>> PredictionLayerConfig(data_dir="data", train_filename="train.json", temperature=2.0).validate().temperature
    2.0
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Type, TypeVar, Union

from ..defaults import ATTENTION_WEIGHT
from ..layers import LayerMapping
from ..losses import LOSSES, DistillationLoss, validate_distillation_loss

UnlabeledFiles = Union[str, Sequence[str], None]  # one SQuAD file of unlabelled questions, or several

KDMaskName = Literal["span", "padding", "none"]
HardLossPadding = Literal["padded", "slices", "batch"]
AttentionLossName = Literal["scores", "kl", "none"]
KD_MASKS = ("span", "padding", "none")
HARD_LOSS_PADDING: Tuple[HardLossPadding, ...] = ("padded", "slices", "batch")
#: Old names still accepted (with a FutureWarning), mapped to the current ones.
HARD_LOSS_PADDING_ALIASES: Dict[str, HardLossPadding] = {"max_seq_len": "slices"}
ATTENTION_LOSSES = (*LOSSES["attention"], "none")
ALIGNMENTS = ("offsets",)

C = TypeVar("C", bound="ReaderStageConfig")


@dataclass
class ReaderStageConfig:
    """What both reader stages take; see :meth:`DistillationMixin.distil_prediction_layer_from` for each field."""

    data_dir: str
    train_filename: str
    dev_filename: Optional[str] = None
    test_filename: Optional[str] = None
    use_gpu: Optional[bool] = None
    devices: Optional[List[Any]] = None
    batch_size: int = 10
    teacher_batch_size: Optional[int] = None
    n_epochs: int = 2
    learning_rate: float = 3e-5
    max_seq_len: Optional[int] = None
    warmup_proportion: float = 0.2
    dev_split: float = 0
    evaluate_every: int = 300
    save_dir: Optional[str] = None
    num_processes: Optional[int] = None  # accepted for compatibility; preprocessing runs in-process
    use_amp: bool = False
    checkpoint_root_dir: Path = Path("model_checkpoints")
    checkpoint_every: Optional[int] = None
    checkpoints_to_keep: int = 3
    caching: bool = False
    cache_path: Path = Path("cache/data_silo")
    distillation_loss_weight: float = 0.5
    distillation_loss: DistillationLoss = "kl_div"
    temperature: float = 1.0
    processor: Optional[Any] = None
    grad_acc_steps: int = 1
    early_stopping: Optional[Any] = None
    seed: int = 42
    kd_mask: KDMaskName = "span"
    resume: Union[bool, str] = False
    doc_stride: Optional[int] = None
    max_query_length: Optional[int] = None
    show_progress: bool = True
    group_by_length: bool = False
    unlabeled_filename: UnlabeledFiles = None

    @classmethod
    def from_arguments(cls: Type[C], arguments: Dict[str, Any]) -> C:
        """The config from a method's ``locals()``: the fields it names (``self``, the teacher ... are skipped)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in arguments.items() if k in names})

    def validate(self: C) -> C:
        """Raise ``ValueError`` naming the first bad field and its fix, before any data or model work."""
        lr = self.learning_rate
        if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
            raise ValueError(f"learning_rate must be a positive number, got {lr!r} (readers usually train with "
                             "1e-5 to 1e-4).")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}; Haystack's guide suggests 1 to 5.")
        if not 0.0 <= self.distillation_loss_weight <= 1.0:
            raise ValueError(f"distillation_loss_weight must be in [0, 1], got {self.distillation_loss_weight!r}.")
        validate_distillation_loss(self.distillation_loss)
        for name in ("batch_size", "n_epochs", "grad_acc_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.kd_mask not in KD_MASKS:
            raise ValueError(f"kd_mask={self.kd_mask!r}: use one of {KD_MASKS} ('span' = context tokens + "
                             "no-answer).")
        if not 0 <= self.dev_split < 1:
            raise ValueError(f"dev_split must be in [0, 1), got {self.dev_split!r}.")
        return self


@dataclass
class PredictionLayerConfig(ReaderStageConfig):
    """Settings of :func:`haystack_distill.reader.prediction.distil_prediction_layer`."""

    tokenizer_alignment: Optional[Literal["offsets"]] = None
    teacher_top_k: Optional[int] = None
    hard_loss_padding: HardLossPadding = "padded"
    pseudo_labels: bool = False
    pseudo_label_threshold: float = 0.5

    def validate(self) -> PredictionLayerConfig:
        """Also: ``hard_loss_padding`` (an old name becomes the new one, with a warning), its combination with
        ``group_by_length``, ``tokenizer_alignment`` and the loss a top-k cache needs."""
        self.hard_loss_padding = hard_loss_padding_name(self.hard_loss_padding)
        if self.hard_loss_padding == "padded" and self.group_by_length:
            raise ValueError("group_by_length=True needs batches computed in slices; with it, pass "
                             "hard_loss_padding='slices' (or 'batch').")
        super().validate()
        if self.tokenizer_alignment not in (None, *ALIGNMENTS):
            raise ValueError(f"tokenizer_alignment={self.tokenizer_alignment!r} is not supported; use one of "
                             f"{ALIGNMENTS} (or None for teacher and student sharing one tokenizer).")
        if not 0 < self.pseudo_label_threshold <= 1:
            raise ValueError(f"pseudo_label_threshold must be in (0, 1], got {self.pseudo_label_threshold!r}: the "
                             "teacher's probability of its best span above which it becomes a label (e.g. 0.5).")
        if self.pseudo_labels and not self.unlabeled_filename:
            raise ValueError("pseudo_labels=True labels the unlabelled questions; pass unlabeled_filename too.")
        return self


def hard_loss_padding_name(value: str) -> HardLossPadding:
    """The current name of a ``hard_loss_padding`` value: ``"max_seq_len"`` still works as ``"slices"`` (warned).

    Example:
        >>> hard_loss_padding_name("batch")
        'batch'
    """
    if value in HARD_LOSS_PADDING_ALIASES:
        new = HARD_LOSS_PADDING_ALIASES[value]
        warnings.warn(f"hard_loss_padding={value!r} is deprecated (it never padded to max_seq_len: batches are "
                      f"computed in length-sorted slices); pass {new!r}, which does the same.", FutureWarning,
                      stacklevel=4)
        return new
    if value not in HARD_LOSS_PADDING:
        raise ValueError(f"hard_loss_padding={value!r}: use 'padded' (batches computed at max_seq_len, Haystack's "
                         "exact loss), 'slices' (length-sorted slices, the padding's share of the loss estimated; "
                         "formerly 'max_seq_len') or 'batch' (slices, the positions each slice holds).")
    return value


@dataclass
class IntermediateLayerConfig(ReaderStageConfig):
    """Settings of :func:`haystack_distill.reader.intermediate.distil_intermediate_layers`."""

    n_epochs: int = 5
    learning_rate: float = 5e-5
    distillation_loss: DistillationLoss = "mse"
    layer_mapping: LayerMapping = "uniform"
    embedding_weight: float = 1.0
    hidden_weight: float = 1.0
    attention_weight: float = ATTENTION_WEIGHT  # not TinyBERT's 1: see the constant
    attention_loss: AttentionLossName = "scores"

    def validate(self) -> IntermediateLayerConfig:
        """Also: ``attention_loss`` and the three term weights."""
        super().validate()
        if self.attention_loss not in ATTENTION_LOSSES:
            raise ValueError(f"attention_loss={self.attention_loss!r}: use one of {ATTENTION_LOSSES}.")
        for name in ("embedding_weight", "hidden_weight", "attention_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}; 0 switches the term "
                                 "off.")
        return self
