"""General distillation (``haystack_distill.general`` and ``distil-general``) on tiny random encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_bert

from haystack_distill.general import (
    GeneralDistillationConfig,
    GeneralDistillationLoss,
    distil_general,
    read_texts,
    text_windows,
)
from haystack_distill.layers import count_layers, keep_layers, resolve_layer_mapping

WORDS = "the year of paris was what the company of france is and where the city a an in to when who which".split()


def _texts(path: Path, n: int = 60) -> Path:
    lines = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(8 + 5 * (i % 4))) for i in range(n)]
    path.write_text("= Heading =\n\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A 4-layer encoder whose layers matter (a larger init range than BERT's 0.02)."""
    from transformers import AutoModel

    path = build_tiny_bert(tmp_path_factory.mktemp("gd") / "teacher", layers=4, hidden=32, heads=4, seed=1, qa=False)
    model = AutoModel.from_pretrained(str(path))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0, 0.3)
    model.save_pretrained(str(path))
    return path


FAST = dict(max_seq_len=32, batch_size=8, learning_rate=3e-3, show_progress=False)


def _objective(student, teacher_model, data, mapping) -> float:
    loss = GeneralDistillationLoss(student.eval(), teacher_model, mapping)
    with torch.no_grad():
        return float(loss({k: v[:64] for k, v in data.items()}))


def test_student_learns_the_teacher_and_saves_a_plain_encoder(teacher, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    texts = _texts(tmp_path / "texts.txt")
    result = distil_general(teacher, texts, tmp_path / "out", layers=2, epochs=4, **FAST)
    assert result["keep"] == [0, 3] and result["mapping"] == {0: 1, 1: 3}
    student = AutoModel.from_pretrained(str(tmp_path / "out"))
    assert count_layers(student) == 2 and (tmp_path / "out" / "model.safetensors").is_file()
    assert AutoTokenizer.from_pretrained(str(tmp_path / "out")) is not None
    teacher_model = AutoModel.from_pretrained(str(teacher)).eval()
    data = text_windows(AutoTokenizer.from_pretrained(str(teacher)), read_texts(texts), 32)
    mapping = resolve_layer_mapping("uniform", 2, 4)
    before = _objective(keep_layers(teacher_model, [0, 3]), teacher_model, data, mapping)
    after = _objective(student, teacher_model, data, mapping)
    assert after < 0.7 * before, (before, after)
    assert not (tmp_path / "out.checkpoints").exists()  # our checkpoints are cleared once the model is saved


def test_gd_student_loads_as_reader_and_sentence_model(teacher, tmp_path):
    from sentence_transformers import SentenceTransformer

    from haystack_distill.reader import DistillableFARMReader

    distil_general(teacher, _texts(tmp_path / "texts.txt"), tmp_path / "out", layers=2, epochs=1, **FAST)
    reader = DistillableFARMReader(str(tmp_path / "out"), use_gpu=False, max_seq_len=64, doc_stride=16,
                                   max_query_length=16, progress_bar=False, num_processes=0)
    assert count_layers(reader.inferencer.model.language_model.model) == 2
    assert SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["a city"]).shape == (1, 32)


def test_long_lines_become_windows_not_cut(teacher):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    line = " ".join(WORDS * 4)
    ids = tokenizer([line], add_special_tokens=False)["input_ids"][0]
    data = text_windows(tokenizer, [line], max_seq_len=16)
    body = [t for row, m in zip(data["input_ids"], data["attention_mask"]) for t in row[m.bool()][1:-1].tolist()]
    assert body == ids and len(data["input_ids"]) == -(-len(ids) // 14)


def test_interrupted_run_resumes_exactly(teacher, tmp_path, monkeypatch):
    texts = _texts(tmp_path / "texts.txt")
    settings = dict(layers=2, epochs=2, checkpoint_every=3, **FAST)
    distil_general(teacher, texts, tmp_path / "whole", **settings)
    original, calls = GeneralDistillationLoss.forward, {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] > 4 * 7:  # 4 length slices per step: killed during step 8, after the step-6 checkpoint
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(GeneralDistillationLoss, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        distil_general(teacher, texts, tmp_path / "resumed", **settings)
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.checkpoints" / "step-6").is_dir()
    monkeypatch.setattr(GeneralDistillationLoss, "forward", original)
    distil_general(teacher, texts, tmp_path / "resumed", **settings)
    from safetensors.torch import load_file

    whole, resumed = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "resumed"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize("overrides, match", [
    (dict(layers=5), "cannot keep 5 of 4"),
    (dict(keep=[0, 7]), "lacks"),
    (dict(keep=[0, 1], layers=3), "agree"),
    (dict(), "how deep"),
    (dict(layers=2, learning_rate=-1.0), "learning_rate"),
])
def test_bad_settings_are_refused(teacher, tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        distil_general(teacher, _texts(tmp_path / "texts.txt"), tmp_path / "out", **{**FAST, **overrides})


def test_bad_inputs_are_refused_before_training(teacher, tmp_path):
    (tmp_path / "empty.txt").write_text("\n= Title =\n\n")
    with pytest.raises(ValueError, match="at least"):
        distil_general(teacher, tmp_path / "empty.txt", tmp_path / "out", layers=2, **FAST)
    with pytest.raises(FileNotFoundError, match="not found"):
        distil_general(teacher, tmp_path / "missing.txt", tmp_path / "out", layers=2, **FAST)
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        distil_general(tmp_path / "not_a_model", _texts(tmp_path / "t.txt"), tmp_path / "out", layers=2, **FAST)
    with pytest.raises(ValueError, match="input folder"):
        distil_general(teacher, _texts(tmp_path / "t.txt"), teacher / "student", layers=2, **FAST)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep me")
    with pytest.raises(ValueError, match="did not write"):
        distil_general(teacher, _texts(tmp_path / "t.txt"), tmp_path / "mine", layers=2, **FAST)
    assert (tmp_path / "mine" / "notes.md").read_text() == "keep me"


def test_narrower_student_gets_trained_projections(teacher, tmp_path):
    student = build_tiny_bert(tmp_path / "narrow", layers=2, hidden=16, heads=2, seed=3, qa=False)
    result = distil_general(teacher, _texts(tmp_path / "texts.txt"), tmp_path / "out", student=str(student),
                            epochs=1, **FAST)
    assert result["keep"] is None and result["hidden"] > 0


def test_cli_runs_and_reports_bad_input_in_one_line(teacher, tmp_path, capsys):
    from haystack_distill.cli import main

    texts = _texts(tmp_path / "texts.txt")
    args = ["distil-general", "--teacher", str(teacher), "--texts", str(texts), "--max-seq-len", "32", "--quiet",
            "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--output", str(tmp_path / "out"), "--keep", "0,3"]) == 0
    assert count_layers(__import__("transformers").AutoModel.from_pretrained(str(tmp_path / "out"))) == 2
    assert main([*args, "--output", str(tmp_path / "bad"), "--layers", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot keep 9 of 4" in err[0]


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="stride"):
        GeneralDistillationConfig(layers=2, max_seq_len=16, stride=20).validate()
