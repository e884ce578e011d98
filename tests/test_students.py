"""``make_student`` / ``haystack-distill make-student`` on tiny models: layers of an encoder with a fresh seeded QA
head (the benchmark's student init), or of a reader with its head; inputs checked before any model loads."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_bert

from haystack_distill.reader.students import base_layer_indices, make_student

ROOT = Path(__file__).resolve().parents[1]
READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """A 4-layer plain encoder (no QA head), as a base model folder is."""
    return build_tiny_bert(tmp_path_factory.mktemp("base") / "encoder", layers=4, hidden=32, heads=4, seed=5,
                           qa=False)


def _state(path: Path) -> dict:
    from haystack_distill.reader import DistillableFARMReader

    model = DistillableFARMReader(str(path), **READER_KW).inferencer.model
    return {name: value.clone() for name, value in model.state_dict().items()}


def _equal(a: dict, b: dict, prefix: str = "") -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)


def test_default_layers_are_the_benchmarks_base_layers():
    spec = importlib.util.spec_from_file_location("bench_reader", ROOT / "benchmarks" / "reader.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while the file runs
    spec.loader.exec_module(bench)
    assert base_layer_indices(6, 3) == [0, 2, 4] and base_layer_indices(6, 2) == [0, 3]
    assert all(base_layer_indices(n, k) == bench.base_layers(n, k) for n in range(1, 25) for k in range(1, n + 1))
    with pytest.raises(ValueError, match="cannot keep 7 of 6 layers"):
        base_layer_indices(6, 7)


def test_encoder_student_is_the_benchmarks_init_with_a_seeded_fresh_head(encoder, tmp_path):
    from haystack.nodes import FARMReader

    from haystack_distill.layers import count_layers
    from haystack_distill.reader import DistillableFARMReader, student_from_teacher

    result = make_student(encoder, 2, tmp_path / "s")
    assert (result["keep"], result["source_kind"], result["qa_head"]) == ([0, 2], "encoder", "fresh (seed 42)")
    torch.manual_seed(42)  # benchmarks/reader.py's _init_student: seeded base reader, then its layers kept
    base = DistillableFARMReader(str(encoder), **READER_KW)
    reference = student_from_teacher(base, [0, 2], tmp_path / "reference", **READER_KW)
    ours, ref = _state(tmp_path / "s"), reference.inferencer.model.state_dict()
    assert ours.keys() == ref.keys() and _equal(ours, ref)
    base_state = base.inferencer.model.state_dict()
    for student_layer, base_layer in ((0, 0), (1, 2)):
        prefix = f"language_model.model.encoder.layer.{student_layer}."
        assert all(torch.equal(v, base_state[k.replace(prefix, f"language_model.model.encoder.layer.{base_layer}.")])
                   for k, v in ours.items() if k.startswith(prefix))
    reader = FARMReader(str(tmp_path / "s"), **READER_KW)
    assert count_layers(reader.inferencer.model.language_model.model) == 2
    assert json.loads((tmp_path / "s" / "distillation.json").read_text())["keep"] == [0, 2]

    make_student(encoder, 2, tmp_path / "seed7", seed=7)
    other = _state(tmp_path / "seed7")
    assert _equal(other, ours, "language_model.") and not _equal(other, ours, "prediction_heads.")


def test_reader_students_keep_the_readers_qa_head(tiny_models, tmp_path):
    source = _state(tiny_models["teacher"])  # a transformers BertForQuestionAnswering: its head is trained
    result = make_student(tiny_models["teacher"], None, tmp_path / "s", keep=[1, 3])
    assert (result["source_kind"], result["qa_head"]) == ("transformers reader", "from the transformers reader")
    student = _state(tmp_path / "s")
    assert _equal(student, source, "prediction_heads.")
    layer = "language_model.model.encoder.layer."
    assert torch.equal(student[f"{layer}1.output.dense.weight"], source[f"{layer}3.output.dense.weight"])

    again = make_student(tmp_path / "s", 1, tmp_path / "s1")  # a Haystack reader folder (FARMReader.save)
    assert (again["source_kind"], again["keep"]) == ("Haystack reader", [0])
    assert _equal(_state(tmp_path / "s1"), source, "prediction_heads.")


@pytest.mark.parametrize(("case", "match"), [
    ("missing", "no such folder"), ("onnx", "ONNX export"), ("empty", "no config.json"),
    ("st-subfolder", "pass that sub-folder"), ("too-deep", "cannot keep 5 of 4"), ("keep-missing", r"lacks.*0\.\.3"),
    ("disagree", "agree"), ("unsorted", "increasing order"), ("no-depth", "how deep"),
    ("into-source", "input folder"), ("exists", "--overwrite"), ("foreign", "did not write"),
])
def test_bad_inputs_are_refused_before_any_model_loads(encoder, tmp_path, monkeypatch, case, match):
    import haystack_distill.reader.export as export

    monkeypatch.setattr(export, "load_reader", lambda *a, **k: pytest.fail("a model was loaded"))
    source, layers, keep, output = encoder, 2, None, tmp_path / "out"
    if case in ("missing", "onnx", "empty", "st-subfolder"):
        source = tmp_path / "src"
        if case != "missing":
            source.mkdir()
            (source / {"onnx": "model.onnx", "empty": "notes.txt", "st-subfolder": "modules.json"}[case]).write_text("")
    layers = {"too-deep": 5, "disagree": 3, "no-depth": None}.get(case, layers)
    keep = {"keep-missing": [0, 4], "disagree": [0, 1], "unsorted": [2, 0]}.get(case)
    if case == "into-source":
        output = encoder / "student"
    if case in ("exists", "foreign"):
        output.mkdir()
        (output / ("MANIFEST.json" if case == "exists" else "notes.md")).write_text("{}")
        if case == "exists":
            from haystack_distill.safety import write_manifest

            write_manifest(output, "an earlier student")
    with pytest.raises((ValueError, OSError), match=match):
        make_student(source, layers, output, keep=keep)


def test_existing_output_is_replaced_only_with_overwrite(encoder, tmp_path):
    make_student(encoder, 1, tmp_path / "s")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_student(encoder, 2, tmp_path / "s")
    assert make_student(encoder, 2, tmp_path / "s", overwrite=True)["keep"] == [0, 2]
    assert json.loads((tmp_path / "s" / "distillation.json").read_text())["keep"] == [0, 2]


def test_cli_builds_prints_and_reports_bad_input_in_one_line(encoder, tmp_path, capsys):
    from haystack_distill.cli import main

    assert main(["make-student", "--from", str(encoder), "--layers", "2", "--output", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{tmp_path / 's'}: layers [0, 2] of 4 of {encoder} (encoder), QA head fresh (seed 42)"
    assert main(["make-student", "--from", str(encoder), "--keep", "1,3", "--output", str(tmp_path / "k"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keep"] == [1, 3]
    assert main(["make-student", "--from", str(encoder), "--layers", "2", "--output", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # a status line may come first; the error is one line
    assert err[-1].startswith("haystack-distill make-student: error:") and "already exists" in err[-1]
    assert "--overwrite" in err[-1] and not any("Traceback" in line for line in err)
