"""Stage settings of :meth:`~haystack_distill.reader.mixin.DistillationMixin.distil_tinybert_from` where they
differ from the stage methods' (Haystack-compatible) defaults: the intermediate layers alone for one epoch, then
KD at lr 2e-4, T=2, weight 6/7, batch 16, the recipe that trains the best students on SQuAD (see BENCHMARKS.md,
"Student quality"). Plain values, no torch import, so the CLI can show them in ``--help`` instantly.
"""

from __future__ import annotations

from typing import Any, Dict

TINYBERT_INTERMEDIATE: Dict[str, Any] = {"batch_size": 16, "n_epochs": 1, "learning_rate": 1e-4, "temperature": 2.0,
                                         "distillation_loss_weight": 0.0}
TINYBERT_PREDICTION: Dict[str, Any] = {"batch_size": 16, "learning_rate": 2e-4, "temperature": 2.0,
                                       "distillation_loss_weight": 6 / 7}
