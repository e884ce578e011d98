"""Fingerprints that key the teacher-logit cache: a model's class and config, and a training set's input columns."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List

import numpy as np
from torch import Tensor, nn

from ..fingerprint import fingerprint_value, new_digest

#: Columns whose values reach the teacher (and so key the logits cache).
MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def config_fingerprint(model: nn.Module) -> str:
    """Hash of a model's class and config (paths and version stamps excluded)."""
    config = getattr(model, "config", None)
    cfg = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "transformers_version"}
    return fingerprint_value({"class": type(model).__name__, "config": cfg}, "sha256", length=16)


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
    digest = new_digest("sha256")
    digest.update(str(len(dataset)).encode())
    for row in _iter_rows(dataset, columns):
        for col in columns:
            if col in row:
                array = _as_array(row[col])
                digest.update(col.encode() + str(array.shape).encode())
                digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update(b"|")
    return str(digest.hexdigest())[:16]


def token_counts(dataset: Any) -> np.ndarray:
    """Attended tokens per row: ``sum(attention_mask)``, or ``len(input_ids)`` without a mask."""
    counts = []
    for row in _iter_rows(dataset, ["input_ids", "attention_mask"]):
        mask = row.get("attention_mask")
        counts.append(int(_as_array(mask).sum()) if mask is not None else len(_as_array(row["input_ids"])))
    return np.asarray(counts, dtype=np.int64)
