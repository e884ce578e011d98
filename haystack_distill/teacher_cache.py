"""Teacher outputs computed once, stored fp16 on disk, memory-mapped on reuse. No Haystack import.

The cache key is a hash of every field that changes the outputs (teacher weights, tokenizer, sequence settings,
data file contents ...), so a changed input recomputes instead of silently reusing stale tensors. Files are
written to a temporary name and renamed, so an interrupted teacher pass never leaves a half cache behind.
Outputs are checked finite as they are written; ``meta.json`` is written last with a checksum of
``outputs.npy``, and an entry that is incomplete, truncated or fails its checksum is recomputed with a warning.
Several processes (torchrun ranks) can compute one entry together: each writes its contiguous share of the rows
to a shard file (:func:`write_shard`), and one merges the shards into the entry (:func:`merge_shards`), which is
then stored exactly as a single process stores it.

Example:
    >>> import numpy as np, tempfile
    >>> d = tempfile.mkdtemp()
    >>> produce = lambda: iter([np.ones((2, 3)), np.zeros((1, 3))])
    >>> out = cached_outputs(d, {"model": "m", "data": "x"}, n_rows=3, row_shape=(3,), produce=produce)
    >>> out.dtype, out.shape, float(out[0, 0])
    (dtype('float16'), (3, 3), 1.0)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from .fingerprint import fingerprint_file, fingerprint_value
from .fingerprint import fingerprint_module as fingerprint_module  # re-exported: tests import it from here
from .io import atomic_write_json
from .safety import check_finite_array

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def cache_key(fields: Dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable dict of key fields."""
    return fingerprint_value(fields, "sha256", length=24)


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


def _fill(path: Path, n_rows: int, row_shape: Tuple[int, ...], produce: Callable[[], Iterable[np.ndarray]],
          dtype: Any, first_row: int = 0) -> None:
    """Write ``produce``'s ``n_rows`` rows into a new ``.npy`` at ``path``, each batch checked finite (reported by
    row, counting from ``first_row``); on any failure ``path`` is deleted and the error raised."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, *row_shape))
    row = 0
    try:
        for batch in produce():
            with np.errstate(over="ignore"):  # an overflow to inf is reported just below, by rows
                out[row : row + len(batch)] = batch
            first = first_row + row
            check_finite_array(out[row : row + len(batch)], f"the teacher's outputs (rows {first} to "
                                                            f"{first + len(batch) - 1}, as {np.dtype(dtype).name})")
            row += len(batch)
        if row != n_rows:
            raise RuntimeError(f"teacher produced {row} rows, expected {n_rows}")
        out.flush()
    except BaseException:
        del out
        path.unlink(missing_ok=True)
        raise
    del out


def store_outputs(
    cache_dir: PathLike,
    key_fields: Dict[str, Any],
    n_rows: int,
    row_shape: Tuple[int, ...],
    produce: Callable[[], Iterable[np.ndarray]],
    dtype: Any = np.float16,
) -> np.ndarray:
    """Compute and store the entry for ``key_fields`` (replacing any), as :func:`cached_outputs` does on a miss:
    written to a temporary name and renamed, then ``meta.json`` with the checksum. Returns it memory-mapped."""
    entry = Path(cache_dir) / cache_key(key_fields)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").unlink(missing_ok=True)  # written last: present only with complete, checked outputs
    tmp = entry / f".outputs.{os.getpid()}.npy"
    _fill(tmp, n_rows, row_shape, produce, dtype)
    os.replace(tmp, entry / "outputs.npy")
    atomic_write_json(entry / "meta.json", {"key": key_fields, "shape": [n_rows, *row_shape],
                                            "dtype": np.dtype(dtype).name,
                                            "checksum": fingerprint_file(entry / "outputs.npy")})
    logger.info("teacher outputs cached in %s", entry)
    return np.load(entry / "outputs.npy", mmap_mode="r")


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
    cached = load_cached(cache_dir, key_fields, n_rows, row_shape)
    if cached is not None:
        logger.info("reusing teacher outputs from %s", Path(cache_dir) / cache_key(key_fields))
        return cached
    return store_outputs(cache_dir, key_fields, n_rows, row_shape, produce, dtype)


# Sharded computation (one process per rank, e.g. under torchrun): rank r computes rows shard_rows(..., r, ...)
# into its own shard file with write_shard, then one process merges the shards into the entry with merge_shards,
# which stores it exactly as cached_outputs would have (same file, key, checks, checksum and atomic rename).

MERGE_ROWS = 4096  # rows copied per step when merging shards


def shard_rows(n_rows: int, rank: int, world_size: int, unit: int = 1) -> Tuple[int, int]:
    """Rows ``[first, last)`` of ``rank``'s contiguous share: whole ``unit``-row blocks (the last may be short),
    split as evenly as they go; a rank may get none.

    >>> [shard_rows(10, r, 3, unit=2) for r in range(3)]
    [(0, 2), (2, 6), (6, 10)]
    """
    units = -(-n_rows // unit)
    lo, hi = rank * units // world_size, (rank + 1) * units // world_size
    return min(lo * unit, n_rows), min(hi * unit, n_rows)


def shard_path(cache_dir: PathLike, key_fields: Dict[str, Any], rank: int, world_size: int) -> Path:
    """Where ``rank`` stores its share of the entry for ``key_fields`` (beside the entry's ``outputs.npy``)."""
    return Path(cache_dir) / cache_key(key_fields) / f".shard-{rank}-of-{world_size}.npy"


def write_shard(
    cache_dir: PathLike,
    key_fields: Dict[str, Any],
    rank: int,
    world_size: int,
    rows: Tuple[int, int],
    row_shape: Tuple[int, ...],
    produce: Callable[[], Iterable[np.ndarray]],
    dtype: Any = np.float16,
) -> Path:
    """Store rows ``rows = (first, last)`` of the entry, yielded in order by ``produce``, as ``rank``'s shard:
    checked finite, written to a temporary name and renamed. Returns the shard's path."""
    first, last = rows
    path = shard_path(cache_dir, key_fields, rank, world_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.npy")
    _fill(tmp, last - first, row_shape, produce, dtype, first_row=first)
    os.replace(tmp, path)
    return path


def merge_shards(
    cache_dir: PathLike,
    key_fields: Dict[str, Any],
    n_rows: int,
    row_shape: Tuple[int, ...],
    world_size: int,
    unit: int = 1,
    dtype: Any = np.float16,
) -> np.ndarray:
    """Store the entry from the ``world_size`` shards (split by :func:`shard_rows` with ``unit``) with
    :func:`store_outputs`, then delete them; a missing or misshapen shard raises. Returns the entry."""
    paths = [shard_path(cache_dir, key_fields, rank, world_size) for rank in range(world_size)]

    def produce() -> Iterable[np.ndarray]:
        for rank, path in enumerate(paths):
            first, last = shard_rows(n_rows, rank, world_size, unit)
            shard = np.load(path, mmap_mode="r")
            if shard.shape != (last - first, *row_shape) or shard.dtype != np.dtype(dtype):
                raise RuntimeError(f"teacher cache shard {path} is {shard.dtype} of shape {shard.shape}, expected "
                                   f"{np.dtype(dtype).name} of shape {(last - first, *row_shape)}")
            for start in range(0, len(shard), MERGE_ROWS):
                yield np.asarray(shard[start : start + MERGE_ROWS])
            del shard

    try:
        return store_outputs(cache_dir, key_fields, n_rows, row_shape, produce, dtype)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
