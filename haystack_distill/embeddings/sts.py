"""STS evaluation: Spearman correlation between cosine similarity and gold scores, and an STS-B reader.

STS-B files are tab-separated: genre, file, year, id, score, sentence1, sentence2, sometimes followed by
extra columns. Quotes are unbalanced in the original release, so lines are split on tabs only, never
parsed with csv quoting.

Example:
    >>> spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0])
    0.8
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, NamedTuple, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

PathLike = Union[str, os.PathLike]
STSB_COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")


class StsPair(NamedTuple):
    """One STS example: two sentences and a gold similarity score (0-5 in STS-B)."""

    sentence1: str
    sentence2: str
    score: float


def _parse_line(line: str, where: str) -> StsPair:
    fields = line.split("\t")
    if len(fields) < len(STSB_COLUMNS):
        raise ValueError(f"{where}: expected at least {len(STSB_COLUMNS)} tab-separated columns "
                         f"({', '.join(STSB_COLUMNS)}), found {len(fields)}.")
    try:
        score = float(fields[4])
    except ValueError as err:
        raise ValueError(f"{where}: score column (5th) is {fields[4]!r}, not a number.") from err
    s1, s2 = fields[5].strip(), fields[6].strip()
    if not s1 or not s2:
        raise ValueError(f"{where}: sentence1 or sentence2 is empty.")
    return StsPair(s1, s2, score)


def read_sts(path: PathLike) -> List[StsPair]:
    """Read an STS-B format file into :class:`StsPair` items (extra trailing columns are ignored).

    Raises :class:`FileNotFoundError`, or :class:`ValueError` naming the file and line of a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STS file {path} does not exist (expected STS-B format, e.g. "
                                "../shared/data/stsbenchmark/sts-test.csv).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"STS file {path} is not UTF-8 text: {err}") from err
    pairs = [_parse_line(line, f"{path}:{number}") for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not pairs:
        raise ValueError(f"STS file {path} holds no sentence pairs.")
    return pairs


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    group_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson correlation of average ranks (ties handled)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"spearman needs two 1-d sequences of equal length >= 2, got {a.shape} and {b.shape}.")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    if denom == 0:
        raise ValueError("spearman is undefined when one input is constant.")
    return float((ra * rb).sum() / denom)


def cosine_scores(model: SentenceTransformer, pairs: Sequence[StsPair], batch_size: int = 64,
                  show_progress_bar: bool = False) -> np.ndarray:
    """Cosine similarity of each pair, every distinct sentence encoded once."""
    pairs = [StsPair(*p) for p in pairs]
    unique = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))
    index = {s: i for i, s in enumerate(unique)}
    emb = model.encode(unique, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True)
    emb = emb.astype(np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    left = emb[[index[p.sentence1] for p in pairs]]
    right = emb[[index[p.sentence2] for p in pairs]]
    return (left * right).sum(axis=1)


def evaluate_sts(model: SentenceTransformer, pairs: Sequence[StsPair], batch_size: int = 64,
                 show_progress_bar: bool = False) -> float:
    """Spearman correlation (in [-1, 1]) between cosine similarities and gold scores of ``pairs``.

    ``pairs`` are :class:`StsPair` or ``(sentence1, sentence2, score)`` tuples.

    Example:
        >>> evaluate_sts(model, read_sts("../shared/data/stsbenchmark/sts-test.csv"))  # doctest: +SKIP
    """
    if len(pairs) < 2:
        raise ValueError(f"evaluate_sts needs at least 2 pairs, got {len(pairs)}.")
    gold = [float(StsPair(*p).score) for p in pairs]
    return spearman(list(cosine_scores(model, pairs, batch_size, show_progress_bar)), gold)
