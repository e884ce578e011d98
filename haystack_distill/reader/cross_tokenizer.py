"""Prediction-layer KD between readers with different tokenizers (``tokenizer_alignment="offsets"``).

How one student training feature (a question and one ``doc_stride`` window of its context, as Haystack's
``SquadProcessor`` cut it with the *student's* tokenizer) gets its teacher targets:

1. The window's characters: the student tokenizes the whole context without special tokens, exactly as
   Haystack's ``tokenize_batch_question_answering`` does; the feature's ``passage_start_t`` and its number of
   passage tokens pick the window's tokens, whose offsets give the character span ``[w0, w1)``.
2. The teacher reads ``(question, window)`` in its own tokenization, built as Haystack builds its inputs:
   the teacher tokenizes the whole context once (no special tokens, with offsets), and the window's teacher
   tokens are those overlapping ``[w0, w1)``, so a word cut by the window edge keeps the teacher's
   in-document split (and a byte-level BPE keeps its leading-space tokens). The question is cut to the
   teacher reader's ``max_query_length`` tokens; only the context is truncated, to the teacher reader's
   ``max_seq_len``, and the characters of a truncated tail get no teacher mass (the teacher never saw them).
   Windows are matched one to one: the teacher never sees another ``doc_stride`` window of the document.
   The only teacher mass that can fall outside the student's window is a start on a teacher token that
   straddles ``w0`` (or an end on one straddling ``w1``); it goes to the student's no-answer position.
3. Teacher start/end probabilities: softmax over its no-answer position and context tokens only.
4. :func:`haystack_distill.reader.alignment.align_span_probs` moves them to the student's window tokens through the
   original characters (gap characters: starts to the next token, ends to the previous one; no-answer to
   no-answer). Different normalisation (casing, accents, byte-level BPE) does not matter: every offset points
   into the original context.
5. The row written is ``log p`` on the student's no-answer position (0) and window tokens, and
   :data:`~haystack_distill.reader.alignment.LOG_ZERO` (-1e4) elsewhere and wherever ``p == 0``. ``span_kd_loss``
   then takes ``softmax(log p / T)`` over the student's ``span_mask``, i.e. the aligned distribution at T=1.

Rows are computed once and cached fp16 on disk like the same-tokenizer path
(:func:`haystack_distill.teacher_cache.cached_outputs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .alignment import LOG_ZERO, align_span_probs, log_probs
from .config import ALIGNMENTS
from .targets import cached_targets

logger = logging.getLogger(__name__)

#: Bump when the way rows are computed changes, so old caches are not reused.
ALIGNMENT_VERSION = 1


def _tokenizer(reader: Any) -> Any:
    return reader.inferencer.processor.tokenizer


def check_alignable(teacher: Any, student: Any, tokenizer_alignment: str, distillation_loss: Any = None) -> None:
    """Raise before any data work unless ``tokenizer_alignment`` is known and both tokenizers give offsets.

    ``distillation_loss="mse"`` is refused too: the aligned targets are log-probabilities with
    :data:`~haystack_distill.reader.alignment.LOG_ZERO` where the teacher puts no mass (e.g. a student token inside a
    teacher word), which a softmax ignores but a squared error on logits would chase.

    Example:
        >>> check_alignable(None, None, "words")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: tokenizer_alignment='words' is not supported; use one of ('offsets',) ...
    """
    if tokenizer_alignment not in ALIGNMENTS:
        raise ValueError(f"tokenizer_alignment={tokenizer_alignment!r} is not supported; use one of {ALIGNMENTS} "
                         "(or None for teacher and student sharing one tokenizer).")
    if isinstance(distillation_loss, str) and distillation_loss == "mse":
        raise ValueError("distillation_loss='mse' does not work with tokenizer_alignment: the aligned teacher targets "
                         "are log-probabilities, not logits; use 'kl_div' or 'soft_ce'.")
    if teacher is None:
        raise ValueError("teacher_model is required: pass a FARMReader holding the fine-tuned teacher.")
    for role, reader in (("teacher", teacher), ("student", student)):
        tokenizer = _tokenizer(reader)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"tokenizer_alignment='offsets' needs character offsets, but the {role}'s tokenizer "
                f"({type(tokenizer).__name__}) is a slow (Python) tokenizer without offset mappings; load the "
                f"{role} with a fast tokenizer (use_fast=True, e.g. FARMReader(..., use_fast=True) or "
                "AutoTokenizer.from_pretrained(path, use_fast=True)), converting it with the `tokenizers` "
                "library if the model ships none.")


@dataclass(frozen=True)
class Special:
    """Where a tokenizer puts its special tokens around ``(question, context)``: counts before, between, after."""

    start: int
    mid: int
    end: int

    @classmethod
    def of(cls, tokenizer: Any) -> Special:
        """Measured like Haystack's ``SquadProcessor._initialize_special_tokens_count``."""
        ids = tokenizer.build_inputs_with_special_tokens([-1], [-2])
        start, second = ids.index(-1), ids.index(-2)
        return cls(start=start, mid=second - start - 1, end=len(ids) - second - 1)


@dataclass
class TeacherInput:
    """One teacher sequence and where its context tokens sit, with their offsets in the original context."""

    input_ids: List[int]
    segment_ids: List[int]
    context_start: int
    context_offsets: np.ndarray
    truncated: int = 0


def build_teacher_input(tokenizer: Any, special: Special, question: str, document: Tuple[List[int], np.ndarray],
                        window: Tuple[int, int], max_seq_len: int, max_query_length: int) -> TeacherInput:
    """The teacher's sequence for ``question`` and the character window ``[w0, w1)`` of a context.

    Args:
        tokenizer, special: the teacher's fast tokenizer and its :class:`Special` layout.
        question: the question text (cut to ``max_query_length`` tokens, as Haystack does).
        document: the teacher's ``(ids, offsets)`` of the whole context, without special tokens.
        window: the student window's characters; teacher tokens overlapping it are kept, in document order,
            and truncated to fit ``max_seq_len``.
    """
    doc_ids, doc_offsets = document
    w0, w1 = window
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"][:max_query_length]
    room = max_seq_len - len(q_ids) - special.start - special.mid - special.end
    if room < 1:
        raise ValueError(f"the teacher's max_seq_len={max_seq_len} leaves no room for context after a "
                         f"{len(q_ids)}-token question; raise the teacher reader's max_seq_len or lower its "
                         "max_query_length.")
    inside = np.flatnonzero((doc_offsets[:, 0] < w1) & (doc_offsets[:, 1] > w0))
    first, stop = (int(inside[0]), min(int(inside[-1]) + 1, int(inside[0]) + room)) if len(inside) else (0, 0)
    c_ids = list(doc_ids[first:stop])
    return TeacherInput(input_ids=tokenizer.build_inputs_with_special_tokens(q_ids, c_ids),
                        segment_ids=tokenizer.create_token_type_ids_from_sequences(q_ids, c_ids),
                        context_start=special.start + len(q_ids) + special.mid,
                        context_offsets=doc_offsets[first:stop],
                        truncated=int(inside[-1]) + 1 - stop if len(inside) else 0)


def teacher_span_probs(model: Any, inputs: Sequence[TeacherInput], special: Special, pad_id: int,
                       device: torch.device) -> List[Tuple[np.ndarray, np.ndarray, Tuple[float, float]]]:
    """Run the teacher on a batch; per input: start and end probabilities of its context tokens and no-answer.

    The softmax covers only the no-answer position(s) (the ``special.start`` leading tokens) and the context.
    """
    length = max(len(x.input_ids) for x in inputs)
    ids = torch.full((len(inputs), length), pad_id, dtype=torch.long)
    segments = torch.zeros_like(ids)
    padding = torch.zeros_like(ids)
    valid = torch.zeros((len(inputs), length), dtype=torch.bool)
    for row, x in enumerate(inputs):
        ids[row, : len(x.input_ids)] = torch.tensor(x.input_ids)
        segments[row, : len(x.segment_ids)] = torch.tensor(x.segment_ids)
        padding[row, : len(x.input_ids)] = 1
        valid[row, : special.start] = True
        valid[row, x.context_start : x.context_start + len(x.context_offsets)] = True
    with torch.inference_mode():
        logits = model.forward(input_ids=ids.to(device), segment_ids=segments.to(device),
                               padding_mask=padding.to(device))[0].float().cpu()
    probs = torch.softmax(logits.masked_fill(~valid.unsqueeze(-1), float("-inf")), dim=1).numpy()
    out = []
    for row, x in enumerate(inputs):
        span = probs[row, x.context_start : x.context_start + len(x.context_offsets)]
        no_answer = probs[row, : special.start].sum(0)
        out.append((span[:, 0], span[:, 1], (float(no_answer[0]), float(no_answer[1]))))
    return out


class Documents:
    """A tokenizer's ``(ids, offsets)`` of whole contexts without special tokens, as Haystack tokenizes them."""

    def __init__(self, tokenizer: Any, paragraphs: List[Dict[str, Any]], keep: int = 8) -> None:
        self.tokenizer, self.paragraphs, self.keep = tokenizer, paragraphs, keep
        self._cache: Dict[int, Tuple[List[int], np.ndarray]] = {}

    def __getitem__(self, p_idx: int) -> Tuple[List[int], np.ndarray]:
        if p_idx not in self._cache:
            if len(self._cache) >= self.keep:  # features come paragraph by paragraph: a few suffice
                self._cache.clear()
            encoded = self.tokenizer(self.paragraphs[p_idx]["context"], add_special_tokens=False,
                                     return_offsets_mapping=True)
            offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            self._cache[p_idx] = (encoded["input_ids"], offsets)
        return self._cache[p_idx]


@dataclass
class StudentWindow:
    """One student feature: its paragraph, question, first passage position and passage-token offsets."""

    paragraph: int
    question: str
    seq_2_start: int
    offsets: np.ndarray

    @property
    def chars(self) -> Tuple[int, int]:
        """``[w0, w1)``: first character of the first passage token to the end of the last."""
        covering = self.offsets[self.offsets[:, 1] > self.offsets[:, 0]]
        return (int(covering[0, 0]), int(covering[-1, 1])) if len(covering) else (0, 0)


def student_window(features: Dict[str, torch.Tensor], row: int, paragraphs: List[Dict[str, Any]],
                   documents: Documents) -> StudentWindow:
    """Recover feature ``row``'s window from the student's whole-context tokenization (checked against its ids)."""
    p_idx, q_idx, _ = (int(v) for v in features["id"][row])
    if not 0 <= p_idx < len(paragraphs):
        raise ValueError(f"feature {row} points at paragraph {p_idx}, but {len(paragraphs)} paragraphs were "
                         "passed; pass the paragraphs the features were made from, in the same order.")
    seq2, first = int(features["seq_2_start_t"][row]), int(features["passage_start_t"][row])
    n_tokens = int(features["span_mask"][row, seq2:].sum())
    doc_ids, doc_offsets = documents[p_idx]
    if list(doc_ids[first : first + n_tokens]) != features["input_ids"][row, seq2 : seq2 + n_tokens].tolist():
        raise ValueError(f"feature {row}'s passage tokens differ from the student tokenizer's tokenization of "
                         f"paragraph {p_idx}; the features must come from a SquadProcessor on the student's "
                         "tokenizer and these paragraphs.")
    return StudentWindow(paragraph=p_idx, question=paragraphs[p_idx]["qas"][q_idx]["question"], seq_2_start=seq2,
                         offsets=doc_offsets[first : first + n_tokens])


def feature_row(aligned: Any, seq2: int, seq_len: int) -> np.ndarray:
    """``[seq_len, 2]`` log-probabilities: no-answer at 0, window tokens from ``seq2``, LOG_ZERO elsewhere."""
    row = np.full((seq_len, 2), LOG_ZERO, dtype=np.float32)
    row[0] = log_probs(aligned.no_answer)
    n = len(aligned.start)
    row[seq2 : seq2 + n, 0] = log_probs(aligned.start)
    row[seq2 : seq2 + n, 1] = log_probs(aligned.end)
    return row


def _teacher_settings(teacher: Any) -> Tuple[int, int]:
    processor = teacher.inferencer.processor
    max_seq_len = getattr(teacher, "max_seq_len", None) or processor.max_seq_len
    max_query_length = getattr(teacher, "max_query_length", None) or processor.max_query_length
    return int(max_seq_len), int(max_query_length)


def aligned_rows(teacher: Any, student: Any, features: Dict[str, torch.Tensor], paragraphs: List[Dict[str, Any]],
                 batch_size: int, device: torch.device, show_progress: bool = True,
                 rows: Optional[Tuple[int, int]] = None) -> Iterator[np.ndarray]:
    """Yield ``[batch, student_seq_len, 2]`` aligned teacher log-probabilities, feature by feature in order (of the
    features ``rows = (first, last)`` only, given; batches start at ``first``)."""
    from tqdm.auto import tqdm

    t_tok, model = _tokenizer(teacher), teacher.inferencer.model
    special, (max_seq_len, max_query_length) = Special.of(t_tok), _teacher_settings(teacher)
    student_docs, teacher_docs = Documents(_tokenizer(student), paragraphs), Documents(t_tok, paragraphs)
    seq_len = features["input_ids"].shape[1]
    first, last = rows or (0, len(features["input_ids"]))
    model.to(device).eval()
    truncated = 0
    for start in tqdm(range(first, last, batch_size), desc="teacher pass (aligned)", disable=not show_progress):
        windows = [student_window(features, row, paragraphs, student_docs)
                   for row in range(start, min(start + batch_size, last))]
        inputs = [build_teacher_input(t_tok, special, w.question, teacher_docs[w.paragraph], w.chars, max_seq_len,
                                      max_query_length) for w in windows]
        truncated += sum(x.truncated > 0 for x in inputs)
        probs = teacher_span_probs(model, inputs, special, t_tok.pad_token_id or 0, device)
        out = np.empty((len(inputs), seq_len, 2), dtype=np.float32)
        for i, ((p_start, p_end, p_none), x, w) in enumerate(zip(probs, inputs, windows)):
            aligned = align_span_probs(p_start, p_end, p_none, x.context_offsets, w.offsets)
            out[i] = feature_row(aligned, w.seq_2_start, seq_len)
        yield out
    if truncated:
        logger.warning("%d of %d windows were longer than the teacher's max_seq_len=%d allows; their tails got no "
                       "teacher mass (raise the teacher reader's max_seq_len to avoid it)", truncated, last - first,
                       max_seq_len)


def aligned_teacher_logits(teacher: Any, student: Any, features: Dict[str, torch.Tensor],
                           paragraphs: List[Dict[str, Any]], batch_size: int, device: torch.device, cache_dir: Path,
                           key: Dict[str, Any], stats: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """Teacher targets on the student's positions, ``[n_features, student_max_seq_len, 2]`` fp16 log-probs.

    Computed once (under torchrun each rank a contiguous share of whole batches) and memory-mapped from
    ``cache_dir`` under ``key`` plus the teacher's own sequence settings; see the module docstring for how windows
    are matched and mass is moved.

    Args:
        teacher, student: readers (``FARMReader``-like, with fast tokenizers; see :func:`check_alignable`).
        features: the student's training features (``input_ids``, ``span_mask``, ``id``, ``passage_start_t``,
            ``seq_2_start_t``, ...) from a ``SquadProcessor`` on the student's tokenizer.
        paragraphs: the SQuAD paragraphs the features were made from (``id[:, 0]`` indexes them).
        batch_size: teacher batch size.
        device: where the teacher runs.
        cache_dir, key: cache folder and key fields (teacher weights, tokenizers, data, sequence settings).
        stats: gets ``teacher_rows``, the rows this process computed (see :func:`.targets.cached_outputs_all_ranks`).
    """
    n_rows, seq_len = features["input_ids"].shape
    max_seq_len, max_query_length = _teacher_settings(teacher)
    full_key = {**key, "teacher_max_seq_len": max_seq_len, "teacher_max_query_length": max_query_length,
                "alignment_version": ALIGNMENT_VERSION}

    def produce(first: int, last: int) -> Iterator[np.ndarray]:
        return aligned_rows(teacher, student, features, paragraphs, batch_size, device, rows=(first, last))

    return cached_targets(cache_dir, full_key, n_rows, (seq_len, 2), produce, "aligned teacher targets",
                          unit=batch_size, stats=stats)
