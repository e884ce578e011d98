"""General distillation's training data: the lines of a plain-text file cut into ``[CLS] ... [SEP]`` windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..io import decode_utf8

PathLike = Union[str, Path]
MIN_WINDOWS = 8  # fewer text windows than this cannot teach a student anything


def read_texts(path: PathLike, min_words: int = 8) -> List[str]:
    """Lines of a plain-text file with at least ``min_words`` words; WikiText ``= Heading =`` lines dropped."""
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ValueError(f"texts {path} is a folder or a special file, not a plain-text file; pass one file, one "
                         "paragraph per line.")
    if not path.is_file():
        raise FileNotFoundError(f"texts file {path} not found; pass a plain-text file, one paragraph per line "
                                "(e.g. ../shared/data/wikitext-2/wiki.valid.tokens.txt).")
    raw = path.read_bytes()
    if b"\0" in raw[:65536]:
        raise ValueError(f"texts file {path} holds NUL bytes: it is a binary file, not text.")
    lines = [line.strip() for line in decode_utf8(raw, f"texts file {path}").splitlines()]
    return [line for line in lines if len(line.split()) >= min_words and not line.startswith("=")]


def text_windows(tokenizer: Any, texts: Sequence[str], max_seq_len: int,
                 stride: Optional[int] = None) -> Dict[str, Tensor]:
    """Tokenize ``texts`` into ``[CLS] ... [SEP]`` windows of at most ``max_seq_len`` tokens, padded.

    A line longer than one window is split into several (``stride`` tokens apart), never silently cut.

    Example:
        >>> from haystack_distill.general import text_windows
        >>> class Tok:  # a stand-in tokenizer: one id per word
        ...     cls_token_id, sep_token_id, pad_token_id = 1, 2, 0
        ...     def __call__(self, texts, add_special_tokens):
        ...         return {"input_ids": [[10 + len(w) for w in t.split()] for t in texts]}
        >>> text_windows(Tok(), ["a bb ccc dddd eeeee"], max_seq_len=5)["input_ids"].tolist()
        [[1, 11, 12, 13, 2], [1, 14, 15, 2, 0]]
    """
    body = max_seq_len - 2
    step = stride or body
    rows: List[List[int]] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        for start in range(0, max(1, len(ids) - body + step), step):
            piece = ids[start : start + body]
            if piece:
                rows.append([tokenizer.cls_token_id, *piece, tokenizer.sep_token_id])
            if start + body >= len(ids):
                break
    input_ids = torch.full((len(rows), max_seq_len), int(tokenizer.pad_token_id or 0), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), max_seq_len), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids)}
