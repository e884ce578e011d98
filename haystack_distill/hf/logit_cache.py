"""Precomputed teacher logits: the fp16 rows of every training example, looked up by the index column added to
the training set."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

#: Column added to the training set when teacher logits are precomputed: the example's row in the cache.
TEACHER_INDEX_KEY = "distill_teacher_index"
CACHE_FORMAT_VERSION = 1
_FP16_MAX = float(np.finfo(np.float16).max)


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
