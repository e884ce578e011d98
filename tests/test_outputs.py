"""What every output folder looks like, on tiny models: usual file and folder modes, a model card with the Hugging
Face metadata, one copy of a reader's weights that Haystack and transformers both load, no Hub access."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Dict, Iterator

import pytest
import torch
from conftest import build_tiny_bert

from haystack_distill.model_card import README, base_model_of, cell

READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)
QUESTIONS = ["Where was Nadia born?", "Who founded the company?"]
CONTEXTS = ["Nadia was born in Paris, France, in 1990.", "The company was founded in 1999 by a baker in Lyon."]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> Dict[str, str]:
    """``{relative path: octal mode}`` of the folder itself and everything in it."""
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


def assert_usual_modes(folder: Path, file_mode: str = "0o644", dir_mode: str = "0o755") -> None:
    wrong = {name: mode for name, mode in modes(folder).items()
             if mode != (dir_mode if (folder / name).is_dir() else file_mode)}
    assert not wrong, wrong


def card_of(folder: Path) -> tuple:
    """(metadata as huggingface_hub reads it, the card's text)."""
    from huggingface_hub import metadata_load

    return metadata_load(folder / README), (folder / README).read_text()


def listed(folder: Path) -> set:
    from haystack_distill.safety import MANIFEST

    return set(json.loads((folder / MANIFEST).read_text())["files"])


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, "0o644", "0o755"), (0o027, "0o640", "0o750")])
def test_atomic_dir_gives_files_and_folders_the_umask_modes(tmp_path, mask, file_mode, dir_mode):
    from safetensors.torch import save_file

    from haystack_distill.io import atomic_dir

    with umask(mask), atomic_dir(tmp_path / "out") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors writes 0600
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.json").write_text("{}")
    assert oct(stat.S_IMODE((tmp_path / "out").stat().st_mode)) == dir_mode  # mkdtemp made it 0700
    assert_usual_modes(tmp_path / "out", file_mode, dir_mode)


# ---------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def reader_dir(tiny_models, tiny_squad, tmp_path_factory) -> Path:
    """A tiny student distilled with a dev file (so the run measures EM/F1), saved under umask 022."""
    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)
    student = DistillableFARMReader(str(tiny_models["student"]), **READER_KW)
    out = tmp_path_factory.mktemp("outputs") / "student"
    with umask(0o022):
        student.distil_prediction_layer_from(
            teacher, data_dir=str(tiny_squad), train_filename="train.json", dev_filename="dev.json",
            save_dir=str(out), batch_size=8, n_epochs=1, evaluate_every=0, show_progress=False,
            learning_rate=1e-3, temperature=2.0)
    return out


def test_reader_folder_is_readable_by_others(reader_dir):
    assert_usual_modes(reader_dir)


def test_reader_folder_holds_one_copy_of_the_weights(reader_dir):
    weights = sorted(p.name for p in reader_dir.iterdir() if p.suffix in (".bin", ".safetensors", ".pt", ".onnx"))
    assert weights == ["language_model.bin", "prediction_head_0.bin"]  # no model.safetensors beside them
    index = json.loads((reader_dir / "pytorch_model.bin.index.json").read_text())
    assert set(index["weight_map"].values()) == {"language_model.bin"}
    state = torch.load(reader_dir / "language_model.bin", weights_only=True)
    assert set(index["weight_map"]) == {k for k in state if ".pooler." not in k}  # the pooler: Haystack's only
    assert {"qa_outputs.weight", "qa_outputs.bias"} <= set(state)
    head = torch.load(reader_dir / "prediction_head_0.bin", weights_only=True)
    assert sum(t.numel() for t in head.values()) == 16 * 2 + 2 + 1  # the span head and its temperature: tiny


def test_haystack_and_transformers_load_the_folder_and_agree(reader_dir):
    from haystack.nodes import FARMReader
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    batch = AutoTokenizer.from_pretrained(str(reader_dir))(QUESTIONS, CONTEXTS, padding=True, return_tensors="pt")
    haystack = FARMReader(str(reader_dir), **READER_KW)
    plain = AutoModelForQuestionAnswering.from_pretrained(str(reader_dir)).eval()
    with torch.no_grad():
        logits = haystack.inferencer.model.eval().forward(
            input_ids=batch["input_ids"], segment_ids=batch["token_type_ids"], padding_mask=batch["attention_mask"])[0]
        out = plain(**batch)
    torch.testing.assert_close(out.start_logits, logits[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.end_logits, logits[..., 1], atol=1e-5, rtol=1e-5)
    qa = pipeline("question-answering", model=str(reader_dir), device="cpu")
    for question, context in zip(QUESTIONS, CONTEXTS):
        span = qa(question=question, context=context, align_to_words=False, max_answer_len=1000)  # as Haystack
        ours = haystack.predict_on_texts(question, [context], top_k=1)["answers"][0]
        offsets = ours.offsets_in_context[0]
        assert (span["answer"], span["start"], span["end"]) == (ours.answer, offsets.start, offsets.end)


def test_reader_card_names_teacher_data_recipe_and_measured_scores(reader_dir, tiny_models, tiny_squad):
    meta, text = card_of(reader_dir)
    assert meta["pipeline_tag"] == "question-answering" and meta["library_name"] == "transformers"
    assert {"knowledge-distillation", "haystack-distill", "haystack"} <= set(meta["tags"])
    assert "base_model" not in meta  # the student started from a local folder without a card
    record = json.loads((reader_dir / "distillation.json").read_text())
    assert record["teacher_model"] == str(tiny_models["teacher"]) and record["student_init"] == str(
        tiny_models["student"])
    assert f"Teacher: `{tiny_models['teacher']}`" in text and f"`{tiny_squad / 'dev.json'}`" in text
    assert "| temperature | 2.0 |" in text and "| stage | prediction_layer |" in text
    for metric in ("em", "f1", "loss"):
        assert f"| {metric} | {cell(record['metrics'][metric])} |" in text
    assert 'FARMReader("student"' in text
    assert README in listed(reader_dir) and "pytorch_model.bin.index.json" in listed(reader_dir)


def test_a_later_run_replaces_the_folder(reader_dir):
    from haystack_distill.reader.output import check_save_dir
    from haystack_distill.safety import foreign_files

    assert foreign_files(reader_dir) == []
    assert check_save_dir(reader_dir) == reader_dir.resolve()


def test_transformers_export_gets_a_card_and_the_usual_modes(reader_dir, tmp_path):
    from haystack_distill.reader.export import export_reader

    with umask(0o022):
        out = export_reader(reader_dir, tmp_path / "hf", fmt="transformers")
    assert_usual_modes(out)
    meta, text = card_of(out)
    assert (meta["pipeline_tag"], meta["library_name"]) == ("question-answering", "transformers")
    assert f"`{reader_dir}` exported by haystack-distill" in text and "| export_format | transformers |" in text
    record = json.loads((reader_dir / "distillation.json").read_text())
    assert f"| f1 | {cell(record['metrics']['f1'])} |" in text and "this export was not evaluated" in text


def test_student_cut_from_a_teacher_is_one_copy_with_a_card(tiny_models, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    from haystack_distill.layers import count_layers
    from haystack_distill.reader import DistillableFARMReader, student_from_teacher

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)
    with umask(0o022):
        student = student_from_teacher(teacher, [0, 3], tmp_path / "cut", **READER_KW)
    assert_usual_modes(tmp_path / "cut")
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert count_layers(AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "cut"))) == 2
    assert count_layers(student.inferencer.model.language_model.model) == 2
    meta, text = card_of(tmp_path / "cut")
    assert meta["pipeline_tag"] == "question-answering" and "not trained yet" in text
    assert f"Started from: `{tiny_models['teacher']}`" in text and "| keep | 0, 3 |" in text


# ---------------------------------------------------------------- the card module


def test_base_model_is_a_hub_id_or_the_card_of_the_folder_we_started_from(tmp_path):
    from haystack_distill.model_card import CardInfo, write_model_card

    assert base_model_of("deepset/roberta-base-squad2") == "deepset/roberta-base-squad2"
    assert base_model_of(tmp_path) is None  # a local folder without a card
    write_model_card(tmp_path, CardInfo("m", "question-answering", base_model="deepset/roberta-base-squad2"))
    assert base_model_of(tmp_path) == "deepset/roberta-base-squad2"
    (tmp_path / README).write_text("---\nbase_model: google-bert/bert-base-uncased\n---\n# another tool's card\n")
    assert base_model_of(tmp_path) is None  # that is the model's parent, not the model


# ---------------------------------------------------------------- general distillation, embeddings, MLM head


def _texts(path: Path) -> Path:
    words = "the year of paris was what the company of france is and where the city a an in to when who".split()
    path.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(10)) for i in range(40)) + "\n")
    return path


def test_general_distillation_output_has_card_and_modes(tmp_path):
    from haystack_distill.general import distil_general

    teacher = build_tiny_bert(tmp_path / "teacher", layers=4, hidden=32, heads=4, seed=1, qa=False)
    texts = _texts(tmp_path / "texts.txt")
    with umask(0o022):
        result = distil_general(teacher, texts, tmp_path / "gd", layers=2, epochs=1, max_seq_len=32, batch_size=8,
                                show_progress=False)
    assert_usual_modes(tmp_path / "gd")
    meta, text = card_of(tmp_path / "gd")
    assert (meta["pipeline_tag"], meta["library_name"]) == ("feature-extraction", "transformers")
    assert f"Teacher: `{teacher}`" in text and f"`{texts}`" in text and "| keep | 0, 3 |" in text
    assert f"| loss | {cell(result['loss'])} |" in text and README in listed(tmp_path / "gd")


@pytest.fixture(scope="module")
def sentence_teacher(tmp_path_factory) -> Path:
    from haystack_distill.embeddings.model_io import sentence_transformer_from_transformers

    root = tmp_path_factory.mktemp("st")
    hf = build_tiny_bert(root / "hf", layers=2, hidden=16, heads=2, seed=4, qa=False)
    sentence_transformer_from_transformers(hf).save(str(root / "teacher"), create_model_card=False)
    return root / "teacher"


def test_distil_embeddings_output_has_card_modes_and_loads_by_relative_path(sentence_teacher, tmp_path,
                                                                           monkeypatch):
    import argparse

    import sentence_transformers.util
    from sentence_transformers import SentenceTransformer

    from haystack_distill.embeddings.cli import register

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(f"the city {w} was in paris and france" for w in "abcdefghijklmnop") + "\n")
    subparsers = argparse.ArgumentParser().add_subparsers(dest="command")
    register(subparsers)  # the distil-embeddings sub-command alone
    args = subparsers.choices["distil-embeddings"].parse_args(
        ["--teacher", str(sentence_teacher), "--layers", "1", "--sentences", str(sentences), "--output",
         str(tmp_path / "emb"), "--epochs", "1", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")])
    with umask(0o022):
        code = args.func(args)
    assert code == 0
    assert_usual_modes(tmp_path / "emb")
    meta, text = card_of(tmp_path / "emb")
    assert (meta["pipeline_tag"], meta["library_name"]) == ("sentence-similarity", "sentence-transformers")
    assert {"knowledge-distillation", "haystack-distill", "sentence-transformers"} <= set(meta["tags"])
    metrics = json.loads((tmp_path / "emb" / "distillation_metrics.json").read_text())
    assert f"Teacher: `{sentence_teacher}`" in text and f"`{sentences}`" in text
    assert f"| steps | {metrics['steps']} |" in text and "| loss | mse |" in text
    assert README in listed(tmp_path / "emb")

    hub_calls = []
    monkeypatch.setattr(sentence_transformers.util, "hf_hub_download",
                        lambda *args, **kwargs: hub_calls.append(args) or None)
    monkeypatch.chdir(tmp_path)
    model = SentenceTransformer("emb", device="cpu")  # a relative path, as in the README
    assert hub_calls == [] and model.encode(["a city"]).shape == (1, 16)


def test_cli_runs_offline_unless_told_otherwise(monkeypatch):
    from haystack_distill import cli

    seen = []

    def parser_built_after_the_env():  # before any sub-command module (and huggingface_hub) is imported
        seen.append((os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE")))
        raise SystemExit(0)

    monkeypatch.setattr(cli, "build_parser", parser_built_after_the_env)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice wins
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert seen == [("1", "1"), ("0", "1")]


def test_mlm_head_output_has_card_and_modes(tmp_path):
    from augment.mlm_head import fit_mlm_head

    encoder = build_tiny_bert(tmp_path / "encoder", qa=False, hidden=32, heads=2)
    text = _texts(tmp_path / "text.txt")
    with umask(0o022):
        metrics = fit_mlm_head(encoder, text, tmp_path / "mlm", steps=5, seq_len=16, max_sequences=20,
                               show_progress=False)
    assert_usual_modes(tmp_path / "mlm")
    meta, text_md = card_of(tmp_path / "mlm")
    assert (meta["pipeline_tag"], meta["library_name"]) == ("fill-mask", "transformers")
    assert f"`{encoder}`" in text_md and f"| train_loss_last | {cell(metrics['train_loss_last'])} |" in text_md
