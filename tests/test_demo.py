"""The demo end to end on tiny random models (the real run uses all-MiniLM-L6-v2; see BENCHMARKS.md)."""

from __future__ import annotations

import json
import logging

import pytest

from haystack_distill import demo
from haystack_distill.synthetic import RELATIONS, make_squad_dataset

TINY = dict(teacher_paragraphs=6, labelled_paragraphs=2, unlabelled_paragraphs=3, dev_paragraphs=2,
            teacher_epochs=1, kd_epochs=1, repeats=1, batch_size=8)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("demo")
    cfg = demo.DemoConfig(base_model=str(tiny_models["teacher"]), **TINY)
    return out, cfg, demo.run_demo(out, cfg)


def test_the_demo_writes_three_rows_and_its_setup(tiny_demo, capsys):
    out, _, result = tiny_demo
    rows = json.loads((out / "results.json").read_text())
    names = ["teacher (4 layers)", "student 2 layers, no KD", "student 2 layers, KD (ours)"]
    assert [r["reader"] for r in rows] == names
    assert all({"em", "f1", "questions_per_second", "parameters", "mb"} <= set(r) for r in rows)
    assert rows[1]["parameters"] == rows[2]["parameters"] < rows[0]["parameters"]
    setup = json.loads((out / "setup.json").read_text())
    assert setup["kd_questions"] > setup["labelled_questions"] and setup["no_kd_epochs"] >= 1
    assert result["rows"] == rows


def test_the_students_start_from_the_base_encoder_layers_0_and_2(tiny_demo):
    from haystack_distill.reader import DistillableFARMReader

    out, cfg, _ = tiny_demo
    base = DistillableFARMReader(cfg.base_model, **cfg.reader_kw()).inferencer.model.language_model.model
    init = DistillableFARMReader(str(out / "student-init"), **cfg.reader_kw()).inferencer.model.language_model.model
    assert init.config.num_hidden_layers == 2
    for student_layer, base_layer in ((0, 0), (1, 2)):
        a, b = init.encoder.layer[student_layer].state_dict(), base.encoder.layer[base_layer].state_dict()
        assert all((a[k] == b[k]).all() for k in a)


def test_the_kd_file_holds_the_labelled_questions_and_the_teachers_answers(tiny_demo):
    from haystack_distill.squad import load_squad

    out, cfg, _ = tiny_demo
    kd = load_squad(out / "data" / "kd-train.json")["data"][0]["paragraphs"]
    labelled = load_squad(out / "data" / "labelled.json")["data"][0]["paragraphs"]
    assert kd[: len(labelled)] == labelled
    for para in kd[len(labelled):]:
        for qa in para["qas"]:
            answer = qa["answers"][0]
            assert para["context"][answer["answer_start"]:].startswith(answer["text"])


def test_a_rerun_reuses_every_finished_stage(tiny_demo, monkeypatch):
    out, cfg, _ = tiny_demo
    from haystack_distill.reader import DistillableFARMReader

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(DistillableFARMReader, "train_reader", no_training)
    monkeypatch.setattr(DistillableFARMReader, "distil_prediction_layer_from", no_training)
    assert len(demo.run_demo(out, cfg)["rows"]) == 3


def test_quiet_hides_library_info_logs_and_restores_levels():
    haystack = logging.getLogger("haystack")
    before = haystack.level
    with demo.quiet(verbose=False):
        assert not haystack.isEnabledFor(logging.INFO)
        assert not logging.getLogger("haystack.modeling.model.prediction_head").isEnabledFor(logging.WARNING)
    assert haystack.level == before
    with demo.quiet(verbose=True):
        assert haystack.level == before


def test_the_paraphrased_task_has_consistent_answers_and_several_wordings():
    paragraphs = make_squad_dataset(40, seed=3, facts_per_person=2, paraphrased=True)["data"][0]["paragraphs"]
    questions = {qa["question"].split()[0] for p in paragraphs for qa in p["qas"]}
    assert len(questions) >= 5
    for para in paragraphs:
        for qa in para["qas"]:
            answer = qa["answers"][0]
            assert para["context"][answer["answer_start"]:].startswith(answer["text"])
    assert len(RELATIONS) == 6


def test_the_simple_task_is_unchanged_by_the_paraphrased_option():
    assert make_squad_dataset(5, seed=1) == make_squad_dataset(5, seed=1, paraphrased=False)
    first = make_squad_dataset(1, seed=0)["data"][0]["paragraphs"][0]
    assert first["qas"][0]["id"] == "syn-0-0"


def test_student_layers_are_every_other_base_layer():
    assert demo.student_layers(2, 6) == [0, 2]
    assert demo.student_layers(3, 6) == [0, 2, 4]
    assert demo.student_layers(3, 4) == [0, 1, 2]


def test_the_cli_parses_the_demo_options():
    from haystack_distill.cli import build_parser

    args = build_parser().parse_args(["demo", "--seed", "7", "--output-dir", "x", "--verbose", "--threads", "1"])
    assert (args.seed, args.output_dir, args.verbose, args.threads) == (7, "x", True, 1)
    assert build_parser().parse_args(["demo"]).verbose is False
