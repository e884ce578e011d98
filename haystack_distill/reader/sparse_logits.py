"""Top-k compression of teacher span logits: a teacher cache at a small fraction of the dense size.

Each row (one feature's start or end logits over ``S`` positions) keeps its ``k`` largest valid logits and their
positions, plus one fill value for every other valid position. The fill is chosen so that the softmax at
temperature ``T`` gives the tail exactly its true total probability: the decoded teacher distribution equals the
dense one on the top ``k`` positions and spreads the remaining mass evenly over the rest.

Packed layout, one float array ``[B, 2, 2k + 1]`` (start, end): ``k`` values, ``k`` positions (integers are
exact in fp16 up to 2048), one fill value. Stored fp16 that is ``(2k + 1) * 4`` bytes per feature against
``S * 8`` for the fp32 ``[S, 2]`` tensor farm-haystack keeps in RAM. No Haystack import.

Example:
    >>> import torch
    >>> logits = torch.tensor([[[3.0, 3.0], [1.0, 1.0], [0.0, 0.0], [-2.0, -2.0]]])   # [1, 4, 2]
    >>> packed = encode_top_k(logits, None, k=1, temperature=1.0)
    >>> round(float(packed[0, 0, -1]), 4)      # fill = log((e^1 + e^0 + e^-2) / 3)
    0.2504
    >>> decode_top_k(packed, seq_len=4)[0, :, 0]
    tensor([3.0000, 0.2504, 0.2504, 0.2504])
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

MAX_POSITIONS = 2048  # largest sequence length whose positions fp16 stores exactly
EMPTY = -1e4  # logit of "no probability" (finite, representable in fp16)


def packed_width(k: int) -> int:
    """Last dimension of the packed array for ``k`` kept positions."""
    return 2 * k + 1


def validate_top_k(k: int, seq_len: int) -> None:
    """Raise ValueError unless ``1 <= k <= seq_len <= 2048``."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"teacher_top_k must be a positive integer, got {k!r} (e.g. 16; None keeps dense logits).")
    if k > seq_len:
        raise ValueError(f"teacher_top_k={k} exceeds max_seq_len={seq_len}; use at most {seq_len} or None.")
    if seq_len > MAX_POSITIONS:
        raise ValueError(f"teacher_top_k supports max_seq_len up to {MAX_POSITIONS}, got {seq_len}; "
                         "use teacher_top_k=None (dense cache).")


def encode_top_k(logits: Tensor, valid_mask: Optional[Tensor], k: int, temperature: float) -> Tensor:
    """Pack ``[B, S, 2]`` span logits into ``[B, 2, 2k + 1]`` (float32; cast to fp16 for storage).

    Args:
        logits: teacher start/end logits, Haystack's QA-head layout.
        valid_mask: ``[B, S]`` positions the KD softmax covers (None: all); the others are never kept.
        k: positions kept per row.
        temperature: the KD temperature the fill is exact for.
    """
    batch, seq_len, _ = logits.shape
    validate_top_k(k, seq_len)
    z = logits.detach().float().transpose(1, 2)  # [B, 2, S]
    valid = torch.ones_like(z, dtype=torch.bool) if valid_mask is None else \
        valid_mask.bool()[:, None, :].expand_as(z)
    values, positions = z.masked_fill(~valid, -math.inf).topk(k, dim=-1)
    kept = torch.zeros_like(valid).scatter(-1, positions, True)
    tail = valid & ~kept
    n_tail = tail.sum(-1)
    tail_lse = torch.logsumexp((z / temperature).masked_fill(~tail, -math.inf), dim=-1)
    fill = temperature * (tail_lse - torch.log(n_tail.clamp(min=1).float()))
    fill = torch.where(n_tail > 0, fill, torch.full_like(fill, EMPTY))
    return torch.cat([values.clamp(min=EMPTY), positions.float(), fill[..., None]], dim=-1)


def decode_top_k(packed: Tensor, seq_len: int) -> Tensor:
    """Dense ``[B, S, 2]`` logits from :func:`encode_top_k`'s output (fill everywhere but the kept positions).

    ``seq_len`` may be shorter than the encoded one (a batch cut to its longest row): kept positions past it
    are padding, never valid, and are dropped.
    """
    k = (packed.shape[-1] - 1) // 2
    packed = packed.float()
    values, positions, fill = packed[..., :k], packed[..., k : 2 * k].round().long(), packed[..., 2 * k :]
    width = max(seq_len, int(positions.max()) + 1)
    dense = fill.expand(*packed.shape[:2], width).clone()
    dense.scatter_(-1, positions, values)
    return dense[..., :seq_len].transpose(1, 2)
