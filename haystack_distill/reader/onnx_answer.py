"""Haystack 1.x's answers from an ONNX reader export, in onnxruntime alone (no torch, transformers or Haystack).

:class:`OnnxReader` takes a folder written by ``export-reader --format onnx [--int8]`` and decodes like
``FARMReader`` (``top_k_per_sample=1``, no answer off):

- the question (at most ``max_query_length`` tokens) and the context are tokenized apart, the context with
  character offsets; the context is cut into Haystack's windows: as many context tokens as fit beside the question
  in ``max_seq_len``, a new window every ``doc_stride`` tokens, until one reaches the end;
- each window runs alone and unpadded, so int8 logits depend neither on padding nor on the other windows;
- a window's answer is its span with the highest start + end logit (start and end in the context, end >= start,
  no length limit, as in Haystack); the windows' answers compete by Haystack's confidence, the mean of the start
  and the end softmax probability over the window (spans found twice keep the higher-scoring window's);
- the answer is the context's own text from the start of the first token to the start of the token after the
  last, stripped, with its character offsets (not decoded token ids).

Haystack pads every window to ``max_seq_len`` and its softmax counts the padding positions too. So for a context
of several windows the last, shorter window also runs once padded, for those positions' logits only (they can
change which window wins; the span scores stay the unpadded run's). A one-window context skips that run (its
answer cannot change), so its score leaves the padding out and can be a little higher than Haystack's.

Example (with your own export):
    >>> reader = OnnxReader("models/student-int8", max_seq_len=256, doc_stride=128)        # doctest: +SKIP
    >>> reader.predict("Where was Nadia born?", "Nadia was born in Paris, France, in 1990.")  # doctest: +SKIP
    [Answer(text='Paris, France', start=18, end=31, score=0.87)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

ONNX_FILE = "model.onnx"
PathLike = Union[str, Path]


@dataclass(frozen=True)
class Answer:
    """An answer: the context's text ``context[start:end]`` and Haystack's confidence ``score`` (0..1)."""

    text: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Layout:
    """Where a tokenizer puts its special tokens around a question/context pair, and their token types."""

    prefix: Tuple[int, ...]
    middle: Tuple[int, ...]
    suffix: Tuple[int, ...]
    types: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]  # of prefix, middle, suffix
    question_type: int
    context_type: int

    def build(self, question: Sequence[int], passage: Sequence[int]) -> Tuple[List[int], List[int], int]:
        """``(input_ids, token_type_ids, position of the first passage token)``, like Haystack's inputs."""
        ids = [*self.prefix, *question, *self.middle, *passage, *self.suffix]
        prefix_t, middle_t, suffix_t = self.types
        types = [*prefix_t, *[self.question_type] * len(question), *middle_t,
                 *[self.context_type] * len(passage), *suffix_t]
        return ids, types, len(self.prefix) + len(question) + len(self.middle)

    @property
    def n_special(self) -> int:
        """Special tokens added to a pair (3 for BERT: [CLS] q [SEP] p [SEP])."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def pair_layout(tokenizer: Any) -> Layout:
    """The special-token layout of a ``tokenizers.Tokenizer``, read from its own encoding of a pair.

    Example:
        >>> from tokenizers import Tokenizer, models, processors
        >>> tok = Tokenizer(models.WordLevel({"[CLS]": 0, "[SEP]": 1, "a": 2, "b": 3}, unk_token="a"))
        >>> tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
        ...     pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 0), ("[SEP]", 1)])
        >>> pair_layout(tok).build([2, 2], [3])
        ([0, 2, 2, 1, 3, 1], [0, 0, 0, 0, 1, 1], 4)
    """
    pair = tokenizer.encode("a", "b", add_special_tokens=True)
    sequence = pair.sequence_ids
    first = [i for i, s in enumerate(sequence) if s == 0]
    second = [i for i, s in enumerate(sequence) if s == 1]
    if not first or not second:
        raise ValueError("the tokenizer's post-processor does not join a question/context pair; export the reader "
                         "again with a fast tokenizer (tokenizer.json).")
    ids, types = pair.ids, pair.type_ids
    prefix, middle, suffix = slice(0, first[0]), slice(first[-1] + 1, second[0]), slice(second[-1] + 1, len(ids))
    return Layout(tuple(ids[prefix]), tuple(ids[middle]), tuple(ids[suffix]),
                  types=(tuple(types[prefix]), tuple(types[middle]), tuple(types[suffix])),
                  question_type=types[first[0]], context_type=types[second[0]])


def context_windows(n_tokens: int, passage_len: int, doc_stride: int) -> List[Tuple[int, int]]:
    """Haystack's windows over ``n_tokens`` context tokens: ``[start, end)`` every ``doc_stride`` tokens, each
    ``passage_len`` long, the last one cut at the end.

    Example:
        >>> context_windows(100, 60, 32)
        [(0, 60), (32, 92), (64, 100)]
    """
    windows, start = [], 0
    while True:
        windows.append((start, min(start + passage_len, n_tokens)))
        if start + passage_len >= n_tokens:
            return windows
        start += doc_stride


def best_span(start_logits: np.ndarray, end_logits: np.ndarray) -> Tuple[int, int, float]:
    """``(start, end, start + end logit)`` of the best span with ``end >= start`` (indices into the arguments).

    Example:
        >>> best_span(np.array([0.0, 2.0, 1.0]), np.array([1.0, 0.0, 3.0]))
        (1, 2, 5.0)
    """
    scores = start_logits[:, None] + end_logits[None, :]
    scores[np.tril_indices_from(scores, -1)] = -np.inf
    start, end = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(start), int(end), float(scores[start, end])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64 (stable).

    Example:
        >>> softmax(np.array([0.0, 0.0])).tolist()
        [0.5, 0.5]
    """
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    return shifted / shifted.sum()


def span_text(context: str, token_starts: Sequence[int], start: int, end: int) -> Tuple[str, int, int]:
    """Haystack's answer text of context tokens ``start..end``: from the start of token ``start`` to the start of
    token ``end + 1`` (the context's end after the last token), stripped, with its character offsets.

    Example:
        >>> span_text("born in Paris, France.", [0, 5, 8, 13, 15, 21], 2, 4)
        ('Paris, France', 8, 21)
    """
    start_ch = int(token_starts[start])
    end_ch = int(token_starts[end + 1]) if end + 1 < len(token_starts) else len(context)
    text = context[start_ch:end_ch]
    stripped = text.strip()
    start_ch += len(text) - len(text.lstrip())
    return stripped, start_ch, start_ch + len(stripped)


def onnx_session(path: PathLike, threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session for ``model.onnx`` (or a folder holding it); ``threads`` caps intra-op threads.

    Example:
        >>> session = onnx_session("models/student-int8", threads=1)                    # doctest: +SKIP
    """
    import onnxruntime

    path = Path(path)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path / ONNX_FILE if path.is_dir() else path), options,
                                        providers=["CPUExecutionProvider"])


def pad_token_id(folder: Path, tokenizer: Any) -> int:
    """The pad token's id from the folder's ``tokenizer_config.json`` (or ``config.json``'s ``pad_token_id``)."""
    config = folder / "tokenizer_config.json"
    token = json.loads(config.read_text()).get("pad_token") if config.is_file() else None
    token = token.get("content") if isinstance(token, dict) else token
    pad_id = tokenizer.token_to_id(token) if token else None
    if pad_id is None and (folder / "config.json").is_file():
        pad_id = json.loads((folder / "config.json").read_text()).get("pad_token_id")
    if pad_id is None:
        raise ValueError(f"{folder} names no pad token (tokenizer_config.json pad_token or config.json "
                         "pad_token_id); export the reader again with export-reader.")
    return int(pad_id)


class OnnxReader:
    """An ONNX reader export answering like Haystack 1.x's ``FARMReader`` with the same ``max_seq_len``,
    ``doc_stride`` and ``max_query_length`` (see the module docstring for the decoding).

    Example (with your own export):
        >>> reader = OnnxReader("models/student-int8", threads=1)                            # doctest: +SKIP
        >>> reader.predict("Where was Nadia born?", "Nadia was born in Paris, France, in 1990.")  # doctest: +SKIP
        [Answer(text='Paris, France', start=18, end=31, score=0.87)]
    """

    def __init__(self, folder: PathLike, max_seq_len: int = 256, doc_stride: int = 128, max_query_length: int = 64,
                 threads: Optional[int] = None) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / ONNX_FILE).is_file() or not (folder / "tokenizer.json").is_file():
            raise ValueError(f"{folder} holds no {ONNX_FILE} and tokenizer.json; pass a folder written by "
                             "haystack-distill export-reader --format onnx.")
        if doc_stride >= max_seq_len - max_query_length:
            raise ValueError(f"doc_stride={doc_stride} must be smaller than max_seq_len - max_query_length = "
                             f"{max_seq_len - max_query_length}, or the windows leave gaps; pass a smaller "
                             "doc_stride (Haystack refuses it too).")
        self.max_seq_len, self.doc_stride, self.max_query_length = max_seq_len, doc_stride, max_query_length
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.layout = pair_layout(self.tokenizer)
        self.pad_id = pad_token_id(folder, self.tokenizer)
        self.session = onnx_session(folder, threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def logits(self, ids: List[int], types: List[int], pad_to: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Start and end logits of one window (batch of one), padded to ``pad_to`` tokens when longer."""
        n_pad = max(0, pad_to - len(ids))
        feed = {"input_ids": ids + [self.pad_id] * n_pad, "attention_mask": [1] * len(ids) + [0] * n_pad,
                "token_type_ids": types + [0] * n_pad}
        start, end = self.session.run(["start_logits", "end_logits"],
                                      {k: np.array([v], dtype=np.int64) for k, v in feed.items() if k in self.inputs})
        return start[0], end[0]

    def window_answer(self, question: List[int], passage: List[int], pad: bool) -> Tuple[int, int, float, float]:
        """``(start, end, score, confidence)`` of a window's best span (token indices into ``passage``); ``pad``
        adds the padding positions' logits (from a padded run) to the softmax, as Haystack does."""
        ids, types, first = self.layout.build(question, passage)
        start_logits, end_logits = self.logits(ids, types)
        start, end, score = best_span(start_logits[first:first + len(passage)], end_logits[first:first + len(passage)])
        if pad and len(ids) < self.max_seq_len:
            padded_start, padded_end = self.logits(ids, types, pad_to=self.max_seq_len)
            start_logits = np.concatenate([start_logits, padded_start[len(ids):]])
            end_logits = np.concatenate([end_logits, padded_end[len(ids):]])
        confidence = (softmax(start_logits)[first + start] + softmax(end_logits)[first + end]) / 2
        return start, end, score, float(confidence)

    def predict(self, question: str, context: str, top_k: int = 1) -> List[Answer]:
        """The ``top_k`` best answers in ``context``, best first (``[]`` for an empty context)."""
        question_ids = self.tokenizer.encode(question, add_special_tokens=False).ids[:self.max_query_length]
        document = self.tokenizer.encode(context, add_special_tokens=False)
        if not context or not document.ids:
            return []
        passage_len = self.max_seq_len - len(question_ids) - self.layout.n_special
        windows = context_windows(len(document.ids), passage_len, self.doc_stride)
        spans: Dict[Tuple[int, int], Tuple[float, float]] = {}  # (start, end) in the context -> score, confidence
        for first, last in windows:
            start, end, score, confidence = self.window_answer(question_ids, document.ids[first:last],
                                                               pad=len(windows) > 1)
            key = (first + start, first + end)
            if key not in spans or score > spans[key][0]:
                spans[key] = (score, confidence)
        token_starts = [offset[0] for offset in document.offsets]
        ranked = sorted(spans.items(), key=lambda item: item[1][1], reverse=True)
        answers = [Answer(*span_text(context, token_starts, s, e), score=c) for (s, e), (_, c) in ranked]
        return [a for a in answers if a.text][:top_k]
