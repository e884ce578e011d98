"""Move extractive-QA start/end distributions between two tokenizations of the same text. No Haystack import.

Both tokenizers' offset mappings point into the same original characters, so a teacher's distribution over
its own tokens can be carried onto the student's tokens through characters, whatever each tokenizer does to
the text on the way (lower-casing, accent stripping, byte-level encoding, different word splits):

1. Teacher to characters. A teacher token with offsets ``(a, b)`` puts its *start* probability on character
   ``a`` and its *end* probability on character ``b - 1`` (its last character). A zero-width token ``(a, a)``
   sits between characters ``a - 1`` and ``a``, and the same rule gives it ``a`` for starts and ``a - 1`` for
   ends, exactly like a gap character (below).
2. Characters to student tokens. The student's *window* is ``[w0, w1)``: from the first character of its
   first token to the end of its last token (zero-width student tokens are ignored; they cover no character).

   * Start mass on a character inside a student token goes to that token. Start mass on a gap character
     (whitespace or anything no student token covers, e.g. the space that RoBERTa's offsets leave out) goes
     to the *next* student token; an answer that begins in a gap begins at the next word.
   * End mass on a character inside a student token goes to that token; on a gap character, to the
     *previous* student token.
   * Where several student tokens cover the same character (byte-level BPE splitting one multi-byte
     character), starts go to the first of them and ends to the last, so the span covers the character.
   * Mass on characters *outside* the window (``c < w0`` or ``c >= w1``) goes to the student's no-answer
     position, because that is how Haystack labels a window that does not contain the answer.
3. The teacher's no-answer mass goes to the student's no-answer position.

Nothing is dropped and nothing renormalised: the student's start (and end) masses, no-answer included, sum
to exactly what the teacher's did.

Example (the teacher splits "unhappy" into "un" + "##happy", the student keeps it whole; then "day"):
    >>> import numpy as np
    >>> teacher_offsets = np.array([[0, 2], [2, 7], [8, 11]])
    >>> student_offsets = np.array([[0, 7], [8, 11]])
    >>> out = align_span_probs(np.array([0.5, 0.2, 0.2]), np.array([0.1, 0.6, 0.2]), (0.1, 0.1),
    ...                        teacher_offsets, student_offsets)
    >>> out.start.round(3).tolist(), out.end.round(3).tolist(), out.no_answer
    ([0.7, 0.2], [0.7, 0.2], (0.1, 0.1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np

#: Log-probability written where the aligned probability is 0; exp(-1e4) is 0 in every float dtype.
LOG_ZERO = -1e4

ArrayLike = Union[np.ndarray, Sequence]


@dataclass(frozen=True)
class AlignedSpan:
    """A span distribution on the student's tokens: ``start``/``end`` over its window tokens plus no-answer."""

    start: np.ndarray
    end: np.ndarray
    no_answer: Tuple[float, float]

    @property
    def total(self) -> Tuple[float, float]:
        """Total start and end mass (no-answer included)."""
        return float(self.start.sum()) + self.no_answer[0], float(self.end.sum()) + self.no_answer[1]


def check_offsets(offsets: ArrayLike, name: str) -> np.ndarray:
    """``offsets`` as an ``[n, 2]`` int64 array with ``0 <= start <= end``; ValueError naming ``name`` otherwise."""
    array = np.asarray(offsets, dtype=np.int64)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} must be a list of (start, end) character pairs, got shape {array.shape}.")
    if (array < 0).any() or (array[:, 1] < array[:, 0]).any():
        bad = np.flatnonzero((array < 0).any(1) | (array[:, 1] < array[:, 0]))[0]
        raise ValueError(f"{name}[{bad}] = {tuple(array[bad].tolist())} is not a (start, end) pair with "
                         "0 <= start <= end.")
    return array


def start_chars(teacher_offsets: np.ndarray) -> np.ndarray:
    """The character each teacher token's start mass lands on: its first character."""
    return teacher_offsets[:, 0]


def end_chars(teacher_offsets: np.ndarray) -> np.ndarray:
    """The character each teacher token's end mass lands on: its last character (``end - 1``)."""
    return teacher_offsets[:, 1] - 1


def _covering_tokens(student_offsets: np.ndarray) -> np.ndarray:
    """Indices of the student tokens that cover at least one character, checked to be in text order."""
    eligible = np.flatnonzero(student_offsets[:, 1] > student_offsets[:, 0])
    starts, ends = student_offsets[eligible, 0], student_offsets[eligible, 1]
    if (np.diff(starts) < 0).any() or (np.diff(ends) < 0).any():
        raise ValueError("student offsets are not in text order; pass the offsets of one contiguous window as the "
                         "tokenizer returned them (return_offsets_mapping=True).")
    return eligible


def student_token_for_starts(chars: ArrayLike, student_offsets: ArrayLike) -> np.ndarray:
    """Student token receiving start mass on each character (gap: next token), ``-1`` outside the window.

    Example:
        >>> student_token_for_starts([0, 3, 4, 9], [[0, 3], [4, 8]]).tolist()  # 3 is a gap, 9 is outside
        [0, 1, 1, -1]
    """
    offsets = check_offsets(student_offsets, "student_offsets")
    eligible = _covering_tokens(offsets)
    chars = np.asarray(chars, dtype=np.int64)
    if not len(eligible):
        return np.full(chars.shape, -1, dtype=np.int64)
    ends = offsets[eligible, 1]
    inside = (chars >= offsets[eligible[0], 0]) & (chars < ends[-1])
    pick = np.searchsorted(ends, chars, side="right").clip(max=len(eligible) - 1)  # first token ending after c
    return np.where(inside, eligible[pick], -1)


def student_token_for_ends(chars: ArrayLike, student_offsets: ArrayLike) -> np.ndarray:
    """Student token receiving end mass on each character (gap: previous token), ``-1`` outside the window.

    Example:
        >>> student_token_for_ends([-1, 2, 3, 7], [[0, 3], [4, 8]]).tolist()  # 3 is a gap, -1 is outside
        [-1, 0, 0, 1]
    """
    offsets = check_offsets(student_offsets, "student_offsets")
    eligible = _covering_tokens(offsets)
    chars = np.asarray(chars, dtype=np.int64)
    if not len(eligible):
        return np.full(chars.shape, -1, dtype=np.int64)
    starts = offsets[eligible, 0]
    inside = (chars >= starts[0]) & (chars < offsets[eligible[-1], 1])
    pick = (np.searchsorted(starts, chars, side="right") - 1).clip(min=0)  # last token starting at or before c
    return np.where(inside, eligible[pick], -1)


def _rebin(probs: np.ndarray, targets: np.ndarray, n_student: int) -> Tuple[np.ndarray, float]:
    """Sum ``probs`` into ``n_student`` bins by target index; mass with target ``-1`` is returned separately."""
    inside = targets >= 0
    binned = np.bincount(targets[inside], weights=probs[inside], minlength=n_student).astype(np.float64)
    return binned, float(probs[~inside].sum())


def _check_probs(probs: ArrayLike, n_tokens: int, name: str) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float64).reshape(-1)
    if array.shape != (n_tokens,):
        raise ValueError(f"{name} has {array.size} entries but teacher_offsets has {n_tokens} tokens.")
    if (array < 0).any() or not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite probabilities >= 0 (pass softmax outputs, not logits).")
    return array


def align_span_probs(teacher_start: ArrayLike, teacher_end: ArrayLike, teacher_no_answer: Tuple[float, float],
                     teacher_offsets: ArrayLike, student_offsets: ArrayLike) -> AlignedSpan:
    """Carry the teacher's start/end probabilities over its context tokens onto the student's window tokens.

    Args:
        teacher_start, teacher_end: ``[T]`` probabilities of the teacher's context tokens (not logits).
        teacher_no_answer: the teacher's (start, end) probability of its no-answer position.
        teacher_offsets: ``[T, 2]`` character offsets of the teacher's context tokens in the original text.
        student_offsets: ``[S, 2]`` character offsets of the student's window tokens in the same text.

    Returns an :class:`AlignedSpan` (``[S]`` start and end masses plus no-answer) with the same total mass;
    see the module docstring for the rules (gaps, shared characters, mass outside the window).
    """
    t_offsets = check_offsets(teacher_offsets, "teacher_offsets")
    s_offsets = check_offsets(student_offsets, "student_offsets")
    start_p = _check_probs(teacher_start, len(t_offsets), "teacher_start")
    end_p = _check_probs(teacher_end, len(t_offsets), "teacher_end")
    start, start_out = _rebin(start_p, student_token_for_starts(start_chars(t_offsets), s_offsets), len(s_offsets))
    end, end_out = _rebin(end_p, student_token_for_ends(end_chars(t_offsets), s_offsets), len(s_offsets))
    no_answer = (float(teacher_no_answer[0]) + start_out, float(teacher_no_answer[1]) + end_out)
    return AlignedSpan(start=start, end=end, no_answer=no_answer)


def log_probs(probs: ArrayLike, floor: float = LOG_ZERO) -> np.ndarray:
    """``log(p)``, with :data:`LOG_ZERO` where ``p == 0`` (and never below ``floor``).

    Example:
        >>> log_probs([1.0, 0.0]).tolist()
        [0.0, -10000.0]
    """
    array = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(array), floor)
