"""Teacher sentence embeddings, computed once and cached on disk as float16 (via :mod:`haystack_distill.teacher_cache`).

Key fields of an entry (stored in its ``meta.json``):

* ``kind``: ``"sentence_embeddings"``;
* ``teacher``: :func:`model_fingerprint`, a hash of the teacher's module classes and configs (max_seq_length,
  pooling mode, normalisation, any Dense head), its tokenizer fingerprint and its weights (but the unused pooler);
* ``sentences``: SHA-256 of the ordered sentence list, and ``count``.

Anything that changes the teacher's output changes the key, so a stale entry is never read.

Example:
    >>> sentences_hash(["a", "b"]) == sentences_hash(["a", "b"]) != sentences_hash(["b", "a"])
    True
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from haystack_distill.fingerprint import fingerprint_module, fingerprint_value, new_digest
from haystack_distill.safety import check_finite_array
from haystack_distill.teacher_cache import cache_key, load_cached, store_outputs

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CACHE_ENV = "HAYSTACK_DISTILL_CACHE"
#: Weights the sentence embedding never reads (BERT's pooler, re-initialised when a folder lacks it).
POOLER = (".pooler.",)
#: Sentences per ``encode`` call while filling the cache (each call sorts its chunk by length).
CHUNK = 4096


def default_cache_dir() -> Path:
    """``$HAYSTACK_DISTILL_CACHE/teacher_embeddings`` or ``~/.cache/haystack_distill/teacher_embeddings``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "haystack_distill")
    return Path(root) / "teacher_embeddings"


def sentences_hash(sentences: Sequence[str]) -> str:
    """SHA-256 of the ordered sentence list (JSON-encoded, so boundaries are unambiguous)."""
    return fingerprint_value(list(sentences), "sha256", ensure_ascii=False)


def model_fingerprint(model: SentenceTransformer) -> str:
    """Hash of a float SentenceTransformer: module classes, module configs, tokenizer fingerprint, all weights."""
    from haystack_distill.embeddings.quantization import is_quantized
    from haystack_distill.tokenizers import tokenizer_fingerprint

    if is_quantized(model):
        raise ValueError("the teacher is int8-quantized; distil from (and cache) the float model instead.")
    digest = new_digest("sha256")
    for module in model:
        digest.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
        if hasattr(module, "get_config_dict"):
            digest.update(json.dumps(module.get_config_dict(), sort_keys=True, default=str).encode())
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is not None:
            digest.update(tokenizer_fingerprint(tokenizer).encode())
    digest.update(fingerprint_module(model, exclude=POOLER).encode())
    return str(digest.hexdigest())


def key_fields(teacher_fingerprint: str, sentences: Sequence[str]) -> Dict[str, Any]:
    """The key fields of a cache entry (see the module docstring)."""
    return {"kind": "sentence_embeddings", "teacher": teacher_fingerprint,
            "sentences": sentences_hash(sentences), "count": len(sentences)}


def _encode_chunks(teacher: SentenceTransformer, sentences: Sequence[str], batch_size: int,
                   show_progress_bar: bool) -> Iterator[np.ndarray]:
    with tqdm(total=len(sentences), desc="teacher embeddings", disable=not show_progress_bar) as bar:
        for start in range(0, len(sentences), CHUNK):
            chunk = list(sentences[start:start + CHUNK])
            emb = teacher.encode(chunk, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
            check_finite_array(emb, f"the teacher's embeddings of sentences {start} to {start + len(chunk) - 1}")
            if np.abs(emb).max() >= np.finfo(np.float16).max:
                raise ValueError("teacher embeddings overflow float16; normalise the teacher's output.")
            bar.update(len(chunk))
            yield emb


def teacher_embeddings(
    teacher: SentenceTransformer,
    sentences: Sequence[str],
    cache_dir: Optional[PathLike] = None,
    batch_size: int = 128,
    show_progress_bar: bool = True,
    use_cache: bool = True,
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Teacher embeddings of ``sentences`` as a float16 ``[n, dim]`` array (memory-mapped when cached).

    Returns ``(embeddings, info)``; ``info`` holds ``hit`` (read from the cache), ``path`` and the key fields.

    Example:
        >>> emb, info = teacher_embeddings(teacher, ["A cat.", "A dog."], cache_dir="cache")  # doctest: +SKIP
    """
    sentences = list(sentences)
    fields = key_fields(model_fingerprint(teacher), sentences)
    dim = teacher.get_sentence_embedding_dimension()
    if not dim:
        raise ValueError("the teacher reports no sentence-embedding size (no Pooling module?); it cannot be cached.")
    chunks = lambda: _encode_chunks(teacher, sentences, batch_size, show_progress_bar)  # noqa: E731
    if not use_cache:
        return np.concatenate(list(chunks())).astype(np.float16), {"hit": False, "path": None, **fields}
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    entry = root / cache_key(fields)
    cached = load_cached(root, fields, len(sentences), (dim,))
    embeddings = cached if cached is not None else store_outputs(root, fields, n_rows=len(sentences),
                                                                 row_shape=(dim,), produce=chunks)
    return embeddings, {"hit": cached is not None, "path": str(entry), **fields}
