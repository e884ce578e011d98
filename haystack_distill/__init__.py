"""haystack-distill: knowledge distillation for Haystack 1.x readers and sentence-embedding models.

The core modules (:mod:`haystack_distill.losses`, :mod:`haystack_distill.layers`,
:mod:`haystack_distill.tokenizers`, :mod:`haystack_distill.teacher_cache`) never import Haystack;
:mod:`haystack_distill.reader` does, and is imported only when used.
"""

__version__ = "0.1.0"
