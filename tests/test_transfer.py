"""make-transfer: the user's questions with the contexts Haystack's BM25 retrieves, as unlabelled SQuAD data."""

import json
import logging

import pytest

from haystack_distill.cli import main
from haystack_distill.reader.transfer import make_transfer
from haystack_distill.squad import unlabeled_paragraphs

DOCS = {"paris.txt": "Paris is the capital of France.\n\nThe Seine flows through Paris.",
        "sub/berlin.txt": "Berlin is the capital of Germany.\n\n\n\nThe Spree flows through Berlin."}


@pytest.fixture()
def inputs(tmp_path):
    docs = tmp_path / "docs"
    for name, text in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text, encoding="utf-8")
    questions = tmp_path / "questions.txt"
    questions.write_text("Which river flows through Berlin?\n\nWhat is the capital of France?\n"
                         "Which river flows through Berlin?\n", encoding="utf-8")
    return questions, docs


def test_each_question_gets_its_bm25_contexts(inputs, tmp_path, caplog):
    questions, docs = inputs
    with caplog.at_level(logging.WARNING):
        report = make_transfer(questions, docs, tmp_path / "transfer.json", top_k=1)
    assert "dropped 1 empty and 1 duplicated of 4" in caplog.text
    assert "dropped 1 empty and 0 duplicated of 5" in caplog.text  # the blank block between Berlin's paragraphs
    assert (report.questions, report.pairs) == (2, 2)
    paragraphs, dropped = unlabeled_paragraphs(tmp_path / "transfer.json")
    assert dropped == 0
    found = {qa["question"]: p["context"] for p in paragraphs for qa in p["qas"]}
    assert found == {"Which river flows through Berlin?": "The Spree flows through Berlin.",
                     "What is the capital of France?": "Paris is the capital of France."}
    titles = {a["title"] for a in json.loads((tmp_path / "transfer.json").read_text())["data"]}
    assert titles == {"paris.txt", "sub/berlin.txt"}


def test_top_k_contexts_per_question(inputs, tmp_path):
    questions, docs = inputs
    report = make_transfer(questions, docs, tmp_path / "t.json", top_k=3)
    assert report.pairs == 2 * 3 and report.paragraphs == 4


def test_bad_inputs_are_refused_before_retrieval(inputs, tmp_path):
    questions, docs = inputs
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Où est la tour Eiffel ?\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.txt is not UTF-8"):
        make_transfer(latin, docs, tmp_path / "a.json")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no question"):
        make_transfer(empty, docs, tmp_path / "a.json")
    (tmp_path / "nodocs").mkdir()
    with pytest.raises(ValueError, match="no .txt file"):
        make_transfer(questions, tmp_path / "nodocs", tmp_path / "a.json")
    (tmp_path / "a.json").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_transfer(questions, docs, tmp_path / "a.json")
    assert (tmp_path / "a.json").read_text() == "mine"


def test_cli_make_transfer(inputs, tmp_path, capsys):
    questions, docs = inputs
    out = tmp_path / "t.json"
    assert main(["make-transfer", "--questions", str(questions), "--documents", str(docs), "--output", str(out),
                 "--top-k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:4] == ["questions               2", "paragraphs              3", "question-context pairs  4"]
    assert out.is_file()
    assert printed[-1] == f"pass {out} to distil-reader or distil-tinybert as --unlabeled-filename"
    assert main(["make-transfer", "--questions", str(questions), "--documents", str(docs),
                 "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
