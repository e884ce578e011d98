"""Deprecated: the reader stages' shared pieces now live by concept in :mod:`.data` (files, processor, features,
batching), :mod:`.targets` (teacher targets and their cache key), :mod:`.output` (save folder, evaluation,
saving) and :mod:`.stage` (the stage template and model checks). These names stay importable from here for
scripts written against the old module."""

from __future__ import annotations

from .data import build_processor, featurize, read_paragraphs
from .output import LEGACY_OUTPUT, RUN_MARKER

__all__ = ["LEGACY_OUTPUT", "RUN_MARKER", "build_processor", "featurize", "read_paragraphs"]
