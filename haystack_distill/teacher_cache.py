"""Teacher outputs computed once, stored fp16 on disk, memory-mapped on reuse. No Haystack import.

The cache key is a hash of every field that changes the outputs (teacher weights, tokenizer, sequence settings,
data file contents ...), so a changed input recomputes instead of silently reusing stale tensors. Files are
written to a temporary name and renamed, so an interrupted teacher pass never leaves a half cache behind.
Outputs are checked finite as they are written; ``meta.json`` is written last with a checksum of
``outputs.npy``, and an entry that is incomplete, truncated or fails its checksum is recomputed with a warning.

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
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .io import atomic_write_json
from .safety import check_finite_array

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def fingerprint_module(module: nn.Module, exclude: Sequence[str] = ()) -> str:
    """Hash of a module's parameters and buffers (names, dtypes, shapes and values), leaving out those whose
    name contains one of ``exclude`` (e.g. ``".pooler."``, unused by QA and re-initialised on each load)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        if any(part in name for part in exclude):
            continue
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


def _invalid(entry: Path, n_rows: int, row_shape: Tuple[int, ...]) -> Optional[str]:
    """Why the cache entry cannot be used (None if it can): incomplete, truncated, wrong shape or checksum."""
    data_file, meta_file = entry / "outputs.npy", entry / "meta.json"
    if not data_file.is_file():
        return "missing"
    if not meta_file.is_file():
        return "incomplete (no meta.json: the writer was interrupted)"
    try:
        meta = json.loads(meta_file.read_text())
        array = np.load(data_file, mmap_mode="r")
    except (ValueError, OSError) as err:  # e.g. numpy's "mmap length is greater than file size" on a truncated file
        return f"unreadable ({err})"
    if array.shape != (n_rows, *row_shape):
        return f"of shape {array.shape}, expected {(n_rows, *row_shape)}"
    if "checksum" not in meta:
        return "without a checksum (written by an older version)"
    if fingerprint_file(data_file) != meta["checksum"]:
        return "corrupt (its checksum does not match meta.json)"
    return None


def load_cached(cache_dir: PathLike, key_fields: Dict[str, Any], n_rows: int,
                row_shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """The verified memory-mapped entry for ``key_fields``, or None (with a warning when one exists but is bad)."""
    entry = Path(cache_dir) / cache_key(key_fields)
    problem = _invalid(entry, n_rows, row_shape)
    if problem is None:
        return np.load(entry / "outputs.npy", mmap_mode="r")
    if problem != "missing":
        logger.warning("teacher cache %s is %s; recomputing it", entry / "outputs.npy", problem)
    return None


def cached_outputs(
    cache_dir: PathLike,
    key_fields: Dict[str, Any],
    n_rows: int,
    row_shape: Tuple[int, ...],
    produce: Callable[[], Iterable[np.ndarray]],
    dtype: Any = np.float16,
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
    cached = load_cached(cache_dir, key_fields, n_rows, row_shape)
    if cached is not None:
        logger.info("reusing teacher outputs from %s", entry)
        return cached
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").unlink(missing_ok=True)  # written last: present only with complete, checked outputs
    tmp = entry / f".outputs.{os.getpid()}.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, *row_shape))
    row = 0
    try:
        for batch in produce():
            with np.errstate(over="ignore"):  # an overflow to inf is reported just below, by rows
                out[row : row + len(batch)] = batch
            check_finite_array(out[row : row + len(batch)], f"the teacher's outputs (rows {row} to "
                                                            f"{row + len(batch) - 1}, as {np.dtype(dtype).name})")
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
                                            "dtype": np.dtype(dtype).name,
                                            "checksum": fingerprint_file(entry / "outputs.npy")})
    logger.info("teacher outputs cached in %s", entry)
    return np.load(entry / "outputs.npy", mmap_mode="r")
