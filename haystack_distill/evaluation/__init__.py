"""Evaluation a user runs on teacher and students: SQuAD EM/F1 and speed/size for readers, and the
classifier benchmark. Names are loaded lazily so importing this package does not import Haystack.

- :func:`benchmark_reader` (``evaluation.reader``): EM, F1, questions/s, parameters, MB for several readers.
- :func:`squad_scores` (``evaluation.squad_metrics``): the official SQuAD v1.1 EM/F1 formula.
- :func:`benchmark_classifier` (``evaluation.classification``): size, latency, F1/precision/recall/ROC-AUC.
- :func:`model_size` (``evaluation.size``): parameters and MB of a module, a weights file or a model folder, the
  one size every table reports.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "benchmark_reader": "reader",
    "evaluate_reader": "reader",
    "squad_scores": "squad_metrics",
    "exact_match": "squad_metrics",
    "f1_score": "squad_metrics",
    "benchmark_classifier": "classification",
    "model_size": "size",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
