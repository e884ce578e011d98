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

A full run (see ``tutorials/04_classification_kd.ipynb``)::

    trainer = DistillationTrainer(
        student, args, teacher_model=teacher, train_dataset=train, processing_class=tokenizer,
        teacher_tokenizer=teacher_tokenizer,
    )
    trainer.train()

Modules: :mod:`.arguments` (:class:`DistillationTrainingArguments`), :mod:`.checks` (teacher/student checks),
:mod:`.fingerprints` (what keys the logit cache), :mod:`.logit_cache` (precomputed teacher logits),
:mod:`.trainer` (:class:`DistillationTrainer`).
"""

from .arguments import DistillationTrainingArguments, check_alpha_temperature
from .checks import (
    check_label_compatibility,
    check_task_compatibility,
    check_tokenizers,
    classification_kind,
)
from .fingerprints import MODEL_INPUT_COLUMNS, config_fingerprint, dataset_fingerprint, token_counts
from .logit_cache import CACHE_FORMAT_VERSION, TEACHER_INDEX_KEY, TeacherLogitCache
from .trainer import IGNORE_INDEX, DistillationTrainer

__all__ = [
    "CACHE_FORMAT_VERSION", "DistillationTrainer", "DistillationTrainingArguments", "IGNORE_INDEX",
    "MODEL_INPUT_COLUMNS", "TEACHER_INDEX_KEY", "TeacherLogitCache", "check_alpha_temperature",
    "check_label_compatibility", "check_task_compatibility", "check_tokenizers", "classification_kind",
    "config_fingerprint", "dataset_fingerprint", "token_counts",
]
