"""Settings of general distillation: :class:`GeneralDistillationConfig` and its ``validate()``.

Example:
    >>> from haystack_distill.general import GeneralDistillationConfig
    >>> GeneralDistillationConfig(layers=3).validate().layers
    3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Union

from ..defaults import ATTENTION_WEIGHT


@dataclass
class GeneralDistillationConfig:
    """Settings of :func:`~haystack_distill.general.distil_general`; ``validate()`` checks them before any model
    is loaded."""

    layers: Optional[int] = None  # student depth; with keep=None the kept layers are spread (first and last kept)
    keep: Optional[List[int]] = None  # teacher layers the student starts from (0-based)
    student: Optional[str] = None  # or a folder of any shallower/narrower encoder to start from instead
    epochs: int = 3
    max_seq_len: int = 128
    stride: Optional[int] = None  # tokens between window starts of a long line; default max_seq_len - 2 (no overlap)
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    hidden_weight: float = 1.0  # of the embeddings and the hidden states
    attention_weight: float = ATTENTION_WEIGHT  # of the attention scores' MSE (0: not computed)
    layer_mapping: Union[Literal["uniform", "last"], Dict[int, int]] = "uniform"
    seed: int = 42
    device: str = "cpu"
    checkpoint_every: int = 50
    resume: bool = True
    show_progress: bool = True
    min_words: int = 8  # lines with fewer words (headings, blanks) are skipped

    def validate(self) -> GeneralDistillationConfig:
        """Raise ``ValueError`` naming the first bad setting and its fix; return ``self``."""
        if self.student is None and self.layers is None and not self.keep:
            raise ValueError("say how deep the student is: layers=N (--layers), keep=[...] (--keep) or a student "
                             "folder (--student).")
        if self.keep is not None and self.layers is not None and len(self.keep) != self.layers:
            raise ValueError(f"keep={self.keep} keeps {len(self.keep)} layers but layers={self.layers}; "
                             "drop one of the two or make them agree.")
        if self.keep is not None and len(set(self.keep)) != len(self.keep):
            raise ValueError(f"keep={self.keep} repeats a layer; list each teacher layer once.")
        for name in ("epochs", "batch_size", "max_seq_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len={self.max_seq_len} is too short for a text window; use >= 8 (128 is "
                             "usual).")
        if self.stride is not None and not 1 <= self.stride <= self.max_seq_len - 2:
            raise ValueError(f"stride={self.stride} must be 1..max_seq_len-2 ({self.max_seq_len - 2}).")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}.")
        for name in ("hidden_weight", "attention_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}; 0 switches the term "
                                 "off.")
        return self
