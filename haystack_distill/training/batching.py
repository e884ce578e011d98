"""Batches of a training run: each epoch's row order (optionally length-grouped), the length slices a batch is
computed in, and collating rows into tensors on the device."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .config import Batch


def _rows_of(values: Any, indices: Tensor) -> Tensor:
    if isinstance(values, np.ndarray):  # e.g. a memory-mapped teacher cache: read only these rows
        return torch.from_numpy(np.ascontiguousarray(values[indices.numpy()]))
    return values[indices]


def _collate(dataset: Dict[str, Any], indices: Tensor, device: str, length_key: Optional[str] = None,
             sequence_keys: Sequence[str] = (), bucket: int = 1) -> Batch:
    """Rows ``indices``; with ``length_key`` the ``sequence_keys`` columns are cut to the longest row, rounded up
    to a multiple of ``bucket`` (a few batch widths instead of one per length, so allocations are reused)."""
    batch = {name: _rows_of(values, indices) for name, values in dataset.items()}
    if length_key is not None:
        longest = -(-int(batch[length_key].sum(1).max()) // bucket) * bucket
        for name in sequence_keys:
            if name in batch:
                batch[name] = batch[name][:, :longest]
    return {name: values.to(device) for name, values in batch.items()}


def length_slices(indices: Tensor, lengths: Optional[Tensor], splits: int) -> List[Tuple[Tensor, float]]:
    """``indices`` sorted by length and cut into ``splits`` slices, each with its share of the rows.

    Weighting a slice's mean loss by its share gives the mean over all rows, so for a loss that ignores padding
    the accumulated gradient is the whole batch's; short slices are then computed without the long rows' padding.

    Example:
        >>> import torch
        >>> [(s.tolist(), f) for s, f in length_slices(torch.tensor([0, 1, 2, 3]), torch.tensor([9, 2, 5, 1]), 2)]
        [([3, 1], 0.5), ([2, 0], 0.5)]
    """
    if lengths is None or splits <= 1 or len(indices) < 2:
        return [(indices, 1.0)]
    ordered = indices[torch.argsort(lengths[indices], stable=True)]
    return [(part, len(part) / len(indices)) for part in ordered.tensor_split(min(splits, len(indices)))]


def epoch_order(n_rows: int, batch_size: int, seed: int, lengths: Optional[Tensor] = None,
                group: int = 50, bucket: int = 32) -> Tensor:
    """Row order of one epoch: a seeded permutation, or with ``lengths`` length-grouped batches in random order.

    Grouping sorts each run of ``group * batch_size`` shuffled rows by length bucket (``ceil(length / bucket)``;
    the shuffled order is kept inside a bucket), cuts it into batches and shuffles the full batches (a short last
    batch stays last), so rows in a batch have similar lengths and the order is still random and reproducible
    from ``seed`` (exact resume). ``bucket=1`` sorts by exact length, which also batches near-duplicates (a SQuAD
    paragraph's questions) together.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_rows, generator=generator)
    if lengths is None:
        return order
    chunk = group * batch_size
    keys = -(-lengths // bucket)
    parts = [order[i : i + chunk] for i in range(0, n_rows, chunk)]
    order = torch.cat([p[torch.argsort(keys[p], descending=True, stable=True)] for p in parts])
    batches = list(order.split(batch_size))
    tail = [batches.pop()] if len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return torch.cat(shuffled + tail)
