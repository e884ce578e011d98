"""The Haystack side: distillation methods for ``FARMReader``.

- :class:`DistillationMixin` adds ``distil_prediction_layer_from`` and ``distil_intermediate_layers_from``
  (farm-haystack 1.26.4's signatures, fixed) and ``distil_tinybert_from``.
- :class:`DistillableFARMReader` is ``FARMReader`` with the mixin.
- :func:`make_distillable` gives an existing reader instance the mixin.
- :func:`student_from_teacher` builds a smaller reader by keeping some of the teacher's layers.
- :func:`make_student` saves the recommended student: layers of a base encoder with a fresh QA head (or of a reader).

Names load on first use, so importing a submodule (e.g. the CLI) does not import Haystack.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "DistillableFARMReader": "farm",
    "DistillationMixin": "mixin",
    "make_distillable": "mixin",
    "make_student": "students",
    "student_from_teacher": "students",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
