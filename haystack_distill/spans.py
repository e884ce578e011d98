"""The best answer span of start/end logits and its probability: the teacher's pseudo-labels. No Haystack import.

A span ``(s, e)`` scores ``log p_start(s) + log p_end(e)`` under softmaxes over the valid positions; it must
have ``s <= e < s + max_answer_length``, and position 0 (the no-answer position of Haystack's QA head) pairs
only with itself. Its probability ``p_start(s) * p_end(e)`` decides whether it becomes a label.

Example:
    >>> import torch
    >>> logits = torch.full((1, 4, 2), -5.0)
    >>> logits[0, 2, 0] = logits[0, 3, 1] = 5.0        # start at 2, end at 3
    >>> spans, prob = best_spans(logits, torch.ones(1, 4, dtype=torch.bool))
    >>> spans.tolist(), round(float(prob), 3)
    ([[2, 3]], 1.0)
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

MAX_ANSWER_LENGTH = 30  # tokens; SQuAD answers are rarely longer


def best_spans(logits: Tensor, valid: Tensor, max_answer_length: int = MAX_ANSWER_LENGTH) -> Tuple[Tensor, Tensor]:
    """Most probable span per row of ``[B, S, 2]`` start/end ``logits`` over ``valid`` ``[B, S]`` positions.

    Returns ``([B, 2] start/end positions, [B] probabilities)``.
    """
    logits, valid = logits.detach().float(), valid.bool()
    log_p = torch.log_softmax(logits.masked_fill(~valid[..., None], -torch.inf), dim=1)  # [B, S, 2]
    scores = log_p[:, :, None, 0] + log_p[:, None, :, 1]  # [B, start, end]
    seq_len = logits.shape[1]
    start, end = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None, :]
    allowed = (start <= end) & (end < start + max_answer_length) & ((start == 0) == (end == 0))
    scores = scores.masked_fill(~allowed.to(scores.device), -torch.inf).flatten(1)
    best, index = scores.max(dim=1)
    spans = torch.stack([index // seq_len, index % seq_len], dim=1)
    return spans, best.exp().nan_to_num(0.0)
