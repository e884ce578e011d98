"""SQuAD input checks, per-article progress files for resuming, and the single atomic output write.

Example:
    >>> import json, tempfile, os
    >>> squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.",
    ...     "qas": [{"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}],
    ...              "is_impossible": False}]}]}]}
    >>> articles, problems = prepare_articles(squad, source="x.json")
    >>> problems
    []
    >>> out = os.path.join(tempfile.mkdtemp(), "out.json")
    >>> _ = write_squad_stream(out, {"version": "v2.0"}, [json.dumps(a) for a in articles])
    >>> json.load(open(out))["data"][0]["paragraphs"][0]["context"]
    'Paris is in France.'
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from haystack_distill.io import atomic_write_text, atomic_writer
from haystack_distill.safety import check_own_folder
from haystack_distill.squad import SquadFormatError

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
ANSWER_KEYS = ("answers", "plausible_answers")


def _structure_problem(article: Any, a_idx: int) -> Optional[str]:
    where = f"data[{a_idx}]"
    if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
        return f"{where} needs a 'paragraphs' list"
    for p_idx, para in enumerate(article["paragraphs"]):
        at = f"{where}.paragraphs[{p_idx}]"
        if not isinstance(para, dict) or not isinstance(para.get("context"), str):
            return f"{at} needs a 'context' string"
        if not isinstance(para.get("qas"), list):
            return f"{at} needs a 'qas' list"
        for q_idx, qa in enumerate(para["qas"]):
            if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa:
                return f"{at}.qas[{q_idx}] needs a 'question' string and an 'id'"
            for key in ANSWER_KEYS:
                answers = qa.get(key, [])
                if not isinstance(answers, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("text"), str) and isinstance(a.get("answer_start"), int)
                    for a in answers
                ):
                    return f"{at}.qas[{q_idx}].{key} must be a list of {{'text': str, 'answer_start': int}}"
    return None


def _qa_problem(qa: Dict[str, Any], context: str) -> Optional[str]:
    for key in ANSWER_KEYS:
        for ans in qa.get(key, []):
            start, text = ans["answer_start"], ans["text"]
            if start < 0 or context[start:start + len(text)] != text:
                found = context[max(start, 0):max(start, 0) + len(text)]
                return f"{key} text {text!r} != context[{start}:{start + len(text)}] {found!r}"
    impossible = qa.get("is_impossible")
    if impossible is True and qa.get("answers"):
        return "is_impossible is true but 'answers' is not empty"
    if impossible is False and not qa.get("answers"):
        return "is_impossible is false but 'answers' is empty"
    return None


def prepare_articles(squad: Any, source: str, skip_bad_answers: bool = False) -> Tuple[List[dict], List[str]]:
    """Check a loaded SQuAD object; return its articles and the problems found.

    Structure errors always raise :class:`SquadFormatError`. Questions whose answers do not match their
    context (or whose ``is_impossible`` contradicts ``answers``) raise too, unless ``skip_bad_answers``,
    in which case those questions are dropped and listed in the returned problems.
    """
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise SquadFormatError(f"{source} is not SQuAD format: expected {{'data': [articles]}}.")
    problems: List[str] = []
    articles: List[dict] = []
    for a_idx, article in enumerate(squad["data"]):
        problem = _structure_problem(article, a_idx)
        if problem:
            raise SquadFormatError(f"{source} is malformed: {problem}.")
        paragraphs = []
        for para in article["paragraphs"]:
            kept = []
            for qa in para["qas"]:
                problem = _qa_problem(qa, para["context"])
                if problem:
                    problems.append(f"question id {qa['id']!r} (data[{a_idx}]): {problem}")
                else:
                    kept.append(qa)
            paragraphs.append({**para, "qas": kept} if len(kept) != len(para["qas"]) else para)
        articles.append({**article, "paragraphs": paragraphs})
    if problems and not skip_bad_answers:
        raise SquadFormatError(
            f"{source}: {len(problems)} questions have answers that do not match their context, e.g. "
            f"{'; '.join(problems[:3])}. Fix the file, or pass --skip_bad_answers to drop those questions."
        )
    if problems:
        logger.warning("%s: dropped %d questions with answers not matching their context (first: %s)",
                       source, len(problems), problems[0])
    return articles, problems


def load_squad_articles(path: PathLike, skip_bad_answers: bool = False) -> Tuple[dict, List[dict], List[str]]:
    """Load and check a SQuAD file; return (top-level fields except ``data``, articles, problems)."""
    from haystack_distill.squad import load_squad

    squad = load_squad(path)
    articles, problems = prepare_articles(squad, str(path), skip_bad_answers)
    header = {k: v for k, v in squad.items() if k != "data"}
    return header, articles, problems


def write_squad_stream(path: PathLike, header: Dict[str, Any], article_json: Iterable[str]) -> Path:
    """Write ``{**header, "data": [...]}`` from already-serialised articles, atomically, without holding them all."""
    with atomic_writer(path) as handle:
        handle.write("{")
        for key, value in header.items():
            handle.write(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}, ")
        handle.write('"data": [')
        for i, text in enumerate(article_json):
            handle.write(", " if i else "")
            handle.write(text)
        handle.write("]}\n")
    return Path(path)


def _progress_entry(path: Path) -> bool:
    """Is ``path`` an entry :class:`Progress` writes (its run file, finished articles, their temporary files)?"""
    return path.is_file() and (path.name == "run.json" or fnmatch.fnmatch(path.name, "article-*.json")
                               or fnmatch.fnmatch(path.name, ".*.tmp"))


class Progress:
    """Finished articles of one run, one file each in ``<output>.partial/``, so a killed run can resume.

    ``run.json`` holds fingerprints of the input, the settings and the models; progress made with other
    inputs is never mixed in.
    """

    def __init__(self, output_path: PathLike) -> None:
        output_path = Path(output_path)
        self.dir = output_path.with_name(output_path.name + ".partial")
        self.meta_path = self.dir / "run.json"

    def check(self, fingerprints: Dict[str, str], discard_other: bool) -> List[str]:
        """Keys whose value differs from a previous run's progress (``[]`` if none or no progress).

        Raises ``ValueError`` on a difference unless ``discard_other``. Changes nothing on disk.
        """
        check_own_folder(self.dir, _progress_entry, "move them away or choose another output path.")
        if not self.meta_path.is_file():
            return []
        old = json.loads(self.meta_path.read_text(encoding="utf-8"))
        differs = sorted(k for k, v in fingerprints.items() if old.get(k, v) != v)
        if differs and not discard_other:
            raise ValueError(
                f"{self.dir} holds progress of a run with a different {', '.join(differs)}; pass --overwrite "
                "to discard it, or rerun with the original inputs and settings to resume."
            )
        return differs

    def open(self, fingerprints: Dict[str, str], discard_other: bool) -> int:
        """Start or resume; return the number of finished articles found.

        ``fingerprints`` are compared key by key with a previous run's; on a mismatch the old progress is
        deleted when ``discard_other`` else a ``ValueError`` says how to proceed.
        """
        if self.meta_path.is_file():
            old = json.loads(self.meta_path.read_text(encoding="utf-8"))
            differs = self.check(fingerprints, discard_other)  # also: the folder holds only our entries
            if differs:
                logger.warning("Discarding progress in %s (different %s)", self.dir, ", ".join(differs))
                shutil.rmtree(self.dir)
            else:
                old.update(fingerprints)
                atomic_write_text(self.meta_path, json.dumps(old, sort_keys=True))
                self.drop_invalid()
                return len(self.finished())
        elif self.dir.exists():
            check_own_folder(self.dir, _progress_entry, "move them away or choose another output path.")
            shutil.rmtree(self.dir)  # no run.json: nothing was finished
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.meta_path, json.dumps(fingerprints, sort_keys=True))
        return 0

    def drop_invalid(self) -> List[int]:
        """Delete (with a warning) progress files that do not parse, e.g. truncated ones; return their indices.

        Their articles are then augmented again, so the output is always valid JSON.
        """
        dropped = []
        for index in self.finished():
            try:
                article = json.loads(self.load(index)[0])
                if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
                    raise ValueError("not an article with a 'paragraphs' list")
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                logger.warning("progress file %s is damaged (%s); augmenting that article again",
                               self._article_path(index), err)
                self._article_path(index).unlink()
                dropped.append(index)
        return dropped

    def _article_path(self, index: int) -> Path:
        return self.dir / f"article-{index:07d}.json"

    def finished(self) -> List[int]:
        """Indices of finished articles."""
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("article-*.json"))

    def is_done(self, index: int) -> bool:
        """Has article ``index`` been saved?"""
        return self._article_path(index).is_file()

    def save(self, index: int, article_json: str, stats: Dict[str, int]) -> None:
        """Store one finished article (already serialised) and its counters, atomically."""
        atomic_write_text(self._article_path(index), json.dumps({"stats": stats}) + "\n" + article_json)

    def load(self, index: int) -> Tuple[str, Dict[str, int]]:
        """(article JSON text, counters) of a finished article."""
        text = self._article_path(index).read_text(encoding="utf-8")
        first, _, rest = text.partition("\n")
        return rest, json.loads(first)["stats"]

    def remove(self) -> None:
        """Delete the progress directory (after the output is in place)."""
        shutil.rmtree(self.dir, ignore_errors=True)
