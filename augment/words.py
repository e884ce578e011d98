"""Words of a context with character offsets, which of them may be replaced, and casing of replacements.

Words come from a *fast* tokenizer's own pre-tokenisation (``word_ids`` and ``offset_mapping``), so any
Hugging Face fast tokenizer works (WordPiece, byte-level BPE, SentencePiece) and every word keeps its exact
character span in the original text. nlpaug supplies the stop-word / punctuation filter
(``WordAugmenter.pre_skip_aug``, including an optional ``stopwords_regex``) and the word-case classifier
(``WordAugmenter.get_word_case``).

Example:
    >>> from transformers import BertTokenizerFast
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "vocab.txt")
    >>> _ = open(p, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "paris", "is", "big", "."]))
    >>> tok = BertTokenizerFast(vocab_file=p)
    >>> enc = tok(["Paris is big."], add_special_tokens=False, return_offsets_mapping=True)
    >>> words = split_words("Paris is big.", enc.word_ids(0), enc["offset_mapping"][0])
    >>> [("Paris is big."[w.start:w.end], w.n_pieces) for w in words]
    [('Paris', 1), ('is', 1), ('big', 1), ('.', 1)]
    >>> WordFilter().eligible(["Paris", "is", "big", "."])
    [True, False, True, False]
    >>> match_case("Paris", "london"), match_case("NASA", "agency")
    ('London', 'AGENCY')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from nlpaug.augmenter.word.word_augmenter import WordAugmenter
from nlpaug.util import Action

# English function words and contraction fragments (as split off by word-piece pre-tokenizers). Never replaced,
# never offered as a replacement.
STOP_WORDS = frozenset(
    """
    a about above after again against ago all almost along already also although always am among an and another any
    anyone anything are around as at away be became because become becomes been before being below beside besides
    between beyond both but by can cannot could did do does doing done down during each either else enough etc even
    ever every few for from further had has have having he her here hers herself him himself his how however i if in
    including instead into is it its itself just least less like many may me might mine more most much must my
    myself near neither never no nobody none nor not nothing now of off often on once one only onto or other others
    otherwise our ours ourselves out over own per perhaps rather same several shall she should since so some someone
    something sometimes such than that the their theirs them themselves then there these they this those though
    through throughout thus to together too toward towards under unless until up upon us very via was we well were
    what whatever when whenever where whereas wherever whether which while who whoever whole whom whose why will with
    within without would yet you your yours yourself yourselves
    s t d ll m re ve o y don doesn didn isn wasn aren weren hasn haven hadn couldn wouldn shouldn won mustn needn
    """.split()
)


@dataclass(frozen=True)
class Word:
    """One pre-tokenizer word: character span ``[start, end)`` and token span ``[token_start, token_end)``."""

    start: int
    end: int
    token_start: int
    token_end: int

    @property
    def n_pieces(self) -> int:
        """Number of sub-word tokens the word was split into."""
        return self.token_end - self.token_start


def split_words(
    text: str, word_ids: Sequence[Optional[int]], offsets: Sequence[Tuple[int, int]]
) -> List[Word]:
    """Group tokens by ``word_ids`` into :class:`Word` spans of ``text`` (leading/trailing spaces trimmed)."""
    words: List[Word] = []
    current, first = None, 0
    for idx, wid in enumerate(list(word_ids) + [None]):
        if wid == current and wid is not None:
            continue
        if current is not None:
            words.append(_make_word(text, offsets, first, idx))
        current, first = wid, idx
    return [w for w in words if w.end > w.start]


def _make_word(text: str, offsets: Sequence[Tuple[int, int]], first: int, stop: int) -> Word:
    start, end = offsets[first][0], offsets[stop - 1][1]
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Word(start=start, end=end, token_start=first, token_end=stop)


class WordFilter:
    """Decides which words may be replaced: alphabetic, 2+ letters, not a stop word, not punctuation.

    Stop-word and punctuation skipping is nlpaug's ``WordAugmenter.pre_skip_aug`` (a word list plus an optional
    ``stopwords_regex``); the alphabetic test follows TinyBERT's augmentation script.
    """

    def __init__(self, stop_words: Optional[Iterable[str]] = None, stopwords_regex: Optional[str] = None) -> None:
        self.stop_words = frozenset(w.lower() for w in (STOP_WORDS if stop_words is None else stop_words))
        self._nlpaug = WordAugmenter(
            action=Action.SUBSTITUTE, stopwords=self.stop_words, stopwords_regex=stopwords_regex
        )

    def eligible(self, words: Sequence[str]) -> List[bool]:
        """One flag per word: may it be replaced?"""
        lowered = [w.lower() for w in words]
        keep = set(self._nlpaug.pre_skip_aug(lowered))
        return [i in keep and len(w) >= 2 and w.isalpha() for i, w in enumerate(words)]


def match_case(original: str, candidate: str) -> str:
    """Give ``candidate`` the casing pattern of ``original`` (upper, capitalised, or unchanged)."""
    case = WordAugmenter.get_word_case(original)
    if case == "upper":
        return candidate.upper()
    if case == "capitalize":
        return candidate[:1].upper() + candidate[1:]
    return candidate
