"""Sentence-embedding distillation: the sentence-transformers side of haystack-distill.

Layer truncation (:func:`truncate_layers`), embedding distillation with a cached teacher
(:func:`distil_embeddings_from`), PCA heads (:func:`reduce_dimensions`), dynamic int8 quantization
(:func:`quantize`) and STS evaluation (:func:`evaluate_sts`). Haystack is imported only by
:mod:`haystack_distill.embeddings.retriever`. Names are loaded lazily so that importing the package
(e.g. for ``haystack-distill --help``) does not import torch.

Example:
    >>> import haystack_distill.embeddings as emb
    >>> callable(emb.evaluate_sts)
    True
"""

from __future__ import annotations

from typing import Dict

from ..lazy import lazy_exports

_EXPORTS: Dict[str, str] = {
    "truncate_layers": "truncate",
    "distil_embeddings_from": "distil",
    "teacher_embeddings": "cache",
    "model_fingerprint": "cache",
    "reduce_dimensions": "pca",
    "fit_pca": "pca",
    "quantize": "quantization",
    "is_quantized": "quantization",
    "evaluate_sts": "sts",
    "read_sts": "sts",
    "spearman": "sts",
    "pearson": "sts",
    "sts_correlations": "sts",
    "StsPair": "sts",
    "read_sentences": "sentences",
    "load_sentence_transformer": "model_io",
    "save_sentence_transformer": "model_io",
    "NotASentenceTransformerError": "model_io",
    "sentences_per_second": "measure",
    "model_size_mb": "measure",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
