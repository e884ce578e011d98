"""Teacher outputs computed once, stored fp16 on disk, memory-mapped on reuse. No Haystack import.

The cache key is a hash of every field that changes the outputs (teacher weights, tokenizer, sequence settings,
data file contents ...), so a changed input recomputes instead of silently reusing stale tensors. Files are
written to a temporary name and renamed, so an interrupted teacher pass never leaves a half cache behind.

Example:
    >>> import numpy as np, tempfile
    >>> d = tempfile.mkdtemp()
    >>> produce = lambda: iter([np.ones((2, 3)), np.zeros((1, 3))])
    >>> out = cached_outputs(d, {"model": "m", "data": "x"}, n_rows=3, row_shape=(3,), produce=produce)
    >>> out.dtype, out.shape, float(out[0, 0])
    (dtype('float16'), (3, 3), 1.0)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .io import atomic_write_json

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def fingerprint_module(module: nn.Module) -> str:
    """Hash of a module's parameters and buffers (names, dtypes, shapes and values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_file(path: PathLike) -> str:
    """Hash of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(fields: Dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable dict of key fields."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _load(entry: Path, n_rows: int, row_shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    data_file = entry / "outputs.npy"
    if not (data_file.is_file() and (entry / "meta.json").is_file()):
        return None
    array = np.load(data_file, mmap_mode="r")
    if array.shape != (n_rows, *row_shape):
        logger.warning("teacher cache %s has shape %s, expected %s; recomputing", entry, array.shape,
                       (n_rows, *row_shape))
        return None
    return array


def cached_outputs(
    cache_dir: PathLike,
    key_fields: Dict[str, Any],
    n_rows: int,
    row_shape: Tuple[int, ...],
    produce: Callable[[], Iterable[np.ndarray]],
    dtype: np.dtype = np.float16,
) -> np.ndarray:
    """Return a read-only memory-mapped ``[n_rows, *row_shape]`` array, computing it with ``produce`` if absent.

    Args:
        cache_dir: root folder; each key gets its own sub-folder with ``outputs.npy`` and ``meta.json``.
        key_fields: everything that changes the outputs; stored in ``meta.json`` for inspection.
        n_rows: number of rows ``produce`` yields in total.
        row_shape: shape of one row.
        produce: callable returning an iterable of ``[batch, *row_shape]`` arrays, in row order.
        dtype: storage dtype (fp16 by default).
    """
    entry = Path(cache_dir) / cache_key(key_fields)
    cached = _load(entry, n_rows, row_shape)
    if cached is not None:
        logger.info("reusing teacher outputs from %s", entry)
        return cached
    entry.mkdir(parents=True, exist_ok=True)
    tmp = entry / f".outputs.{os.getpid()}.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, *row_shape))
    row = 0
    try:
        for batch in produce():
            out[row : row + len(batch)] = batch
            row += len(batch)
        if row != n_rows:
            raise RuntimeError(f"teacher produced {row} rows, expected {n_rows}")
        out.flush()
    except BaseException:
        del out
        tmp.unlink(missing_ok=True)
        raise
    del out
    os.replace(tmp, entry / "outputs.npy")
    atomic_write_json(entry / "meta.json", {"key": key_fields, "shape": [n_rows, *row_shape],
                                            "dtype": np.dtype(dtype).name})
    logger.info("teacher outputs cached in %s", entry)
    return np.load(entry / "outputs.npy", mmap_mode="r")
