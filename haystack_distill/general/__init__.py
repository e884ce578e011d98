"""General distillation (TinyBERT's first step): a shallower student learns an encoder's hidden states and
attention on plain text, before any task. No Haystack import.

The student starts from chosen layers of the teacher (``keep``, first and last by default) or from any
shallower or narrower encoder folder, and learns, on windows of ``max_seq_len`` tokens cut from the text file,

    L = MSE(E_s, E_t) + sum_i [ MSE(H_s[i], H_t[map(i)]) + w_att * MSE(A_s[i], A_t[map(i)]) ]

(:class:`~haystack_distill.layer_match.LayerMatchLoss`) with ``map`` TinyBERT's uniform layer map, ``A`` the masked
pre-softmax attention scores (``w_att`` the default attention weight,
:data:`~haystack_distill.defaults.ATTENTION_WEIGHT`, unless set) and trained linear projections where the widths
differ.
The output is a transformers encoder folder (config, safetensors, tokenizer) that readers,
:func:`~haystack_distill.reader.student_from_teacher` and the embedding side load as a student. When the teacher
is a sentence-transformers folder (``modules.json``), the output is one too, with the teacher's modules after the
encoder (pooling, ``Normalize``), so ``SentenceTransformer(output)`` embeds as the teacher does.

Modules: ``config`` (settings), ``data`` (text windows), ``student`` (loading, the cut), ``loss``, ``sentence``
(sentence-transformers modules), ``checkpoints``, ``card`` (model card), ``distil`` (:func:`distil_general`) and
``cli`` (``distil-general``). Names load on first use, so importing the CLI does not import torch.

Example:
    >>> from haystack_distill.general import GeneralDistillationConfig
    >>> GeneralDistillationConfig(layers=3).validate().layers
    3
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "GeneralDistillationConfig": "config",
    "MIN_WINDOWS": "data",
    "PathLike": "data",
    "read_texts": "data",
    "text_windows": "data",
    "general_weights": "loss",
    "GeneralDistillationLoss": "loss",
    "build_student": "student",
    "check_positions": "student",
    "ST_CONFIG": "sentence",
    "ST_ENCODER_CONFIG": "sentence",
    "WIDTH_FREE_MODULES": "sentence",
    "copy_sentence_modules": "sentence",
    "sentence_modules": "sentence",
    "remove_own_checkpoints": "checkpoints",
    "RUN_ONLY": "card",
    "general_card": "card",
    "UNUSED": "distil",
    "distil_general": "distil",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
