"""Transfer data from a user's own questions and documents: each question with the contexts Haystack 1.x's BM25
retrieval finds for it, written as the unlabelled SQuAD file the reader stages take (``unlabeled_filename``).

Questions: a text file, one per line, or a JSON list of strings. Documents: a ``.txt`` file or a folder of them
(paragraphs split at blank lines), or a SQuAD ``.json`` file (its contexts). Empty and duplicated questions and
paragraphs are dropped with a warning that counts them; a file that is not UTF-8 is refused, naming it.

Example:
    >>> from haystack_distill.reader.transfer import make_transfer   # doctest: +SKIP
    >>> report = make_transfer("queries.txt", "docs/", "data/transfer.json", top_k=3)   # doctest: +SKIP
    >>> report.questions, report.paragraphs   # doctest: +SKIP
    (1200, 2310)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

from ..io import atomic_write_json, decode_utf8, ensure_new_output

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
TOP_K = 3


@dataclass(frozen=True)
class TransferReport:
    """What :func:`make_transfer` wrote: questions kept, distinct paragraphs, (question, context) pairs."""

    output: Path
    questions: int
    paragraphs: int
    pairs: int


def read_utf8(path: Path, what: str) -> str:
    """The file's text; ``ValueError`` naming the file when it is not UTF-8 (or does not exist)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file.")
    return decode_utf8(path.read_bytes(), f"{what} {path}")


def unique_texts(texts: List[str], what: str) -> List[str]:
    """Stripped, non-empty, first occurrence of each; warns with the counts of empty and duplicated ones."""
    stripped = [" ".join(t.split()) for t in texts]
    kept = list(dict.fromkeys(t for t in stripped if t))
    empty, duplicated = sum(not t for t in stripped), sum(1 for t in stripped if t) - len(kept)
    if empty or duplicated:
        logger.warning("%s: dropped %d empty and %d duplicated of %d.", what, empty, duplicated, len(texts))
    return kept


def read_questions(path: PathLike) -> List[str]:
    """Questions from a text file (one per line) or a JSON list of strings."""
    path = Path(path)
    text = read_utf8(path, "--questions")
    if path.suffix.lower() == ".json":
        questions = json.loads(text)
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ValueError(f"--questions {path}: a .json file must hold a list of strings.")
    else:
        questions = text.splitlines()
    kept = unique_texts(questions, f"questions in {path}")
    if not kept:
        raise ValueError(f"--questions {path} holds no question; write one question per line.")
    return kept


def _paragraphs(text: str) -> List[str]:
    return text.replace("\r\n", "\n").split("\n\n")


def read_documents(path: PathLike) -> List[Tuple[str, str]]:
    """``(title, paragraph)`` pairs from a ``.txt`` file, a folder of ``.txt`` files or a SQuAD ``.json`` file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"--documents {path}: the folder holds no .txt file.")
        pairs = [(str(f.relative_to(path)), p) for f in files for p in _paragraphs(read_utf8(f, "--documents"))]
    elif path.suffix.lower() == ".json":
        from ..squad import iter_paragraphs, load_squad

        pairs = [("squad", p.get("context", "")) for p in iter_paragraphs(load_squad(path))]
    else:
        pairs = [(path.name, p) for p in _paragraphs(read_utf8(path, "--documents"))]
    titles = dict(reversed([(" ".join(p.split()), t) for t, p in pairs]))  # a paragraph's first title
    kept = unique_texts([p for _, p in pairs], f"paragraphs in {path}")
    if not kept:
        raise ValueError(f"--documents {path} holds no text; give .txt files with paragraphs split by blank lines.")
    return [(titles[p], p) for p in kept]


def retrieve(questions: List[str], paragraphs: List[Tuple[str, str]], top_k: int) -> List[List[int]]:
    """For each question the indices of its ``top_k`` paragraphs by Haystack 1.x's BM25 (in-memory store)."""
    from haystack import Document
    from haystack.document_stores import InMemoryDocumentStore
    from haystack.nodes import BM25Retriever

    store = InMemoryDocumentStore(use_bm25=True, progress_bar=False)
    store.write_documents([Document(content=text, id=str(i)) for i, (_, text) in enumerate(paragraphs)])
    retriever = BM25Retriever(store, top_k=top_k)
    found = retriever.retrieve_batch(questions, top_k=top_k, batch_size=256)
    return [[int(doc.id) for doc in docs] for docs in found]


def make_transfer(questions: PathLike, documents: PathLike, output: PathLike, top_k: int = TOP_K,
                  overwrite: bool = False) -> TransferReport:
    """Write ``output``: an unlabelled SQuAD file pairing each question with its ``top_k`` BM25 paragraphs.

    Each paragraph appears once, holding every question that retrieved it (no answers). The output is refused
    if it exists, unless ``overwrite``; it is written atomically.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r} (e.g. 3).")
    output = ensure_new_output(output, overwrite)
    asked, paragraphs = read_questions(questions), read_documents(documents)
    qas: Dict[int, List[Dict[str, object]]] = {}
    for q_idx, hits in enumerate(retrieve(asked, paragraphs, top_k)):
        for p_idx in hits:
            qas.setdefault(p_idx, []).append({"id": f"transfer-{q_idx}-{p_idx}", "question": asked[q_idx],
                                              "answers": []})
    articles: Dict[str, List[Dict[str, object]]] = {}
    for p_idx in sorted(qas):
        title, context = paragraphs[p_idx]
        articles.setdefault(title, []).append({"context": context, "qas": qas[p_idx]})
    data = [{"title": title, "paragraphs": paras} for title, paras in articles.items()]
    atomic_write_json(output, {"version": "v2.0", "data": data})
    return TransferReport(output, len(asked), len(qas), sum(len(v) for v in qas.values()))
