"""TinyBERT-style SQuAD augmentation that keeps answers (library, ``python -m augment``, ``haystack-distill augment``).

Heavy modules (torch, transformers) load on first use, so ``import augment`` and ``--help`` stay instant.

Example:
    >>> import augment
    >>> augment.AugmentSettings().multiplication_factor
    20
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "augment_squad": "augment.api",
    "AugmentReport": "augment.api",
    "AugmentSettings": "augment.core",
    "SquadAugmenter": "augment.core",
    "GloveTable": "augment.glove",
    "GloveFormatError": "augment.glove",
    "MaskedLMCandidates": "augment.mlm",
    "NotAMaskedLMError": "augment.mlm",
    "load_masked_lm": "augment.mlm",
    "WordFilter": "augment.words",
    "STOP_WORDS": "augment.words",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'augment' has no attribute {name!r}")
