"""Deploying a distilled reader: one folder for Haystack and transformers, ONNX (fp32/int8) exports, scoring."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)
QUESTIONS = ["Where was Nadia born?", "who founded the company?"]
CONTEXTS = ["Nadia was born in Paris, France, in 1990.", "The company was founded in 1999 by a baker in Lyon."]


@pytest.fixture(scope="module")
def student_dir(tiny_models, tiny_squad, tmp_path_factory):
    """A tiny student distilled from the tiny teacher (saved by the library, so it holds both formats)."""
    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)
    student = DistillableFARMReader(str(tiny_models["student"]), **READER_KW)
    out = tmp_path_factory.mktemp("export") / "student"
    student.distil_prediction_layer_from(
        teacher, data_dir=str(tiny_squad), train_filename="train.json", save_dir=str(out), batch_size=8,
        n_epochs=1, evaluate_every=0, show_progress=False, learning_rate=1e-3, distillation_loss_weight=0.5)
    return out


@pytest.fixture(scope="module")
def exports(student_dir, tmp_path_factory):
    """fp32 and int8 ONNX exports of the student."""
    from haystack_distill.reader.export import export_reader

    root = tmp_path_factory.mktemp("onnx")
    return {"fp32": export_reader(student_dir, root / "fp32", fmt="onnx"),
            "int8": export_reader(student_dir, root / "int8", fmt="onnx", int8=True)}


def _batch(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))(QUESTIONS, CONTEXTS, padding=True, return_tensors="pt")


def _haystack_logits(folder, batch):
    from haystack_distill.reader.export import load_reader

    model = load_reader(folder, **READER_KW).inferencer.model
    with torch.no_grad():
        logits = model.eval().forward(input_ids=batch["input_ids"], segment_ids=batch["token_type_ids"],
                                      padding_mask=batch["attention_mask"])[0]
    return logits[..., 0], logits[..., 1]


def test_saved_student_loads_in_haystack_and_transformers_with_equal_logits(student_dir):
    from transformers import AutoModelForQuestionAnswering, pipeline

    assert (student_dir / "language_model.bin").is_file() and not (student_dir / "model.safetensors").exists()
    batch = _batch(student_dir)
    start, end = _haystack_logits(student_dir, batch)
    model = AutoModelForQuestionAnswering.from_pretrained(str(student_dir)).eval()
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(out.start_logits, start, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.end_logits, end, atol=1e-5, rtol=1e-5)
    answer = pipeline("question-answering", model=str(student_dir), device="cpu")(
        question=QUESTIONS[0], context=CONTEXTS[0])
    assert answer["answer"] and answer["answer"] in CONTEXTS[0]


def test_confidence_temperature_is_folded_into_the_plain_head(tiny_models):
    from haystack_distill.reader.export import load_reader, transformers_qa_model

    reader = load_reader(tiny_models["student"], **READER_KW)
    head = reader.inferencer.model.prediction_heads[0]
    head.temperature_for_confidence.data.fill_(2.5)
    batch = _batch(tiny_models["student"])
    with torch.no_grad():
        logits = reader.inferencer.model.eval().forward(
            input_ids=batch["input_ids"], segment_ids=batch["token_type_ids"], padding_mask=batch["attention_mask"])[0]
        out = transformers_qa_model(reader.inferencer.model)(**batch)
    torch.testing.assert_close(out.start_logits, logits[..., 0], atol=1e-5, rtol=1e-5)
    assert reader.inferencer.model.language_model.model.pooler is not None  # the live reader is unchanged


def test_transformers_export_reloads_in_both_loaders(student_dir, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    from haystack_distill.reader.export import export_reader

    out = export_reader(student_dir, tmp_path / "hf", fmt="transformers")
    assert not (out / "language_model.bin").exists() and (out / "model.safetensors").is_file()
    batch = _batch(out)
    start, end = _haystack_logits(out, batch)  # FARMReader converts the plain checkpoint
    with torch.no_grad():
        plain = AutoModelForQuestionAnswering.from_pretrained(str(out)).eval()(**batch)
    torch.testing.assert_close(plain.start_logits, start, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain.end_logits, _haystack_logits(student_dir, batch)[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_size, length", [(1, 7), (3, 40)])
def test_onnx_runs_in_onnxruntime_close_to_torch(student_dir, exports, batch_size, length):
    from haystack_distill.reader.export import onnx_session

    torch.manual_seed(0)
    ids = torch.randint(5, 60, (batch_size, length))
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 3:] = 1
    start, end = _haystack_logits(student_dir, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    for name, atol in (("fp32", 1e-4), ("int8", 0.15)):
        session = onnx_session(exports[name], threads=1)
        assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
        assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
        onnx_start, onnx_end = session.run(None, feed)
        assert onnx_start.shape == (batch_size, length)
        np.testing.assert_allclose(onnx_start, start.numpy(), atol=atol, err_msg=name)
        np.testing.assert_allclose(onnx_end, end.numpy(), atol=atol, err_msg=name)


def test_int8_export_quantizes_the_weights_and_embeddings(exports):
    import onnx

    graph = onnx.load(str(exports["int8"] / "model.onnx")).graph
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    int8 = {t.name for t in graph.initializer if t.data_type in eight_bit}
    assert any("word_embeddings" in name for name in int8)
    assert sum("MatMulInteger" == n.op_type or n.op_type.startswith("Q") for n in graph.node) >= 6
    weights = {k: sum(len(t.raw_data) for t in onnx.load(str(v / "model.onnx")).graph.initializer)
               for k, v in exports.items()}
    assert weights["int8"] < 0.35 * weights["fp32"]  # the file of a tiny model is mostly graph, not weights


def test_int8_export_scales_every_output_channel_of_the_matrices(exports):
    """Per-channel weights: each int8 MatMul weight of shape (in, out) has one scale per output column."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(exports["int8"] / "model.onnx")).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert matmuls
    for node in matmuls:
        weight = tensors[node.input[1]]
        scale = tensors[node.input[1].replace("_quantized", "_scale")]
        assert weight.ndim == 2 and scale.shape == (weight.shape[1],), node.name


def test_export_is_deterministic_and_never_overwrites(student_dir, exports, tmp_path):
    from haystack_distill.reader.export import ExportError, export_reader

    again = export_reader(student_dir, tmp_path / "again", fmt="onnx", int8=True)
    assert (again / "model.onnx").read_bytes() == (exports["int8"] / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        export_reader(student_dir, exports["fp32"], fmt="onnx")


def test_onnx_export_answers_in_farmreader_like_torch(student_dir, exports):
    from haystack import Document

    from haystack_distill.reader.export import load_reader

    answers = {}
    for name, folder in (("torch", student_dir), ("onnx", exports["fp32"])):
        reader = load_reader(folder, **READER_KW)
        result = reader.predict_batch(queries=QUESTIONS, documents=[[Document(content=c)] for c in CONTEXTS], top_k=1)
        answers[name] = [a[0].answer for a in result["answers"]]
        if name == "onnx":
            assert type(reader.inferencer.model).__name__ == "ONNXAdaptiveModel"
    assert answers["onnx"] == answers["torch"]


def test_benchmark_reader_scores_onnx_and_int8_readers(student_dir, exports, tiny_squad):
    from transformers import AutoModelForQuestionAnswering

    from haystack_distill.evaluation import benchmark_reader
    from haystack_distill.reader.export import load_reader, torch_int8_reader

    torch_int8 = torch_int8_reader(load_reader(student_dir, **READER_KW))
    rows = benchmark_reader({"torch": student_dir, "onnx": exports["fp32"], "onnx_int8": exports["int8"],
                             "torch_int8": torch_int8}, tiny_squad / "dev.json", reader_kwargs=READER_KW)
    by = {r["reader"]: r for r in rows}
    assert (by["onnx"]["em"], by["onnx"]["f1"]) == pytest.approx((by["torch"]["em"], by["torch"]["f1"]))
    plain = AutoModelForQuestionAnswering.from_pretrained(str(student_dir))  # the Haystack model adds a pooler
    assert by["onnx"]["parameters"] == sum(p.numel() for p in plain.parameters())
    assert by["onnx_int8"]["parameters"] > by["onnx"]["parameters"]  # + scales and zero points
    assert by["torch_int8"]["parameters"] == by["torch"]["parameters"]
    assert 0 < by["torch_int8"]["mb"] < 2 * by["torch"]["mb"]  # hidden 16: pickling overhead outweighs int8
    assert all(0 <= r["f1"] <= 100 and r["questions_per_second"] > 0 for r in rows)


def test_older_folders_with_two_copies_count_their_weights_once_on_disk(student_dir, tmp_path):
    import shutil

    from haystack_distill.evaluation.reader import disk_size_mb
    from haystack_distill.reader.export import load_reader, write_transformers_checkpoint

    def total(folder):
        return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20

    assert disk_size_mb(student_dir) == pytest.approx(total(student_dir))  # one copy: nothing to skip
    legacy = Path(shutil.copytree(student_dir, tmp_path / "legacy"))  # + model.safetensors, as before one copy
    write_transformers_checkpoint(load_reader(student_dir, **READER_KW).inferencer.model, None, legacy)
    copy = (legacy / "model.safetensors").stat().st_size / 2**20
    assert disk_size_mb(legacy) == pytest.approx(total(legacy) - copy)


def test_onnx_exports_get_a_model_card_and_the_usual_modes(student_dir, exports):
    import os
    import stat

    from huggingface_hub import metadata_load

    mask = os.umask(0)
    os.umask(mask)
    for name, folder in exports.items():
        meta = metadata_load(folder / "README.md")
        assert (meta["pipeline_tag"], meta["library_name"]) == ("question-answering", "onnx"), name
        assert {"onnx", "knowledge-distillation", "haystack-distill"} <= set(meta["tags"]), name
        text = (folder / "README.md").read_text()
        assert ("with int8 weights" in text) == (name == "int8") and f"`{student_dir}`" in text
        for item in [folder, *folder.iterdir()]:
            expected = (0o777 if item.is_dir() else 0o666) & ~mask
            assert stat.S_IMODE(item.stat().st_mode) == expected, item


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "unknown format 'tflite'"),
    (["--format", "transformers", "--int8"], "--int8 needs --format onnx"),
    (["--reader-is-not-a-reader"], "is not a reader folder"),
    (["--output-exists"], "already exists"),
])
def test_cli_bad_input_is_one_line_and_exit_2(student_dir, tmp_path, capsys, args, message):
    from haystack_distill.cli import main

    reader, output = student_dir, tmp_path / "out"
    if args == ["--reader-is-not-a-reader"]:
        reader, args = tmp_path, []
    if args == ["--output-exists"]:
        output.mkdir()
        (output / "keep.txt").write_text("user file")
        args = []
    code = main(["export-reader", "--reader", str(reader), "--output", str(output), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    if output.exists():
        assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_cli_exports_int8_onnx(student_dir, tmp_path, capsys, caplog):
    import logging

    from haystack_distill.cli import main

    with caplog.at_level(logging.WARNING):
        code = main(["export-reader", "--reader", str(student_dir), "--output", str(tmp_path / "int8"), "--int8",
                     "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 0 and summary["int8"] and "model.onnx" in summary["files"]
    assert (tmp_path / "int8" / "onnx_model_config.json").is_file()
    assert "pre-processing" not in caplog.text + captured.err  # onnxruntime's hint, hidden unless --verbose
    assert f"exporting {student_dir} to {tmp_path / 'int8'} (onnx int8) ..." in captured.err  # the status line
    size = (tmp_path / "int8" / "model.onnx").stat().st_size
    assert main(["export-reader", "--reader", str(student_dir), "--output", str(tmp_path / "int8"), "--int8"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export-reader", "--reader", str(student_dir), "--output", str(tmp_path / "int8"),
                 "--format", "transformers", "--overwrite", "--quiet"]) == 0  # an earlier export is replaced
    assert not (tmp_path / "int8" / "model.onnx").exists() and size > 0
    assert (tmp_path / "int8" / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["int8"]  # no temporary folder left
