"""Sentence files: one sentence per line, UTF-8 text. Checked before any model work starts.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "s.txt")
    >>> _ = open(path, "w", encoding="utf-8").write("A cat.\\n\\nA dog.\\nA cat.\\n")
    >>> read_sentences(path)
    ['A cat.', 'A dog.']
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, List, Sequence, Union

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def read_sentences(path: PathLike, unique: bool = True) -> List[str]:
    """Read non-blank, stripped lines of a UTF-8 text file (duplicates dropped unless ``unique=False``).

    Raises :class:`FileNotFoundError` for a missing file and :class:`ValueError` for a binary, non-UTF-8
    or empty file, naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentence file {path} does not exist (expected a text file, one sentence per line).")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise ValueError(f"sentence file {path} looks binary (it contains NUL bytes); pass a UTF-8 text file, "
                         "one sentence per line.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"sentence file {path} is not UTF-8 text (byte {err.start}: {err.reason}); re-encode it "
                         "as UTF-8, one sentence per line.") from err
    sentences = [line.strip() for line in text.splitlines()]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError(f"sentence file {path} holds no sentences (it is empty or only blank lines).")
    return dedupe(sentences) if unique else sentences


def dedupe(sentences: Iterable[str]) -> List[str]:
    """Drop repeated sentences, keeping first occurrences in order."""
    sentences = list(sentences)
    out = list(dict.fromkeys(sentences))
    if len(out) < len(sentences):
        logger.info("dropped %d duplicate sentences (%d left)", len(sentences) - len(out), len(out))
    return out


def check_sentences(sentences: Sequence[Any], what: str = "sentences") -> List[str]:
    """Return ``sentences`` as a list after checking it is a non-empty sequence of non-blank strings."""
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, got a single {type(sentences).__name__}; wrap it in a list "
                        "or read a file with read_sentences(path).")
    sentences = list(sentences)
    if not sentences:
        raise ValueError(f"{what} is empty; pass at least one sentence.")
    bad = [i for i, s in enumerate(sentences) if not isinstance(s, str) or not s.strip()]
    if bad:
        first = sentences[bad[0]]
        raise ValueError(f"{what} holds {len(bad)} items that are not non-blank strings (first at index {bad[0]}: "
                         f"{first!r} of type {type(first).__name__}).")
    return sentences


_WIKITEXT_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), ("( ", "("), (" )", ")"))
_SENTENCE_END = re.compile(r"(?<=[.!?]) (?=[A-Z\"'(])")


def wikitext_sentences(path: PathLike, min_words: int = 5, max_words: int = 50) -> List[str]:
    """Sentences from a tokenized WikiText file: headings dropped, tokenization undone, lines containing
    ``<unk>`` skipped, ``min_words..max_words`` words, duplicates removed.

    Example:
        >>> wikitext_sentences("../shared/data/wikitext-2/wiki.valid.tokens.txt")[:1]  # doctest: +SKIP
    """
    out = []
    for line in read_sentences(path, unique=False):
        if line.startswith("="):
            continue
        for old, new in _WIKITEXT_JOINS:
            line = line.replace(old, new)
        line = re.sub(r" ([,.;:!?])", r"\1", line)
        for sentence in _SENTENCE_END.split(line):
            if "<unk>" not in sentence and min_words <= len(sentence.split()) <= max_words:
                out.append(sentence.strip())
    return dedupe(out)
