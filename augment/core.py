"""TinyBERT-style augmentation of SQuAD contexts that keeps every answer.

For each context, words that may be replaced (alphabetic, not stop words, not punctuation, not inside
any answer or plausible answer) get candidates once: a single-piece word from a masked LM (top-K at its
masked position), a multi-piece word from GloVe nearest neighbours. Each of the N copies then replaces
each such word with probability p by a uniform choice among its candidates. Only the replaced words
change: casing and spacing elsewhere are the original's, and every ``answer_start`` is shifted by the
length changes before it, so each answer still matches its context.

Speed: one encoder pass masks about ``mask_fraction`` (default 15%, BERT's pre-training rate) of the tokens
at once, spread evenly over the context, instead of one pass per word; copies from all paragraphs of an
article share batches; only masked positions reach the vocabulary projection. ``mask_fraction=0`` masks one
word per pass, as TinyBERT and Haystack do.

nlpaug is used for the stop-word/punctuation filter and for word-case detection (see :mod:`augment.words`).

Example:
    >>> import tempfile, os, torch
    >>> from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast
    >>> d = tempfile.mkdtemp(); vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog",
    ...     "sat", "ran", "mat", "rug", "on", "."]
    >>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(vocab))
    >>> tok = BertTokenizerFast(vocab_file=os.path.join(d, "vocab.txt"))
    >>> _ = torch.manual_seed(0)
    >>> cfg = BertConfig(vocab_size=14, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=32)
    >>> glove = GloveTable(["cat", "dog"], [[1, 0], [1, 1]])
    >>> aug = SquadAugmenter(MaskedLMCandidates(BertForMaskedLM(cfg), tok), glove,
    ...                      AugmentSettings(multiplication_factor=3, replace_probability=1.0))
    >>> copies = aug.augment_context("The cat sat on the mat.", protected=[(4, 7)], seed=0)
    >>> [c[:8] for c in copies], all(c.endswith(".") and " on the " in c for c in copies)
    (['The cat ', 'The cat ', 'The cat '], True)
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from augment.glove import DEFAULT_VOCAB_SIZE, GloveTable
from augment.mlm import MaskedCopy, MaskedLMCandidates, load_masked_lm
from augment.squadio import ANSWER_KEYS
from augment.words import Word, WordFilter, match_case, split_words
from haystack_distill.devices import resolve_device

logger = logging.getLogger(__name__)

Span = Tuple[int, int]


@dataclass(frozen=True)
class AugmentSettings:
    """Everything that changes the augmented output besides the models and the input."""

    multiplication_factor: int = 20
    word_possibilities: int = 15
    replace_probability: float = 0.4
    batch_size: int = 32
    seed: int = 42
    keep_original: bool = False
    mask_fraction: float = 0.15
    max_seq_len: int = 512

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        checks = [
            (self.multiplication_factor >= 1, "multiplication_factor must be >= 1"),
            (self.word_possibilities >= 1, "word_possibilities must be >= 1"),
            (0.0 <= self.replace_probability <= 1.0, "replace_probability must be within [0, 1]"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0.0 <= self.mask_fraction <= 1.0, "mask_fraction must be within [0, 1]"),
            (self.max_seq_len >= 8, "max_seq_len must be >= 8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message} (got {asdict(self)})")


@dataclass
class Slot:
    """A replaceable word of a context and its candidate replacements (already cased like the word)."""

    start: int
    end: int
    candidates: List[str]


class SquadAugmenter:
    """Candidates from a masked LM and GloVe; copies of SQuAD paragraphs with answers kept."""

    def __init__(self, mlm: MaskedLMCandidates, glove: GloveTable, settings: Optional[AugmentSettings] = None,
                 word_filter: Optional[WordFilter] = None) -> None:
        self.settings = settings or AugmentSettings()
        self.settings.validate()
        self.mlm, self.glove = mlm, glove
        self.mlm.k, self.mlm.batch_size = self.settings.word_possibilities, self.settings.batch_size
        self.filter = word_filter or WordFilter()
        tok = mlm.tokenizer
        self._prefix, self._suffix = _special_affixes(tok)
        limits = [self.settings.max_seq_len, getattr(mlm.model.config, "max_position_embeddings", 512),
                  getattr(tok, "model_max_length", 512) or 512]
        # 2 spare positions: RoBERTa-style models start position ids after the padding index
        self.body_len = max(4, min(limits) - len(self._prefix) - len(self._suffix) - 2)

    @classmethod
    def from_pretrained(cls, model: str, tokenizer: Optional[str] = None, glove_path: Optional[str] = None,
                        device: Optional[Union[str, torch.device]] = None,
                        settings: Optional[AugmentSettings] = None, glove_vocab_size: int = DEFAULT_VOCAB_SIZE,
                        stopwords_regex: Optional[str] = None) -> SquadAugmenter:
        """Load the masked LM (a local folder or hub name) and GloVe (a file, or the optional package)."""
        settings = settings or AugmentSettings()
        settings.validate()
        device = resolve_device(device)
        word_filter = WordFilter(stopwords_regex=stopwords_regex)
        mlm_model, tok = load_masked_lm(model, tokenizer, device)
        if glove_path:
            glove = GloveTable.from_text(glove_path, glove_vocab_size, word_filter, device)
        else:
            glove = GloveTable.from_package(glove_vocab_size, word_filter, device)
        mlm = MaskedLMCandidates(mlm_model, tok, settings.word_possibilities, settings.batch_size, word_filter)
        return cls(mlm, glove, settings, word_filter)

    # ---- candidates -------------------------------------------------------------------------------------
    def find_slots(self, contexts: Sequence[str], protected: Sequence[Sequence[Span]]) -> List[List[Slot]]:
        """Replaceable words of each context with their candidates (MLM for single pieces, GloVe otherwise)."""
        tok = self.mlm.tokenizer
        enc = tok(list(contexts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        copies: List[MaskedCopy] = []
        owners: List[List[Tuple[int, Word]]] = []
        multi: List[Tuple[int, Word]] = []
        for p, text in enumerate(contexts):
            words = split_words(text, enc.word_ids(p), enc["offset_mapping"][p])
            flags = self.filter.eligible([text[w.start:w.end] for w in words])
            chosen = [w for w, ok in zip(words, flags) if ok and not _overlaps(w, protected[p])]
            multi += [(p, w) for w in chosen if w.n_pieces > 1]
            single = [w for w in chosen if w.n_pieces == 1]
            for copy, group in self._masked_copies(enc["input_ids"][p], words, single):
                copies.append(copy)
                owners.append([(p, w) for w in group])
        slots: List[List[Slot]] = [[] for _ in contexts]
        for copy_owners, ranked in zip(owners, self.mlm.predict(copies)):
            for (p, word), ids in zip(copy_owners, ranked):
                original = contexts[p][word.start:word.end]
                texts = [self.mlm.token_text(i) for i in ids]
                self._add_slot(slots[p], word, original, texts)
        neighbours = self.glove.neighbours({contexts[p][w.start:w.end] for p, w in multi},
                                           self.settings.word_possibilities)
        for p, word in multi:
            original = contexts[p][word.start:word.end]
            self._add_slot(slots[p], word, original, neighbours.get(original, []))
        for row in slots:
            row.sort(key=lambda s: s.start)
        return slots

    @staticmethod
    def _add_slot(row: List[Slot], word: Word, original: str, texts: List[str]) -> None:
        seen, cands = {original.lower()}, []
        for text in texts:
            if text.lower() not in seen:
                seen.add(text.lower())
                cands.append(match_case(original, text))
        if cands:
            row.append(Slot(word.start, word.end, cands))

    def _masked_copies(self, ids: List[int], words: List[Word], single: List[Word]):
        """Yield (copy, masked words) covering every single-piece word, within ``body_len`` token chunks."""
        mask_id = self.mlm.tokenizer.mask_token_id
        for lo, hi in _chunks(words, self.body_len):
            inside = [w for w in single if lo <= w.token_start < hi]
            if not inside:
                continue
            per_copy = max(1, int(self.settings.mask_fraction * (hi - lo)))
            n_groups = math.ceil(len(inside) / per_copy)
            for g in range(n_groups):
                group = inside[g::n_groups]
                body = list(ids[lo:hi])
                for w in group:
                    body[w.token_start - lo] = mask_id
                positions = [len(self._prefix) + w.token_start - lo for w in group]
                copy = MaskedCopy(self._prefix + body + self._suffix, positions, [ids[w.token_start] for w in group])
                yield copy, group

    # ---- copies ---------------------------------------------------------------------------------------
    def sample(self, context: str, slots: Sequence[Slot], rng: random.Random) -> Tuple[str, List[Tuple[int, int, str]]]:
        """One augmented copy: (text, replacements as (start, end, new word))."""
        p = self.settings.replace_probability
        replacements = []
        for slot in slots:
            if rng.random() < p:
                replacements.append((slot.start, slot.end, slot.candidates[rng.randrange(len(slot.candidates))]))
        pieces, cursor = [], 0
        for start, end, new in replacements:
            pieces += [context[cursor:start], new]
            cursor = end
        pieces.append(context[cursor:])
        return "".join(pieces), replacements

    def augment_context(self, context: str, protected: Sequence[Span] = (), seed: int = 0) -> List[str]:
        """``multiplication_factor`` augmented versions of one text (duplicates included), never touching
        the character spans in ``protected``."""
        slots = self.find_slots([context], [list(protected)])[0]
        rng = random.Random(f"{seed}")
        return [self.sample(context, slots, rng)[0] for _ in range(self.settings.multiplication_factor)]

    def augment_article(self, article: Dict[str, Any], article_index: int) -> Tuple[Dict[str, Any], Counter]:
        """Augmented copy of one SQuAD article (answers checked beforehand) and its counters."""
        paragraphs = article["paragraphs"]
        contexts = [p["context"] for p in paragraphs]
        protected = [_answer_spans(p) for p in paragraphs]
        all_slots = self.find_slots(contexts, protected) if contexts else []  # an article may have no paragraphs
        rng = random.Random(f"haystack-distill-augment/{self.settings.seed}/{article_index}")
        stats: Counter = Counter(articles=1)
        out_paragraphs = []
        for para, slots in zip(paragraphs, all_slots):
            stats.update(paragraphs_in=1, slots=len(slots))
            out_paragraphs += self._augment_paragraph(para, slots, rng, stats)
        stats["paragraphs_out"] = len(out_paragraphs)
        stats["questions_out"] = sum(len(p["qas"]) for p in out_paragraphs)
        return {**article, "paragraphs": out_paragraphs}, stats

    def _augment_paragraph(self, para: Dict[str, Any], slots: List[Slot], rng: random.Random,
                           stats: Counter) -> List[Dict[str, Any]]:
        context = para["context"]
        out = [para] if self.settings.keep_original else []
        seen = {context}
        for k in range(1, self.settings.multiplication_factor + 1):
            text, replacements = self.sample(context, slots, rng)
            if text in seen:
                stats["duplicates_dropped"] += 1
                continue
            seen.add(text)
            stats["words_replaced"] += len(replacements)
            out.append(_shifted_paragraph(para, text, replacements, f"_aug{k}"))
        return out


def _special_affixes(tokenizer: Any) -> Tuple[List[int], List[int]]:
    """Special-token ids the tokenizer puts before and after a single sequence."""
    plain = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello world", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


def _chunks(words: Sequence[Word], limit: int) -> List[Tuple[int, int]]:
    """Token ranges of at most ``limit`` tokens that never split a word (a longer word is cut)."""
    ranges, lo = [], None
    for w in words:
        if lo is None:
            lo = w.token_start
        if w.token_end - lo > limit and w.token_start > lo:
            ranges.append((lo, w.token_start))
            lo = w.token_start
        while w.token_end - lo > limit:
            ranges.append((lo, lo + limit))
            lo += limit
    if lo is not None and words and words[-1].token_end > lo:
        ranges.append((lo, words[-1].token_end))
    return ranges


def _answer_spans(para: Dict[str, Any]) -> List[Span]:
    return [(a["answer_start"], a["answer_start"] + len(a["text"]))
            for qa in para["qas"] for key in ANSWER_KEYS for a in qa.get(key, [])]


def _overlaps(word: Word, spans: Sequence[Span]) -> bool:
    return any(word.start < end and start < word.end for start, end in spans)


def _shifted_paragraph(para: Dict[str, Any], text: str, replacements: List[Tuple[int, int, str]],
                       suffix: str) -> Dict[str, Any]:
    ends = [end for _, end, _ in replacements]
    shifts = [0]
    for start, end, new in replacements:
        shifts.append(shifts[-1] + len(new) - (end - start))

    def move(offset: int) -> int:
        return offset + shifts[bisect.bisect_right(ends, offset)]

    qas = []
    for qa in para["qas"]:
        new_qa = {**qa, "id": f"{qa['id']}{suffix}"}
        for key in ANSWER_KEYS:
            if key in qa:
                new_qa[key] = [{**a, "answer_start": move(a["answer_start"])} for a in qa[key]]
                for a in new_qa[key]:
                    if text[a["answer_start"]:a["answer_start"] + len(a["text"])] != a["text"]:
                        raise AssertionError(f"internal error: answer {a['text']!r} of {qa['id']} moved wrongly")
        qas.append(new_qa)
    return {**para, "context": text, "qas": qas}
