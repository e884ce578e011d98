"""Layer-mapping strategies and student construction by keeping teacher layers. No Haystack import.

Indices are 0-based transformer layers (the embedding output is not a layer here).

Example:
    >>> uniform_layer_indices(12, 4)
    [2, 5, 8, 11]
    >>> spread_layer_indices(6, 3)
    [0, 2, 5]
    >>> resolve_layer_mapping("last", n_student=2, n_teacher=6)
    {0: 4, 1: 5}
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List, Union

from torch import nn

LayerMapping = Union[str, Dict[int, int]]


def uniform_layer_indices(n_teacher: int, n_student: int) -> List[int]:
    """TinyBERT's uniform map: student layer ``i`` learns from the last teacher layer of block ``i``.

    Works when ``n_teacher`` is not a multiple of ``n_student`` (blocks are rounded).
    """
    if n_student > n_teacher:
        raise ValueError(
            f"layer_mapping='uniform' needs a student no deeper than the teacher, got {n_student} student layers "
            f"and {n_teacher} teacher layers; pass an explicit {{student_layer: teacher_layer}} dict (teacher layers "
            "may repeat) or use a deeper teacher."
        )
    return [math.floor((i + 1) * n_teacher / n_student + 0.5) - 1 for i in range(n_student)]  # round half up


def spread_layer_indices(n_layers: int, keep: int) -> List[int]:
    """``keep`` layer indices spread evenly over ``n_layers``, first and last included."""
    if not 1 <= keep <= n_layers:
        raise ValueError(f"cannot keep {keep} of {n_layers} layers; choose 1..{n_layers}.")
    if keep == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (keep - 1)) for i in range(keep)})


def _check_explicit(mapping: Dict[int, int], n_student: int, n_teacher: int) -> Dict[int, int]:
    bad_s = [s for s in mapping if not 0 <= int(s) < n_student]
    bad_t = [t for t in mapping.values() if not 0 <= int(t) < n_teacher]
    if not bad_s and not bad_t:
        return {int(s): int(t) for s, t in sorted(mapping.items())}
    reversed_ok = all(0 <= int(t) < n_student for t in mapping.values()) and all(
        0 <= int(s) < n_teacher for s in mapping
    )
    hint = " It looks reversed: the format is {student_layer: teacher_layer}." if reversed_ok else ""
    raise ValueError(
        f"layer_mapping {mapping} names layers the models lack: student layers {bad_s} (student has "
        f"{n_student}: 0..{n_student - 1}), teacher layers {bad_t} (teacher has {n_teacher}: 0..{n_teacher - 1})."
        + hint
    )


def resolve_layer_mapping(mapping: LayerMapping, n_student: int, n_teacher: int) -> Dict[int, int]:
    """Turn ``"uniform"``, ``"last"`` or an explicit ``{student_layer: teacher_layer}`` dict into a checked dict."""
    if isinstance(mapping, dict):
        return _check_explicit(mapping, n_student, n_teacher)
    if mapping == "uniform":
        return dict(enumerate(uniform_layer_indices(n_teacher, n_student)))
    if mapping == "last":
        if n_student > n_teacher:
            raise ValueError(f"layer_mapping='last' needs n_student <= n_teacher, got {n_student} > {n_teacher}.")
        return {i: n_teacher - n_student + i for i in range(n_student)}
    raise ValueError(f"layer_mapping={mapping!r}: use 'uniform', 'last' or a {{student_layer: teacher_layer}} dict.")


def _layer_list(model: nn.Module) -> tuple:
    """Return (owner, attribute, ModuleList) of the encoder layers of a transformers model."""
    base = getattr(model, "base_model", model)
    for owner_name, attr in (("encoder", "layer"), ("transformer", "layer"), ("encoder", "layers")):
        owner = getattr(base, owner_name, None)
        layers = getattr(owner, attr, None) if owner is not None else None
        if isinstance(layers, nn.ModuleList):
            return owner, attr, layers
    raise ValueError(
        f"cannot find the encoder layers of {type(model).__name__}; supported: BERT, RoBERTa, MiniLM, ELECTRA, "
        "DistilBERT-style models (encoder.layer or transformer.layer)."
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer layers of a transformers model."""
    return _layer_list(model)[2]


def count_layers(model: nn.Module) -> int:
    """Number of transformer layers of a transformers model."""
    return len(_layer_list(model)[2])


def keep_layers(model: nn.Module, keep: Union[int, List[int]]) -> nn.Module:
    """Deep copy of ``model`` keeping only the given encoder layers (a list of indices, or a count spread evenly).

    Embeddings, pooler and heads are kept; ``config.num_hidden_layers`` (``n_layers`` for DistilBERT) is updated,
    so ``save_pretrained``/``from_pretrained`` round-trip.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> teacher = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=4,
        ...                                num_attention_heads=2, intermediate_size=16))
        >>> keep_layers(teacher, [0, 3]).config.num_hidden_layers
        2
    """
    n_layers = count_layers(model)
    indices = spread_layer_indices(n_layers, keep) if isinstance(keep, int) else [int(i) for i in keep]
    missing = [i for i in indices if not 0 <= i < n_layers]
    if missing or not indices:
        raise ValueError(
            f"keep={keep!r} names layers {missing or indices} the model lacks; it has {n_layers} (0..{n_layers - 1})."
        )
    student = copy.deepcopy(model)
    owner, attr, layers = _layer_list(student)
    setattr(owner, attr, nn.ModuleList([layers[i] for i in indices]))
    config = getattr(student, "config", None)
    if config is not None:
        for name in ("num_hidden_layers", "n_layers"):
            if hasattr(config, name):
                setattr(config, name, len(indices))
    for new_idx, layer in enumerate(getattr(owner, attr)):
        attention = getattr(layer, "attention", None)
        self_attn = getattr(attention, "self", None)
        if self_attn is not None and hasattr(self_attn, "layer_idx"):
            self_attn.layer_idx = new_idx
    return student
