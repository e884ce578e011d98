"""Build a student reader by keeping chosen layers of a teacher reader (sentence-transformers' "option 2")."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, List, Union

from ..io import atomic_dir
from ..layers import keep_layers


def student_from_teacher(teacher: Any, keep: Union[int, List[int]], save_dir: Union[str, Path], **reader_kwargs: Any):
    """Save and load a reader whose encoder keeps ``keep`` of the teacher's layers (indices, or a count spread
    evenly, first and last included); embeddings and QA head are copied from the teacher.

    Example:
        >>> student = student_from_teacher(teacher, keep=2, save_dir="models/student-2l")  # doctest: +SKIP
    """
    from . import DistillableFARMReader

    model = copy.deepcopy(teacher.inferencer.model)
    language_model = model.language_model
    language_model.model = keep_layers(language_model.model, keep)
    with atomic_dir(Path(save_dir)) as tmp:
        model.save(tmp)
        teacher.inferencer.processor.save(tmp)
    kwargs = {"use_gpu": False, "max_seq_len": teacher.max_seq_len, "doc_stride": teacher.doc_stride,
              "max_query_length": teacher.max_query_length, **reader_kwargs}
    return DistillableFARMReader(str(save_dir), **kwargs)
