"""EM/F1, speed and size of Haystack readers on a SQuAD file: the table a user compares teacher and students with.

Answers are the reader's best span (``return_no_answer`` off), scored with the official SQuAD formula, so
an all-answerable dev set (like SQuAD 1.1) is not distorted by "no answer" predictions.

Example (with your own readers):
    >>> from haystack_distill.evaluation import benchmark_reader   # doctest: +SKIP
    >>> rows = benchmark_reader({"teacher": "models/teacher", "student": "models/student"},
    ...                         "data/dev-v1.1.json", max_questions=500)                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from tqdm.auto import tqdm

from ..squad import iter_paragraphs, load_squad
from .squad_metrics import squad_scores

logger = logging.getLogger(__name__)
_PROGRESS = contextvars.ContextVar("evaluation_progress", default=False)


@contextlib.contextmanager
def evaluation_progress(enabled: bool = True) -> Iterator[None]:
    """Inside the block every :func:`evaluate_reader` (also a training run's dev evaluations) shows a progress bar
    over the questions; the CLI turns it on unless ``--quiet``. Off by default."""
    token = _PROGRESS.set(enabled)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def squad_questions(paragraphs: Sequence[Dict[str, Any]], max_questions: Optional[int] = None) -> List[tuple]:
    """Flatten paragraphs into ``(id, question, context, gold answers)`` tuples, in file order.

    Predictions are matched to gold answers by id, so repeated ids are refused (naming the first few) instead of
    silently scoring one question per id.
    """
    rows = [(str(qa["id"]), qa["question"], para["context"], [a["text"] for a in qa.get("answers", [])])
            for para in paragraphs for qa in para["qas"]]
    counts = Counter(qid for qid, *_ in rows)
    repeated = [qid for qid, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(f"{len(repeated)} question ids occur more than once (first: {repeated[:3]}); EM/F1 match "
                         "predictions to answers by id, so give every question its own id.")
    return rows if max_questions is None else rows[:max_questions]


def predict_answers(reader: Any, questions: Sequence[tuple], batch_size: int = 64) -> Dict[str, str]:
    """Best span answer of ``reader`` (a Haystack ``FARMReader``) for each ``(id, question, context, _)``."""
    from haystack import Document

    predictions: Dict[str, str] = {}
    bar = tqdm(total=len(questions), desc="evaluating", unit="question", leave=False, disable=not _PROGRESS.get())
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        result = reader.predict_batch(
            queries=[q for _, q, _, _ in chunk],
            documents=[[Document(content=c, id=f"ctx-{start + i}")] for i, (_, _, c, _) in enumerate(chunk)],
            top_k=1,
        )
        for (qid, _, _, _), answers in zip(chunk, result["answers"]):
            best = [a for a in answers if a.answer]
            predictions[qid] = best[0].answer if best else ""
        bar.update(len(chunk))
    bar.close()
    return predictions


def evaluate_reader(
    reader: Any, squad: Union[str, Path, Sequence[Dict[str, Any]]], max_questions: Optional[int] = None,
    batch_size: int = 64,
) -> Dict[str, float]:
    """EM, F1 (percent), number of questions and questions/s of ``reader`` on a SQuAD file or paragraph list."""
    paragraphs = list(iter_paragraphs(load_squad(squad))) if isinstance(squad, (str, Path)) else list(squad)
    questions = [q for q in squad_questions(paragraphs, max_questions) if q[3]]
    if not questions:
        raise ValueError("no answerable questions to evaluate on")
    progress = getattr(reader, "progress_bar", None)
    reader.progress_bar = False
    if getattr(reader, "inferencer", None) is not None:
        reader.inferencer.disable_tqdm = True
    started = time.perf_counter()
    try:
        predictions = predict_answers(reader, questions, batch_size)
    finally:
        if progress is not None:
            reader.progress_bar = progress
    seconds = time.perf_counter() - started
    scores = squad_scores(predictions, {qid: gold for qid, _, _, gold in questions})
    return {**scores, "seconds": seconds, "questions_per_second": len(questions) / seconds}


def reader_size(reader: Any, path: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Parameter count and size in MB of a reader's model: its parameter tensors; for a torch-quantized model
    its serialized state; for an ONNX reader (``FARMReader`` on an export folder ``path``) the ONNX file."""
    from ..reader.export import ONNX_FILE, is_torch_quantized
    from .size import model_size

    model = reader.inferencer.model
    if not hasattr(model, "parameters"):  # Haystack's ONNXAdaptiveModel
        if path is None:
            return {"parameters": float("nan"), "mb": float("nan")}
        return model_size(Path(path) / ONNX_FILE if Path(path).is_dir() else path).as_row()
    return model_size(model, serialized=is_torch_quantized(model)).as_row()


def disk_size_mb(path: Union[str, Path]) -> float:
    """Size in MB of a saved model folder (weights and configs; a duplicate weights copy counted once), NaN
    for anything but a folder."""
    from .size import model_size

    return model_size(path).mb if Path(path).is_dir() else float("nan")


def benchmark_reader(
    readers: Mapping[str, Any],
    dev_file: Union[str, Path],
    max_questions: Optional[int] = None,
    repeats: int = 1,
    batch_size: int = 64,
    reader_kwargs: Optional[Dict[str, Any]] = None,
    speed_questions: Optional[int] = None,
    status: Optional[Callable[[str], ContextManager[Any]]] = None,
) -> List[Dict[str, Any]]:
    """Evaluate several readers on one dev file in one process; speed is the median of ``repeats`` runs.

    Args:
        readers: name -> ``FARMReader`` or path to a saved reader (loaded with ``reader_kwargs``).
        dev_file: SQuAD-format file.
        max_questions: evaluate on the first N questions (a fixed subset).
        repeats: timing repeats; EM/F1 come from the first run.
        speed_questions: time the ``repeats`` runs on only the first N questions, after one scoring pass over
            ``max_questions`` (keeps a large dev set affordable); None times the scoring runs themselves.
        status: ``status(message)`` wraps the loading and the scoring of each reader (the CLI's status line).

    Returns one dict per reader with em, f1, questions/s, speedup vs the first reader, parameters and MB.
    """
    from haystack.nodes import FARMReader

    status = status or (lambda message: contextlib.nullcontext())
    rows: List[Dict[str, Any]] = []
    for name, reader in readers.items():
        path = reader if isinstance(reader, (str, Path)) else None
        if path is not None:
            with status(f"{name}: loading {path}"):
                reader = FARMReader(str(path), **{"use_gpu": False, "progress_bar": False, **(reader_kwargs or {})})
        with status(f"{name}: scoring" + (f", {repeats} timed runs" if repeats > 1 else "")):
            runs = [evaluate_reader(reader, dev_file, max_questions, batch_size)]
            if speed_questions is None:
                runs += [evaluate_reader(reader, dev_file, max_questions, batch_size) for _ in range(repeats - 1)]
                timed = runs
            else:
                timed = [evaluate_reader(reader, dev_file, speed_questions, batch_size)
                         for _ in range(max(1, repeats))]
        qps = sorted(r["questions_per_second"] for r in timed)[len(timed) // 2]
        row: Dict[str, Any] = {"reader": name, "em": runs[0]["em"], "f1": runs[0]["f1"],
                               "questions": runs[0]["questions"], "questions_per_second": qps,
                               **reader_size(reader, path)}
        if path is not None:
            row["mb_on_disk"] = disk_size_mb(path)
        rows.append(row)
        logger.debug("%s: %s", name, row)
    base = rows[0]
    for row in rows:
        row["f1_vs_first"] = 100 * row["f1"] / base["f1"] if base["f1"] else float("nan")
        row["speedup_vs_first"] = row["questions_per_second"] / base["questions_per_second"]
    return rows


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown table of :func:`benchmark_reader` rows."""
    lines = ["| reader | EM | F1 | % of first F1 | questions/s | speed-up | parameters | MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['reader']} | {r['em']:.1f} | {r['f1']:.1f} | {r['f1_vs_first']:.1f}% | "
            f"{r['questions_per_second']:.1f} | {r['speedup_vs_first']:.2f}x | {r['parameters'] / 1e6:.1f}M | "
            f"{r.get('mb_on_disk', r['mb']):.1f} |"
        )
    return "\n".join(lines)
