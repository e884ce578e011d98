"""A reader stage's output: the save folder check, evaluation, and the saved student with its run record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..io import atomic_dir, atomic_write_json
from ..safety import check_finite, check_output_dir, write_manifest
from ..training import is_main_process
from .data import StageData, StageInputs, read_paragraphs

logger = logging.getLogger(__name__)

RUN_MARKER = "distillation.json"
# what Haystack's reader.save and our older versions (before the manifest) wrote: such a folder stays replaceable
LEGACY_OUTPUT = (RUN_MARKER, "projections.safetensors", "language_model.bin", "language_model_config.json",
                 "prediction_head_*", "processor_config.json", "vocab.*", "merges.txt", "tokenizer*.json",
                 "special_tokens_map.json", "added_tokens.json", "*.model", "config.json", "model.safetensors")


def default_save_dir(reader: Any, suffix: str = "") -> Path:
    """Haystack's default: ``./saved_models/<language model name><suffix>``."""
    return Path(f"./saved_models/{reader.inferencer.model.language_model.name}{suffix}")


def load_path(reader: Any) -> Optional[str]:
    """The folder (or hub name) a FARMReader was loaded from."""
    return getattr(reader, "model_name_or_path", None)


def check_save_dir(save_dir: Path, readers: Sequence[Any] = ()) -> Path:
    """Refuse a ``save_dir`` that is (or is inside, or contains) the folder one of ``readers`` was loaded from, or
    that holds files we did not write; a new/empty folder or a previous output of ours is fine."""
    inputs = [Path(p) for p in map(load_path, readers) if p]
    return check_output_dir(save_dir, inputs, marker=RUN_MARKER, legacy=LEGACY_OUTPUT)


def make_eval_fn(reader: Any, paragraphs: List[Dict[str, Any]]) -> Optional[Callable[[], Dict[str, float]]]:
    """EM/F1 of the reader (its current model) on held-out paragraphs, or None without any."""
    if not paragraphs:
        return None
    from ..evaluation.reader import evaluate_reader

    def evaluate() -> Dict[str, float]:
        scores = evaluate_reader(reader, paragraphs)
        return {"em": scores["em"], "f1": scores["f1"]}

    return evaluate


def save_reader(reader: Any, save_dir: Path, record: Dict[str, Any],
                extra: Optional[Callable[[Path], None]] = None) -> None:
    """Save in Haystack's format (``FARMReader(save_dir)`` reloads it) plus a run record, atomically, rank 0 only.

    A model with NaN/inf weights is refused; ``extra(folder)`` writes more files (e.g. projections) before the
    manifest that marks all of them as ours, so a later run may replace the folder.
    """
    if not is_main_process():
        return
    check_finite(reader.inferencer.model, "the student")
    with atomic_dir(save_dir) as tmp:
        reader.save(tmp)
        plain_transformers_copy(reader, tmp)
        atomic_write_json(tmp / RUN_MARKER, record)
        if extra is not None:
            extra(tmp)
        write_manifest(tmp, "haystack-distill reader")
    logger.info("saved the student to %s", save_dir)


def plain_transformers_copy(reader: Any, folder: Path) -> None:
    """Add ``config.json`` + ``model.safetensors`` beside Haystack's files, so ``folder`` also loads with
    ``AutoModelForQuestionAnswering.from_pretrained`` (see :mod:`haystack_distill.reader.export`)."""
    from .export import ExportError, write_transformers_checkpoint

    try:
        write_transformers_checkpoint(reader.inferencer.model, None, folder)
    except ExportError as err:  # an exotic encoder: the Haystack save is still complete
        logger.warning("no plain transformers copy in %s: %s", folder, err)


def finish(student: Any, inputs: StageInputs, data: StageData, metrics: Dict[str, Any], record: Dict[str, Any],
           extra: Optional[Callable[[Path], None]] = None) -> Dict[str, Any]:
    """Add dev/test EM/F1 to ``metrics``, save the student with its run record (and ``extra(folder)``'s files),
    return the metrics with ``save_dir``."""
    if data.dev:
        metrics.update(make_eval_fn(student, data.dev)())
    if inputs.test is not None:
        test = make_eval_fn(student, read_paragraphs(inputs.test))()
        metrics.update({f"test_{k}": v for k, v in test.items()})
    save_reader(student, inputs.save, {**record, "metrics": metrics}, extra)
    metrics["save_dir"] = str(inputs.save)
    return metrics
