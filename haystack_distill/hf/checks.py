"""Checks of a teacher/student pair before any training step: head kind (sequence or token), label counts and
label maps, separate weights, and tokenizer compatibility (or the configs' ``vocab_size``)."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from torch import nn
from transformers import PreTrainedTokenizerBase

from haystack_distill.tokenizers import TokenizerMismatchError, check_tokenizer_compatibility

logger = logging.getLogger(__name__)

_UNSUPPORTED_PROBLEMS = ("regression", "multi_label_classification")


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
