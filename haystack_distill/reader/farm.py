"""``DistillableFARMReader``: ``FARMReader`` with :class:`DistillationMixin` (importing this loads Haystack)."""

from haystack.nodes import FARMReader

from .mixin import DistillationMixin


class DistillableFARMReader(DistillationMixin, FARMReader):
    """A ``FARMReader`` with the distillation methods of :class:`DistillationMixin`."""
