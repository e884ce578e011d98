"""Layer truncation: a student SentenceTransformer that keeps some of the teacher's transformer layers.

Example:
    >>> from haystack_distill.embeddings.truncate import kept_layer_indices
    >>> kept_layer_indices(6, 3)
    [0, 2, 5]
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, List, Sequence, Union

from haystack_distill.layers import count_layers, keep_layers, spread_layer_indices

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Keep = Union[int, Sequence[int]]


def _transformer_module(model: SentenceTransformer):
    from sentence_transformers import models

    first = model._first_module()
    if not isinstance(first, models.Transformer):
        raise ValueError(
            f"the model's first module is {type(first).__name__}, not a sentence_transformers.models.Transformer; "
            "layer truncation needs a transformer encoder (BERT/RoBERTa/MiniLM/DistilBERT-style)."
        )
    return first


def kept_layer_indices(n_layers: int, keep: Keep) -> List[int]:
    """Resolve ``keep`` (a count spread evenly, first and last layer included, or explicit indices) and check it."""
    if isinstance(keep, bool) or not isinstance(keep, (int, list, tuple)):
        raise TypeError(f"keep must be an int or a list of layer indices, got {type(keep).__name__} {keep!r}.")
    if isinstance(keep, int):
        return spread_layer_indices(n_layers, keep)
    indices = [int(i) for i in keep]
    missing = [i for i in indices if not 0 <= i < n_layers]
    if not indices or missing:
        raise ValueError(
            f"keep={list(keep)} names layers {missing or '(none)'} the model lacks; it has {n_layers} layers, "
            f"indices 0..{n_layers - 1}."
        )
    if indices != sorted(set(indices)):
        raise ValueError(f"keep={list(keep)} must list distinct layer indices in increasing order, "
                         f"e.g. {sorted(set(indices))}.")
    return indices


def truncate_layers(model: SentenceTransformer, keep: Keep) -> SentenceTransformer:
    """A copy of ``model`` keeping only the given layers of its transformer; the input is left untouched.

    Args:
        model: a SentenceTransformer whose first module is a ``models.Transformer``.
        keep: teacher layer indices to keep (0-based, increasing) or a count spread evenly
            (first and last layer included).

    The tokenizer, pooling and any further modules are copied unchanged and ``config.num_hidden_layers``
    is updated, so the result saves and loads as a normal SentenceTransformer.

    Example:
        >>> student = truncate_layers(SentenceTransformer(path), [0, 2, 5])  # doctest: +SKIP
    """
    n_layers = count_layers(_transformer_module(model).auto_model)
    indices = kept_layer_indices(n_layers, keep)
    student = copy.deepcopy(model)
    first = _transformer_module(student)
    first.auto_model = keep_layers(first.auto_model, indices)
    logger.info("student keeps teacher layers %s of %d", indices, n_layers)
    return student
