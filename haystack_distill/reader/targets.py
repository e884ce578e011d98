"""Teacher targets of the prediction stage: what identifies them (the cache key) and the cached teacher pass."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..teacher_cache import cached_outputs, fingerprint_file, fingerprint_module
from ..tokenizers import tokenizer_fingerprint
from ..training import barrier, is_main_process, world
from .data import SequenceSettings, kd_valid_mask

logger = logging.getLogger(__name__)

UNUSED_WEIGHTS = (".pooler.",)  # never used by a QA head; random on each load when the folder has none


@dataclass(frozen=True)
class TeacherTargetSpec:
    """What the teacher pass stores per feature: dense ``[S, 2]`` start/end logits, or with ``top_k`` the packed
    ``[2, 2k + 1]`` rows of :func:`haystack_distill.sparse_logits.encode_top_k` (the ``top_k`` most likely
    positions among the ``kd_mask`` ones, the rest's total probability at ``temperature``)."""

    top_k: Optional[int] = None
    temperature: float = 1.0
    kd_mask: str = "span"

    def row_shape(self, seq_len: int) -> Tuple[int, ...]:
        """Shape of one feature's stored row."""
        from ..sparse_logits import packed_width

        return (seq_len, 2) if self.top_k is None else (2, packed_width(self.top_k))

    def key_fields(self) -> Dict[str, Any]:
        """Cache-key fields this spec adds (none for dense logits)."""
        if self.top_k is None:
            return {}
        return {"top_k": self.top_k, "top_k_temperature": self.temperature, "top_k_mask": self.kd_mask}

    def encode(self, logits: Tensor, masks: Dict[str, Tensor]) -> Tensor:
        """``[B, S, 2]`` logits as stored (``masks``: the rows' ``span_mask`` and ``padding_mask``)."""
        if self.top_k is None:
            return logits
        from ..sparse_logits import encode_top_k

        return encode_top_k(logits, kd_valid_mask(masks, self.kd_mask), self.top_k, self.temperature)


def teacher_fingerprint(teacher: Any) -> str:
    """The weights that produce the teacher's logits and hidden states (not the pooler, which QA never uses and
    Haystack re-initialises on each load of a plain transformers folder)."""
    return fingerprint_module(teacher.inferencer.model, exclude=UNUSED_WEIGHTS)


def teacher_key(teacher: Any, student: Any, train_path: Path, settings: SequenceSettings,
                extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything that changes the teacher's outputs for these features: its weights, the tokenizers, the
    training file's content and the sequence settings."""
    return {
        "teacher_weights": teacher_fingerprint(teacher),
        "teacher_tokenizer": tokenizer_fingerprint(teacher.inferencer.processor.tokenizer),
        "student_tokenizer": tokenizer_fingerprint(student.inferencer.processor.tokenizer),
        "train_file": fingerprint_file(train_path),
        "max_seq_len": settings.max_seq_len, "doc_stride": settings.doc_stride,
        "max_query_length": settings.max_query_length,
        **(extra or {}),
    }


def cached_outputs_all_ranks(cache_dir: Path, key: Dict[str, Any], n_rows: int, row_shape: Tuple[int, ...],
                             produce: Callable) -> np.ndarray:
    """:func:`cached_outputs`; under torchrun rank 0 computes into the shared folder first, the others then read it."""
    if world()[1] > 1:
        if is_main_process():
            cached_outputs(cache_dir, key, n_rows, row_shape, produce)
        barrier()
    return cached_outputs(cache_dir, key, n_rows, row_shape, produce)


def cached_targets(cache_dir: Path, key: Dict[str, Any], n_rows: int, row_shape: Tuple[int, ...],
                   produce: Callable[[], Iterator[np.ndarray]], what: str = "teacher logits") -> np.ndarray:
    """:func:`cached_outputs_all_ranks`, timed and logged: the fp16 memory-mapped targets of every feature."""
    started = time.perf_counter()
    out = cached_outputs_all_ranks(cache_dir, key, n_rows, row_shape, produce)
    logger.info("%s ready in %.1f s (%.1f MiB fp16 on disk)", what, time.perf_counter() - started,
                out.nbytes / 2**20)
    return out


def teacher_span_logits(teacher: Any, features: Dict[str, Tensor], batch_size: int, device: torch.device,
                        cache_dir: Path, key: Dict[str, Any], use_amp: bool = False,
                        spec: TeacherTargetSpec = TeacherTargetSpec()) -> np.ndarray:
    """Teacher start/end targets for the training features, stored as ``spec`` says: fp16, on disk, mmapped."""
    from tqdm.auto import tqdm

    from ..sparse_logits import EMPTY

    model = teacher.inferencer.model
    n_rows, seq_len = features["input_ids"].shape
    row_shape = spec.row_shape(seq_len)
    amp = use_amp and device.type == "cuda"

    def forward(rows: Tensor) -> Tensor:
        """Logits of ``rows`` computed on their longest real length; positions past it get EMPTY (padding)."""
        longest = int(features["padding_mask"][rows].sum(1).max())
        inputs = {n: features[n][rows, :longest].to(device) for n in ("input_ids", "segment_ids", "padding_mask")}
        with torch.inference_mode(), torch.autocast("cuda", enabled=amp):
            logits = model.forward(**inputs)[0].float().cpu()
        full = torch.full((len(rows), seq_len, 2), EMPTY)
        full[:, :longest] = logits
        return spec.encode(full, {n: features[n][rows] for n in ("span_mask", "padding_mask")})

    def produce() -> Iterator[np.ndarray]:
        """Row-order blocks; inside a block, batches of similar length so little padding is computed."""
        model.to(device).eval()
        lengths = features["padding_mask"].sum(1)
        block = batch_size * 32
        bar = tqdm(total=-(-n_rows // batch_size), desc="teacher pass")
        for first in range(0, n_rows, block):
            rows = torch.arange(first, min(first + block, n_rows))
            rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
            out = torch.empty((len(rows), *row_shape))
            for b in range(0, len(rows), batch_size):
                out[rows[b : b + batch_size] - first] = forward(rows[b : b + batch_size])
                bar.update(1)
            yield out.numpy()
        bar.close()

    return cached_targets(cache_dir, {**key, **spec.key_fields()}, n_rows, row_shape, produce)
