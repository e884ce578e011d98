"""A reader stage's output: the save folder check, evaluation, and the saved student with its run record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..distributed import is_main_process
from ..io import atomic_dir, atomic_write_json
from ..model_card import CardInfo, base_model_of, numbers, settings, write_model_card
from ..safety import check_finite, check_output_dir, write_manifest
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


HEADLINE = ("em", "f1", "test_em", "test_f1")  # first in a card's scores
NOT_RECIPE = ("teacher_model", "student_init", "source", "data_files", "metrics")  # a card's other sections


def run_sources(student: Any, teacher: Optional[Any], inputs: StageInputs) -> Dict[str, Any]:
    """Where a stage's models and data came from (folders or Hub names), for the run record and the model card."""
    files = {"train": inputs.train, "dev": inputs.dev, "test": inputs.test}
    data_files: Dict[str, Any] = {role: str(path) for role, path in files.items() if path is not None}
    if inputs.unlabeled:  # one file's path, as before several were taken, or the list
        names = [str(path) for path in inputs.unlabeled]
        data_files["unlabeled"] = names[0] if len(names) == 1 else names
    return {"teacher_model": load_path(teacher) if teacher is not None else None, "student_init": load_path(student),
            "data_files": data_files}


def reader_card(record: Dict[str, Any], name: str, transformers: bool = True) -> CardInfo:
    """The model card of a reader folder named ``name`` from its run record (``distillation.json``);
    ``transformers``: the folder also loads with ``AutoModelForQuestionAnswering``."""
    teacher, start = record.get("teacher_model"), record.get("student_init") or record.get("source")
    stage, metrics = record.get("stage", "?"), record.get("metrics") or {}
    if teacher:
        how = f"distilled by haystack-distill (stage `{stage}`) from the teacher `{teacher}`"
    elif "global_step" in metrics:
        how = f"trained by haystack-distill (stage `{stage}`) on the labels alone, without a teacher"
    else:
        how = f"built by haystack-distill (`{stage}`), not trained yet"
    return CardInfo(
        name=name, pipeline_tag="question-answering", library_name="transformers" if transformers else None,
        description=f"An extractive question-answering reader for Haystack 1.x{' and transformers' * transformers}, "
                    f"{how}.",
        base_model=base_model_of(start), teacher=teacher, start=start, data=record.get("data_files") or {},
        settings=settings({k: v for k, v in record.items() if k not in NOT_RECIPE}),
        scores=numbers({**{k: metrics[k] for k in HEADLINE if k in metrics}, **metrics}),
        tags=("haystack", "extractive-question-answering"),
        usage="reader" if transformers else "haystack-reader")


def save_reader(reader: Any, save_dir: Path, record: Dict[str, Any],
                extra: Optional[Callable[[Path], None]] = None) -> None:
    """Save in Haystack's format (``FARMReader(save_dir)`` reloads it) with one copy of the weights that
    transformers loads too (:func:`write_reader`), the run record and a model card, atomically, rank 0 only.

    A model with NaN/inf weights is refused; ``extra(folder)`` writes more files (e.g. projections) before the
    manifest that marks all of them as ours, so a later run may replace the folder.
    """
    if not is_main_process():
        return
    check_finite(reader.inferencer.model, "the student")
    with atomic_dir(save_dir) as tmp:
        transformers = write_reader(reader.inferencer.model, reader.inferencer.processor, tmp)
        atomic_write_json(tmp / RUN_MARKER, record)
        if extra is not None:
            extra(tmp)
        write_model_card(tmp, reader_card(record, Path(save_dir).name, transformers))
        write_manifest(tmp, "haystack-distill reader")
    logger.info("saved the student to %s", save_dir)


def write_reader(model: Any, processor: Any, folder: Path) -> bool:
    """What ``FARMReader.save`` writes (``model.save``, ``processor.save``), with ``language_model.bin`` made a
    transformers QA checkpoint too (see :func:`haystack_distill.reader.export.share_weights`): True if transformers
    loads the folder. An exotic encoder without a transformers QA class keeps Haystack's files only (False)."""
    from .export import ExportError, share_weights

    model.save(folder)
    processor.save(folder)
    try:
        share_weights(model, folder)
    except ExportError as err:  # the Haystack save is still complete
        logger.warning("%s loads in Haystack only (no transformers QA checkpoint): %s", folder, err)
        return False
    return True


def finish(student: Any, inputs: StageInputs, data: StageData, metrics: Dict[str, Any], record: Dict[str, Any],
           extra: Optional[Callable[[Path], None]] = None) -> Dict[str, Any]:
    """Add dev/test EM/F1 to ``metrics``, save the student with its run record (and ``extra(folder)``'s files),
    return the metrics with ``save_dir``."""
    evaluate_dev = make_eval_fn(student, data.dev)
    if evaluate_dev is not None:
        metrics.update(evaluate_dev())
    evaluate_test = make_eval_fn(student, read_paragraphs(inputs.test)) if inputs.test is not None else None
    if evaluate_test is not None:
        metrics.update({f"test_{k}": v for k, v in evaluate_test().items()})
    save_reader(student, inputs.save, {**record, "metrics": metrics}, extra)
    metrics["save_dir"] = str(inputs.save)
    return metrics
