"""A sentence-transformers teacher's modules (pooling, ``Normalize``) copied after the student encoder, so the
output folder embeds as the teacher does."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from torch import nn

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
ST_CONFIG = "config_sentence_transformers.json"  # sentence-transformers' model-level settings (prompts, similarity)
ST_ENCODER_CONFIG = "sentence_bert_config.json"  # its Transformer module's settings (max_seq_length, lower case)
WIDTH_FREE_MODULES = ("Transformer", "Pooling", "Normalize")  # fit a student of any width


def sentence_modules(teacher: PathLike) -> Optional[List[Dict[str, Any]]]:
    """The entries of the teacher's ``modules.json`` (sentence-transformers), or None for a plain encoder folder.

    Example:
        >>> import tempfile
        >>> sentence_modules(tempfile.mkdtemp()) is None
        True
    """
    path = Path(teacher) / "modules.json"
    if not path.is_file():
        return None
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"teacher {teacher}: modules.json is not valid JSON ({err}); repair it (model.save writes "
                         "it) or remove it to distil the bare encoder.") from err
    if not (isinstance(modules, list) and modules and all(isinstance(m, dict) and {"path", "type"} <= set(m)
                                                          for m in modules)):
        raise ValueError(f"teacher {teacher}: modules.json must list modules with 'path' and 'type', got {modules!r}; "
                         "repair it or remove it to distil the bare encoder.")
    return modules


def _module_class(module: Dict[str, Any]) -> str:
    return str(module["type"]).rsplit(".", 1)[-1]


def _can_copy_modules(modules: List[Dict[str, Any]], width: int, teacher_width: int, teacher: PathLike) -> bool:
    """True when the teacher's modules fit the student; else warn that the student stays a plain encoder."""
    names = [_module_class(m) for m in modules]
    if names[0] != "Transformer":
        logger.warning("teacher %s: its first sentence-transformers module is %s, not Transformer; the student is "
                       "saved as a plain encoder.", teacher, names[0])
        return False
    tied = [n for n in names if n not in WIDTH_FREE_MODULES]
    if width != teacher_width and tied:
        logger.warning("teacher %s: module(s) %s expect width %d, the student has %d; the student is saved as a plain "
                       "encoder (wrap it with haystack_distill.embeddings.model_io.sentence_transformer_from_"
                       "transformers).", teacher, ", ".join(tied), teacher_width, width)
        return False
    return True


def _copy_encoder_config(source: Path, folder: Path, student: nn.Module) -> None:
    """The teacher's ``sentence_bert_config.json``, its ``max_seq_length`` capped by the student's positions."""
    if not source.is_file():
        return
    settings = json.loads(source.read_text(encoding="utf-8"))
    positions = getattr(student.config, "max_position_embeddings", None)
    if positions and settings.get("max_seq_length"):
        settings["max_seq_length"] = min(int(settings["max_seq_length"]), int(positions))
    (folder / ST_ENCODER_CONFIG).write_text(json.dumps(settings, indent=2))


def copy_sentence_modules(teacher: PathLike, modules: List[Dict[str, Any]], folder: Path, student: Any,
                          teacher_width: int) -> bool:
    """Make ``folder`` (the saved student encoder) a sentence-transformers folder with the teacher's modules after
    the encoder, the pooling's width set to the student's; return False (and warn) when they do not fit it.

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> copy_sentence_modules("all-MiniLM-L6-v2", sentence_modules("all-MiniLM-L6-v2"), out, student,
        ...                       384)  # doctest: +SKIP
        True
        >>> [type(m).__name__ for m in SentenceTransformer(str(out))]  # doctest: +SKIP
        ['Transformer', 'Pooling', 'Normalize']
    """
    teacher, width = Path(teacher), int(student.config.hidden_size)
    if not _can_copy_modules(modules, width, teacher_width, teacher):
        return False
    written = []
    for module in modules:
        entry, source = dict(module), teacher / str(module["path"])
        if _module_class(module) == "Transformer":
            entry["path"] = ""  # the student encoder is saved at the folder's top
            _copy_encoder_config(source / ST_ENCODER_CONFIG, folder, student)
        elif source.is_dir():
            shutil.copytree(source, folder / entry["path"])
            pooling = folder / entry["path"] / "config.json"
            if _module_class(module) == "Pooling" and pooling.is_file():
                settings = json.loads(pooling.read_text(encoding="utf-8"))
                pooling.write_text(json.dumps({**settings, "word_embedding_dimension": width}, indent=2))
        written.append(entry)
    if (teacher / ST_CONFIG).is_file():
        shutil.copyfile(teacher / ST_CONFIG, folder / ST_CONFIG)
    (folder / "modules.json").write_text(json.dumps(written, indent=2))
    return True
