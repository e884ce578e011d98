"""Speed and size of sentence-embedding models, measured side by side (shared machines are noisy).

Example:
    >>> import torch
    >>> round(model_size_mb(torch.nn.Linear(1000, 250, bias=False)), 1)
    1.0
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import TYPE_CHECKING, Dict, List, Mapping, Sequence

from torch import nn

from haystack_distill.evaluation.size import model_size

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


def model_size_mb(model: nn.Module) -> float:
    """Size in MB (10^6 bytes) of the serialized ``state_dict`` (int8 weights count one byte each)."""
    return model_size(model).nbytes / 1e6


def sentences_per_second(
    models: Mapping[str, SentenceTransformer],
    sentences: Sequence[str],
    repeats: int = 5,
    batch_size: int = 32,
) -> Dict[str, List[float]]:
    """Encode ``sentences`` with every model, ``repeats`` rounds interleaved; returns sentences/s per round.

    One unmeasured warm-up batch per model comes first. Take the median of each list and compare models by
    ratio, since all were timed under the same machine load.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    sentences = list(sentences)
    for model in models.values():
        model.encode(sentences[:batch_size], batch_size=batch_size)
    rates: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.encode(sentences, batch_size=batch_size, show_progress_bar=False)
            rates[name].append(len(sentences) / (time.perf_counter() - start))
    for name, values in rates.items():
        logger.info("%s: median %.1f sentences/s over %d rounds", name, statistics.median(values), repeats)
    return rates
