"""The trainer's arguments: ``TrainingArguments`` plus ``alpha``, ``temperature``, the distillation loss and the
teacher-logit cache, checked when they are built.

Example:
    >>> args = DistillationTrainingArguments(output_dir="out", alpha=0.5, temperature=2.0, report_to="none")
    >>> (args.alpha, args.temperature, args.distillation_loss)
    (0.5, 2.0, 'kl_div')
    >>> DistillationTrainingArguments(output_dir="out", alpha=1.5)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in [0, 1] (the weight of the hard-label cross-entropy), got 1.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from haystack_distill.losses import BUILTIN_LOSSES, validate_distillation_loss


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
