"""Inputs that used to become silently wrong results or tracebacks: bad answers, repeated ids, NaN in result
files, context windows with gaps."""

import json

import pytest

from haystack_distill.squad import SquadFormatError


@pytest.mark.parametrize("answer", [{"text": "Paris", "answer_start": True}, {"text": "", "answer_start": 0},
                                    {"text": "Paris", "answer_start": -6}, {"text": " ", "answer_start": 5}])
def test_answers_that_would_become_wrong_labels_are_refused(tmp_path, answer):
    from haystack_distill.squad import validate_squad_file

    context = "Paris is in France. Paris"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Where?", "answers": [answer]}]}]}]}))
    with pytest.raises(SquadFormatError, match="q1"):
        validate_squad_file(path)


def test_evaluation_refuses_repeated_question_ids():
    from haystack_distill.evaluation.reader import squad_questions

    para = {"context": "Paris is in France.", "qas": [{"id": "a", "question": "Where?", "answers": []}] * 2}
    with pytest.raises(ValueError, match="1 question ids occur more than once.*'a'"):
        squad_questions([para])
    assert len(squad_questions([{**para, "qas": para["qas"][:1]}], max_questions=5)) == 1


def test_result_files_are_strict_json(tmp_path):
    from haystack_distill.io import atomic_write_json

    path = atomic_write_json(tmp_path / "r.json", {"loss": float("nan"), "rows": [{"f1": float("-inf")}, 2.5]})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": None, "rows": [{"f1": None}, 2.5]}


def test_windows_with_gaps_are_refused_before_any_model_loads(monkeypatch, capsys):
    from haystack_distill import cli
    from haystack_distill.reader import DistillableFARMReader

    monkeypatch.setattr(DistillableFARMReader, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    code = cli.main(["evaluate-reader", "--reader", "x", "--squad", "y.json", "--max-seq-len", "128"])
    assert code == 2
    assert "doc_stride=128 must be smaller than max_seq_len - max_query_length = 128 - 64 = 64" in \
        capsys.readouterr().err


def test_a_yaml_config_with_aliases_is_refused_before_it_expands(tmp_path, capsys):
    from haystack_distill.cli import main

    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                   for p, c in zip("abcdefgh", "bcdefghi")]
    bomb.write_text("\n".join(lines) + "\n")
    assert main(["make-transfer", "--config", str(bomb)]) == 2
    assert "YAML aliases (*name) are not supported" in capsys.readouterr().err


def test_a_damaged_features_cache_is_recomputed_not_reused(tiny_models, tiny_squad, tmp_path, caplog):
    import logging

    import torch

    from haystack_distill.reader import DistillableFARMReader, data

    reader = DistillableFARMReader(str(tiny_models["student"]), use_gpu=False, max_seq_len=96, doc_stride=32,
                                   max_query_length=24, num_processes=0, progress_bar=False)
    proc = data.build_processor(reader, 96, 32, 24)
    paragraphs = data.read_paragraphs(tiny_squad / "train.json")
    fresh = data.cached_features(proc, paragraphs, True, tmp_path)
    (stored,) = (tmp_path / "features").glob("*.safetensors")
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0xFF  # a flipped byte in the tensor data: still a readable file, with other values
    stored.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = data.cached_features(proc, paragraphs, True, tmp_path)
    assert "is damaged or unverified" in caplog.text
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    stored.write_bytes(stored.read_bytes()[:100])  # truncated: recomputed too, no SafetensorError
    assert all(torch.equal(fresh[k], v) for k, v in data.cached_features(proc, paragraphs, True, tmp_path).items())


@pytest.mark.parametrize("content, match", [(b"\x7fELF\x02\x01\x01\x00" * 40, "binary"),
                                             ("caf\u00e9 au lait is served hot every single day\n".encode("latin-1"),
                                              "not UTF-8")])
def test_general_distillation_refuses_text_that_is_not_text(tmp_path, content, match):
    from haystack_distill.general import read_texts

    path = tmp_path / "texts.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_texts(path)
    with pytest.raises(ValueError, match="is a folder"):
        read_texts(tmp_path)
