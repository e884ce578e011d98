"""Teacher targets of the prediction stage: what identifies them (the cache key) and the cached teacher pass."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import is_main_process, world
from ..fingerprint import fingerprint_file, fingerprint_module
from ..teacher_cache import (
    cached_outputs,
    load_cached,
    merge_shards,
    shard_path,
    shard_rows,
    write_shard,
)
from ..tokenizers import tokenizer_fingerprint
from .data import SequenceSettings, kd_valid_mask

logger = logging.getLogger(__name__)

UNUSED_WEIGHTS = (".pooler.",)  # never used by a QA head; random on each load when the folder has none


@dataclass(frozen=True)
class TeacherTargetSpec:
    """What the teacher pass stores per feature: dense ``[S, 2]`` start/end logits, or with ``top_k`` the packed
    ``[2, 2k + 1]`` rows of :func:`haystack_distill.reader.sparse_logits.encode_top_k` (the ``top_k`` most likely
    positions among the ``kd_mask`` ones, the rest's total probability at ``temperature``)."""

    top_k: Optional[int] = None
    temperature: float = 1.0
    kd_mask: str = "span"

    def row_shape(self, seq_len: int) -> Tuple[int, ...]:
        """Shape of one feature's stored row."""
        from .sparse_logits import packed_width

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
        from .sparse_logits import encode_top_k

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


RowsProducer = Callable[[int, int], Iterator[np.ndarray]]  # (first, last) -> rows first..last-1 in order


def _on_every_rank(step: Callable[[], bool], what: str) -> bool:
    """Run ``step`` on every rank (a collective: all ranks must call it); True if it returned True on any rank.
    If it raises on one rank, every rank raises, rather than the others waiting for it until the timeout."""
    error: Optional[Exception] = None
    try:
        flag = int(bool(step()))
    except Exception as err:  # re-raised below, once the other ranks know
        flag, error = 2, err
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if nccl else torch.device("cpu")
    agreed = torch.tensor([flag], device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    if error is not None:
        raise error
    if int(agreed.item()) == 2:
        raise RuntimeError(f"another rank failed while {what}; see its log")
    return int(agreed.item()) == 1


def cached_outputs_all_ranks(cache_dir: Path, key: Dict[str, Any], n_rows: int, row_shape: Tuple[int, ...],
                             produce: RowsProducer, unit: int = 1,
                             stats: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """:func:`cached_outputs` of ``produce(0, n_rows)``. Under torchrun, on a miss, each rank computes its contiguous
    share (:func:`..teacher_cache.shard_rows`, whole ``unit``-row blocks, so each batch is the one a single process
    computes) into a shard file in the shared folder, rank 0 merges the shards into the cache entry, and every rank
    loads that entry. ``stats["teacher_rows"]``: how many rows this process computed (0 when the cache was reused)."""
    rank, size = world()
    computed = 0

    def rows(first: int, last: int) -> Iterator[np.ndarray]:
        nonlocal computed
        for batch in produce(first, last):
            computed += len(batch)
            yield batch

    if size == 1:
        out = cached_outputs(cache_dir, key, n_rows, row_shape, lambda: rows(0, n_rows))
    else:
        first, last = shard_rows(n_rows, rank, size, unit)
        loaded: List[np.ndarray] = []

        def missing() -> bool:  # rank 0 decides for all, so they cannot disagree; a hit it keeps
            if not is_main_process():
                return False
            cached = load_cached(cache_dir, key, n_rows, row_shape)
            if cached is not None:
                loaded.append(cached)
            return cached is None

        def compute_share() -> bool:
            logger.info("rank %d of %d: teacher pass over rows %d to %d of %d", rank, size, first, last - 1, n_rows)
            write_shard(cache_dir, key, rank, size, (first, last), row_shape, lambda: rows(first, last))
            return False

        def merge() -> bool:
            if is_main_process():
                merge_shards(cache_dir, key, n_rows, row_shape, size, unit)
            return False

        def load() -> bool:
            if loaded:  # rank 0's verified hit: not checksummed twice
                return False
            cached = load_cached(cache_dir, key, n_rows, row_shape)
            if cached is None:
                raise RuntimeError(f"rank {rank} found no valid teacher cache in {cache_dir} after the teacher "
                                   "pass (is the cache folder shared by all ranks?)")
            loaded.append(cached)
            return False

        if _on_every_rank(missing, "checking the teacher cache"):
            try:
                _on_every_rank(compute_share, "computing its share of the teacher pass")
            except BaseException:  # another rank's (or our) share is missing: no merge, so no shard is kept
                shard_path(cache_dir, key, rank, size).unlink(missing_ok=True)
                raise
            _on_every_rank(merge, "merging the teacher pass's shards")
        else:
            logger.info("reusing teacher outputs from %s", cache_dir)
        _on_every_rank(load, "loading the teacher cache")
        out = loaded[0]
    if stats is not None:
        stats["teacher_rows"] = computed
    return out


def cached_targets(cache_dir: Path, key: Dict[str, Any], n_rows: int, row_shape: Tuple[int, ...],
                   produce: RowsProducer, what: str = "teacher logits", unit: int = 1,
                   stats: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """:func:`cached_outputs_all_ranks`, timed and logged: the fp16 memory-mapped targets of every feature."""
    started = time.perf_counter()
    out = cached_outputs_all_ranks(cache_dir, key, n_rows, row_shape, produce, unit, stats)
    logger.info("%s ready in %.1f s (%.1f MiB fp16 on disk)", what, time.perf_counter() - started,
                out.nbytes / 2**20)
    return out


def teacher_span_logits(teacher: Any, features: Dict[str, Tensor], batch_size: int, device: torch.device,
                        cache_dir: Path, key: Dict[str, Any], use_amp: bool = False,
                        spec: TeacherTargetSpec = TeacherTargetSpec(),
                        stats: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """Teacher start/end targets for the training features, stored as ``spec`` says: fp16, on disk, mmapped
    (computed in shards of whole blocks under torchrun; ``stats``: see :func:`cached_outputs_all_ranks`)."""
    from tqdm.auto import tqdm

    from .sparse_logits import EMPTY

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

    def produce(first: int, last: int) -> Iterator[np.ndarray]:
        """Row-order blocks of rows ``first`` to ``last - 1`` (``first`` a multiple of the block); inside a block,
        batches of similar length so little padding is computed."""
        model.to(device).eval()
        lengths = features["padding_mask"].sum(1)
        bar = tqdm(total=-(-(last - first) // batch_size), desc="teacher pass")
        for start in range(first, last, block):
            rows = torch.arange(start, min(start + block, last))
            rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
            out = torch.empty((len(rows), *row_shape))
            for b in range(0, len(rows), batch_size):
                out[rows[b : b + batch_size] - start] = forward(rows[b : b + batch_size])
                bar.update(1)
            yield out.numpy()
        bar.close()

    block = batch_size * 32
    return cached_targets(cache_dir, {**key, **spec.key_fields()}, n_rows, row_shape, produce, unit=block,
                          stats=stats)
