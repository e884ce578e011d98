"""General distillation (``haystack_distill.general`` and ``distil-general``) on tiny random encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
from haystack_distill.layer_match import LayerMatchLoss
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
    original, calls = LayerMatchLoss.forward, {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] > 4 * 7:  # 4 length slices per step: killed during step 8, after the step-6 checkpoint
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(LayerMatchLoss, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        distil_general(teacher, texts, tmp_path / "resumed", **settings)
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.checkpoints" / "step-6").is_dir()
    monkeypatch.setattr(LayerMatchLoss, "forward", original)
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


# ---------------------------------------------------------------- a sentence-transformers teacher


def _sentence_teacher(encoder: Path, path: Path, pooling: str = "cls", dense: bool = False) -> Path:
    """``encoder`` wrapped as a saved SentenceTransformer: CLS pooling (not the default mean), [Dense,] Normalize."""
    from sentence_transformers import SentenceTransformer, models

    modules = [models.Transformer(str(encoder), max_seq_length=64), models.Pooling(32, pooling_mode=pooling)]
    if dense:
        torch.manual_seed(0)
        modules.append(models.Dense(32, 8))
    SentenceTransformer(modules=[*modules, models.Normalize()], device="cpu").save(str(path), create_model_card=False)
    return path


@pytest.fixture(scope="module")
def sentence_teacher(teacher, tmp_path_factory) -> Path:
    return _sentence_teacher(teacher, tmp_path_factory.mktemp("st") / "teacher")


@pytest.fixture(scope="module")
def sentence_student(sentence_teacher, tmp_path_factory) -> tuple:
    """(GD folder of the sentence-transformers teacher, result of distil_general)."""
    root = tmp_path_factory.mktemp("st-gd")
    result = distil_general(sentence_teacher, _texts(root / "texts.txt"), root / "out", layers=2, epochs=1, **FAST)
    return root / "out", result


def test_gd_of_a_sentence_transformer_keeps_its_pooling_and_normalize(sentence_student):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    out, result = sentence_student
    assert result["sentence_transformers"] is True
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json"):
        assert (out / name).is_file(), name
    model = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    assert model[1].pooling_mode_cls_token and not model[1].pooling_mode_mean_tokens and model.max_seq_length == 64
    texts = ["the city of paris", "what year was the company"]
    batch = AutoTokenizer.from_pretrained(str(out))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = AutoModel.from_pretrained(str(out))(**batch).last_hidden_state[:, 0]
    expected = torch.nn.functional.normalize(cls, dim=-1).numpy()
    assert model.encode(texts) == pytest.approx(expected, abs=1e-5)


def test_embedding_commands_and_readers_accept_the_gd_folder(sentence_student, sentence_teacher, tmp_path, capsys):
    from haystack_distill.cli import main
    from haystack_distill.embeddings import load_sentence_transformer
    from haystack_distill.embeddings.sts import evaluate_sts, read_sts
    from haystack_distill.reader import DistillableFARMReader

    out, _ = sentence_student
    lines = [" ".join(WORDS[i:i + 5]) for i in range(12)]
    sts = tmp_path / "sts.csv"
    sts.write_text("".join(f"g\tf\t2012\t{i}\t{i % 5}.0\t{lines[i]}\t{lines[i + 1]}\n" for i in range(10)))
    assert main(["eval-sts", "--model", str(out), "--sts", str(sts)]) == 0
    score = 100 * evaluate_sts(load_sentence_transformer(out), read_sts(sts))
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == f"{score:.2f}"
    (tmp_path / "sentences.txt").write_text("\n".join(lines) + "\n")
    assert main(["distil-embeddings", "--teacher", str(sentence_teacher), "--student", str(out), "--sentences",
                 str(tmp_path / "sentences.txt"), "--output", str(tmp_path / "emb"), "--batch-size", "4"]) == 0
    assert [type(m).__name__ for m in load_sentence_transformer(tmp_path / "emb")][1:] == ["Pooling", "Normalize"]
    reader = DistillableFARMReader(str(out), use_gpu=False, max_seq_len=64, doc_stride=16, max_query_length=16,
                                   progress_bar=False, num_processes=0)
    assert count_layers(reader.inferencer.model.language_model.model) == 2


def test_narrower_student_gets_the_teachers_modules_at_its_width(sentence_teacher, tmp_path):
    from sentence_transformers import SentenceTransformer

    student = build_tiny_bert(tmp_path / "narrow", layers=2, hidden=16, heads=2, seed=3, qa=False)
    result = distil_general(sentence_teacher, _texts(tmp_path / "texts.txt"), tmp_path / "out", student=str(student),
                            epochs=1, **FAST)
    model = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert result["sentence_transformers"] and model.get_sentence_embedding_dimension() == 16
    embeddings = model.encode(["the city of paris"])
    assert embeddings.shape == (1, 16) and np.linalg.norm(embeddings) == pytest.approx(1.0, abs=1e-5)


def test_width_bound_modules_and_a_narrower_student_leave_a_plain_encoder(teacher, tmp_path, caplog):
    st_teacher = _sentence_teacher(teacher, tmp_path / "dense-teacher", pooling="mean", dense=True)
    student = build_tiny_bert(tmp_path / "narrow", layers=2, hidden=16, heads=2, seed=3, qa=False)
    result = distil_general(st_teacher, _texts(tmp_path / "texts.txt"), tmp_path / "out", student=str(student),
                            epochs=1, **FAST)
    assert result["sentence_transformers"] is False and not (tmp_path / "out" / "modules.json").exists()
    assert "Dense expect width 32, the student has 16" in caplog.text
    same_width = distil_general(st_teacher, _texts(tmp_path / "texts.txt"), tmp_path / "out2", layers=2, epochs=1,
                                **FAST)
    from sentence_transformers import SentenceTransformer

    assert same_width["sentence_transformers"]
    names = [type(m).__name__ for m in SentenceTransformer(str(tmp_path / "out2"), device="cpu")]
    assert names == ["Transformer", "Pooling", "Dense", "Normalize"]


def test_a_broken_modules_json_is_refused_before_any_model_loads(sentence_teacher, tmp_path, monkeypatch):
    import shutil

    import haystack_distill.general.distil as distil

    broken = tmp_path / "teacher"
    shutil.copytree(sentence_teacher, broken)
    (broken / "modules.json").write_text("[{\"idx\": 0")
    monkeypatch.setattr(distil, "load_encoder", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match=r"modules.json is not valid JSON.*remove it"):
        distil_general(broken, _texts(tmp_path / "texts.txt"), tmp_path / "out", layers=2, **FAST)
