"""SQuAD v1.1 exact match and F1 (the official normalisation: lower-case, strip punctuation, articles and
extra whitespace; F1 over bag-of-tokens overlap; the best over all gold answers). No Haystack import.

Example:
    >>> exact_match("The Eiffel Tower!", "eiffel tower")
    1.0
    >>> round(f1_score("in Paris, France", "Paris"), 3)
    0.5
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Dict, List, Mapping

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of normalised strings."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], golds: Mapping[str, List[str]]) -> Dict[str, float]:
    """EM and F1 in percent over the questions of ``golds`` (a missing prediction counts as empty)."""
    if not golds:
        raise ValueError("no gold answers to score against")
    em = f1 = 0.0
    for qid, answers in golds.items():
        pred = predictions.get(qid, "")
        answers = answers or [""]
        em += max(exact_match(pred, a) for a in answers)
        f1 += max(f1_score(pred, a) for a in answers)
    return {"em": 100 * em / len(golds), "f1": 100 * f1 / len(golds), "questions": len(golds)}
