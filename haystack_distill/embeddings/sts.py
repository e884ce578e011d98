"""STS evaluation: Spearman correlation between cosine similarity and gold scores, and an STS-B reader.

The correlations are scipy's (:func:`scipy.stats.spearmanr`, :func:`scipy.stats.pearsonr`) and the model is
scored by sentence-transformers' ``EmbeddingSimilarityEvaluator``; this module adds the file reader, input
checks that name the problem, and plain-number results.

STS-B files are tab-separated: genre, file, year, id, score, sentence1, sentence2, sometimes followed by
extra columns. Quotes are unbalanced in the original release, so lines are split on tabs only, never
parsed with csv quoting.

Example:
    >>> round(spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0]), 12)
    0.8
    >>> round(pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), 4)
    0.9934
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Sequence, Tuple, Union

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


def _paired(x: Sequence[float], y: Sequence[float], name: str) -> Tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float arrays, checked: 1-d, equal length >= 2, neither constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"{name} needs two 1-d sequences of equal length >= 2, got {a.shape} and {b.shape}.")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError(f"{name} is undefined when one input is constant.")
    return a, b


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank), by :func:`scipy.stats.spearmanr`."""
    from scipy.stats import spearmanr

    return float(spearmanr(*_paired(x, y, "spearman")).statistic)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's linear correlation, by :func:`scipy.stats.pearsonr`."""
    from scipy.stats import pearsonr

    return float(pearsonr(*_paired(x, y, "pearson")).statistic)


def _evaluator(pairs: Sequence[StsPair], batch_size: int, show_progress_bar: bool) -> Any:
    """sentence-transformers' ``EmbeddingSimilarityEvaluator`` on ``pairs`` that leaves the model's card alone."""
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator, SimilarityFunction

    class Evaluator(EmbeddingSimilarityEvaluator):
        def store_metrics_in_model_card_data(self, model: Any, metrics: Dict[str, Any]) -> None:
            """Scoring a model does not change it (the card would collect every dev evaluation)."""

    return Evaluator([p.sentence1 for p in pairs], [p.sentence2 for p in pairs], [p.score for p in pairs],
                     batch_size=batch_size, main_similarity=SimilarityFunction.COSINE,
                     show_progress_bar=show_progress_bar, write_csv=False)


def sts_correlations(model: SentenceTransformer, pairs: Sequence[StsPair], batch_size: int = 64,
                     show_progress_bar: bool = False) -> Dict[str, float]:
    """``{"spearman": ..., "pearson": ...}`` between the cosine similarity of each pair and its gold score.

    ``pairs`` are :class:`StsPair` or ``(sentence1, sentence2, score)`` tuples.

    Example:
        >>> model = SentenceTransformer(get_model_path())  # all-MiniLM-L6-v2  # doctest: +SKIP
        >>> scores = sts_correlations(model, read_sts("../shared/data/stsbenchmark/sts-test.csv"))  # doctest: +SKIP
        >>> {name: round(value, 4) for name, value in scores.items()}  # doctest: +SKIP
        {'spearman': 0.8203, 'pearson': 0.8274}
    """
    pairs = [StsPair(*p) for p in pairs]
    if len(pairs) < 2:
        raise ValueError(f"STS evaluation needs at least 2 pairs, got {len(pairs)}.")
    if len({p.score for p in pairs}) == 1:
        raise ValueError(f"every gold score of the {len(pairs)} STS pairs is {pairs[0].score}; correlation is "
                         "undefined. Pass pairs with varied scores (e.g. sts-dev.csv).")
    metrics = _evaluator(pairs, batch_size, show_progress_bar)(model)
    result = {"spearman": float(metrics["spearman_cosine"]), "pearson": float(metrics["pearson_cosine"])}
    if not all(np.isfinite(v) for v in result.values()):
        raise ValueError("the model gives every STS pair the same cosine similarity, so correlation is undefined; "
                         "check that it is a trained (not collapsed) model.")
    return result


def evaluate_sts(model: SentenceTransformer, pairs: Sequence[StsPair], batch_size: int = 64,
                 show_progress_bar: bool = False) -> float:
    """Spearman correlation (in [-1, 1]) between cosine similarities and gold scores of ``pairs``.

    ``pairs`` are :class:`StsPair` or ``(sentence1, sentence2, score)`` tuples.

    Example:
        >>> evaluate_sts(model, read_sts("../shared/data/stsbenchmark/sts-test.csv"))  # doctest: +SKIP
    """
    return sts_correlations(model, pairs, batch_size, show_progress_bar)["spearman"]
