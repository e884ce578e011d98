"""TinyBERT-style SQuAD augmentation that keeps answers (library, ``python -m augment``, ``haystack-distill augment``).

Heavy modules (torch, transformers) load on first use, so ``import augment`` and ``--help`` stay instant.

Example:
    >>> import augment
    >>> augment.AugmentSettings().multiplication_factor
    20
"""

from __future__ import annotations

from haystack_distill.lazy import lazy_exports

_EXPORTS = {
    "augment_squad": "api",
    "AugmentReport": "api",
    "AugmentSettings": "core",
    "SquadAugmenter": "core",
    "GloveTable": "glove",
    "GloveFormatError": "glove",
    "MaskedLMCandidates": "mlm",
    "NotAMaskedLMError": "mlm",
    "load_masked_lm": "mlm",
    "WordFilter": "words",
    "STOP_WORDS": "words",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
