"""Content hashes that name files, modules and values in caches, checkpoints, run records and manifests.
No Haystack import.

These hashes are stored on disk or used as cache keys, so each caller names its algorithm and length and keeps
them: a different digest would orphan existing caches and checkpoints. ``"blake2b-128"`` and ``"blake2b-96"``
are BLAKE2b with a 16- and 12-byte digest (not truncations of one another); ``"sha256"`` is SHA-256.

Example:
    >>> fingerprint_value({"b": 1, "a": 2}) == fingerprint_value({"a": 2, "b": 1})
    True
    >>> fingerprint_text("abc", "sha256", length=16)
    'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn

PathLike = Union[str, os.PathLike]

ALGORITHMS: Dict[str, Callable[[], Any]] = {
    "sha256": hashlib.sha256,
    "blake2b-128": lambda: hashlib.blake2b(digest_size=16),
    "blake2b-96": lambda: hashlib.blake2b(digest_size=12),
}


def new_digest(algorithm: str) -> Any:
    """A fresh ``hashlib`` object for one of :data:`ALGORITHMS`, for hashes built from several parts."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown hash algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algorithm]()


def fingerprint_text(text: str, algorithm: str = "sha256", length: Optional[int] = None) -> str:
    """Hex digest of ``text``'s UTF-8 bytes, cut to its first ``length`` characters if given."""
    digest = new_digest(algorithm)
    digest.update(text.encode("utf-8"))
    return str(digest.hexdigest())[:length]


def fingerprint_value(value: Any, algorithm: str = "sha256", length: Optional[int] = None,
                      ensure_ascii: bool = True) -> str:
    """:func:`fingerprint_text` of ``value`` as JSON with sorted keys (non-JSON values as their ``str``)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=ensure_ascii)
    return fingerprint_text(text, algorithm, length)


def fingerprint_file(path: PathLike, algorithm: str = "blake2b-128") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = new_digest(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return str(digest.hexdigest())


def fingerprint_module(module: nn.Module, exclude: Sequence[str] = ()) -> str:
    """BLAKE2b-128 of a module's parameters and buffers (names, dtypes, shapes and values), leaving out those
    whose name contains one of ``exclude`` (e.g. ``".pooler."``, unused by QA and re-initialised on each load)."""
    digest = new_digest("blake2b-128")
    for name, tensor in sorted(module.state_dict().items()):
        if any(part in name for part in exclude):
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return str(digest.hexdigest())
