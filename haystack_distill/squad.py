"""Reading and validating SQuAD-format files, before any model work starts. No Haystack import.

Example:
    >>> import json, tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "train.json")
    >>> para = {"context": "Paris is in France.", "qas": [{"id": "q1", "question": "Where is Paris?",
    ...         "answers": [{"text": "France", "answer_start": 12}], "is_impossible": False}]}
    >>> _ = open(p, "w").write(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [para]}]}))
    >>> stats = validate_squad_file(p)
    >>> stats.questions, stats.answerable
    (1, 1)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Union

PathLike = Union[str, Path]


class SquadFormatError(ValueError):
    """A SQuAD file is missing, malformed, empty, or has answers that do not match their context."""


@dataclass(frozen=True)
class SquadStats:
    """Counts of a validated SQuAD file."""

    paragraphs: int
    questions: int
    answerable: int


def load_squad(path: PathLike) -> Dict[str, Any]:
    """Load a SQuAD JSON file, raising :class:`SquadFormatError` that names the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SquadFormatError(f"SQuAD file {path} does not exist; pass data_dir and a file name that exist.")
    try:
        squad = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SquadFormatError(f"{path} is not valid JSON ({err}); expected SQuAD format {{'data': [...]}}.") from err
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise SquadFormatError(
            f"{path} is not SQuAD format: expected a top-level object with a 'data' list of articles, "
            f"each with 'paragraphs' holding 'context' and 'qas'."
        )
    return squad


def iter_paragraphs(squad: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Yield every paragraph dict (``context`` + ``qas``) of a loaded SQuAD object."""
    for article in squad["data"]:
        yield from article.get("paragraphs", [])


def _paragraph_problems(para: Any, where: str) -> Tuple[List[str], List[str], int, int]:
    """Return (structural problems, ids with misplaced answers, questions, answerable)."""
    if not isinstance(para, dict) or not isinstance(para.get("context"), str) or not isinstance(para.get("qas"), list):
        return [f"{where}: needs a 'context' string and a 'qas' list"], [], 0, 0
    context, bad_ids, answerable = para["context"], [], 0
    for qa in para["qas"]:
        if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
            return [f"{where}: every qa needs a 'question' string"], [], 0, 0
        answers = qa.get("answers", [])
        answerable += bool(answers) and not qa.get("is_impossible", False)
        for ans in answers:
            start, text = ans.get("answer_start"), ans.get("text")
            valid = type(start) is int and start >= 0 and isinstance(text, str) and text.strip() != ""
            if not valid or context[start : start + len(text)] != text:
                bad_ids.append(str(qa.get("id", f"{where}/?")))
                break
    return [], bad_ids, len(para["qas"]), answerable


def validate_squad_file(path: PathLike, allow_empty: bool = False) -> SquadStats:
    """Check structure and that every ``answer_start`` points at its answer text; return counts.

    Raises :class:`SquadFormatError` naming the file, the number of bad answers and the first ids.
    """
    squad = load_squad(path)
    problems, bad_ids, n_para, n_q, n_ans = [], [], 0, 0, 0
    for a_idx, article in enumerate(squad["data"]):
        for p_idx, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            probs, bad, q, a = _paragraph_problems(para, f"data[{a_idx}].paragraphs[{p_idx}]")
            problems += probs
            bad_ids += bad
            n_para, n_q, n_ans = n_para + 1, n_q + q, n_ans + a
    if problems:
        raise SquadFormatError(f"{path} is malformed: {'; '.join(problems[:3])} ({len(problems)} problems).")
    if bad_ids:
        raise SquadFormatError(
            f"{path}: {len(bad_ids)} questions have an answer whose answer_start is not a non-negative integer "
            f"pointing at its non-empty text, first ids {bad_ids[:5]}; fix the answers "
            "(context[answer_start:answer_start+len(text)] == text)."
        )
    if n_q == 0 and not allow_empty:
        raise SquadFormatError(f"{path} holds no questions; a training set needs at least one.")
    return SquadStats(paragraphs=n_para, questions=n_q, answerable=n_ans)


def unlabeled_paragraphs(path: PathLike) -> Tuple[List[Dict[str, Any]], int]:
    """The paragraphs of a SQuAD file used as unlabelled transfer data: every question kept, every answer removed.

    Returns ``(paragraphs, answers_dropped)``: questions that had answers count in ``answers_dropped``, so the
    caller can say they were ignored. Raises :class:`SquadFormatError` on a malformed or question-less file.

    Example:
        >>> import json, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "u.json")
        >>> qa = {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]}
        >>> _ = open(p, "w").write(json.dumps({"data": [{"paragraphs": [{"context": "Paris.", "qas": [qa]}]}]}))
        >>> paragraphs, dropped = unlabeled_paragraphs(p)
        >>> paragraphs[0]["qas"][0]["answers"], dropped
        ([], 1)
    """
    squad = load_squad(path)
    paragraphs, dropped = [], 0
    for a_idx, article in enumerate(squad["data"]):
        for p_idx, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            where = f"data[{a_idx}].paragraphs[{p_idx}]"
            listed = isinstance(para, dict) and isinstance(para.get("qas"), list)
            problems = _paragraph_problems({**para, "qas": [_question_only(q) for q in para["qas"]]} if listed
                                           else para, where)[0]
            if problems:
                raise SquadFormatError(f"{path} is malformed: {problems[0]}.")
            dropped += sum(bool(qa.get("answers")) for qa in para["qas"])
            qas = [{**_question_only(qa), "id": str(qa.get("id", f"unlabeled-{a_idx}-{p_idx}-{i}"))}
                   for i, qa in enumerate(para["qas"])]
            paragraphs.append({"context": para["context"], "qas": qas})
    if not any(p["qas"] for p in paragraphs):
        raise SquadFormatError(f"{path} holds no questions; unlabelled transfer data needs at least one.")
    return paragraphs, dropped


def _question_only(qa: Any) -> Any:
    """A qa dict reduced to its question (answers removed, marked answerable so no label is made of it)."""
    if not isinstance(qa, dict):
        return qa
    return {"question": qa.get("question"), "answers": [], "is_impossible": False}
