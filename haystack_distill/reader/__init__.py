"""The Haystack side: distillation methods for ``FARMReader`` (this package imports Haystack).

- :class:`DistillationMixin` adds ``distil_prediction_layer_from`` (farm-haystack 1.26.4's signature, fixed).
- :class:`DistillableFARMReader` is ``FARMReader`` with the mixin.
- :func:`make_distillable` gives an existing reader instance the mixin.
- :func:`student_from_teacher` builds a smaller reader by keeping some of the teacher's layers.
"""

from haystack.nodes import FARMReader

from .mixin import DistillationMixin, make_distillable
from .students import student_from_teacher


class DistillableFARMReader(DistillationMixin, FARMReader):
    """A ``FARMReader`` with the distillation methods of :class:`DistillationMixin`."""


__all__ = ["DistillableFARMReader", "DistillationMixin", "make_distillable", "student_from_teacher"]
