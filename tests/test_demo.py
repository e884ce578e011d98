"""The demo end to end on tiny random models (the real run uses all-MiniLM-L6-v2; see BENCHMARKS.md)."""

from __future__ import annotations

import json
import logging

import pytest

from haystack_distill import demo
from haystack_distill.synthetic import RELATIONS, make_squad_dataset, wording_index

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
    assert setup["unlabelled_questions"] > 0 and setup["labelled_questions"] > 0 and setup["no_kd_epochs"] >= 1
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


def test_the_kd_student_takes_the_unlabelled_questions_through_the_library_path(tiny_demo):
    """No answer reaches the unlabelled file; the KD run counts its unlabelled features and pseudo-labels them."""
    from haystack_distill.squad import load_squad

    out, _, result = tiny_demo
    unlabelled = load_squad(out / "data" / "unlabelled.json")["data"][0]["paragraphs"]
    assert all(qa["answers"] == [] for para in unlabelled for qa in para["qas"])
    record = json.loads((out / "student-kd" / "distillation.json").read_text())
    assert int(record["unlabeled_features"]) >= result["setup"]["unlabelled_questions"]
    assert "pseudo_label_threshold" in record  # recorded only when pseudo-labels are on


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

    args = build_parser().parse_args(["demo", "--seed", "7", "--output", "x", "--verbose", "--threads", "1"])
    assert (args.seed, args.output, args.verbose, args.threads) == (7, "x", True, 1)
    assert build_parser().parse_args(["demo"]).verbose is False
    assert build_parser().parse_args(["demo"]).output == "demo_output"
    assert build_parser().parse_args(["demo", "--output-dir", "old"]).output == "old"  # the old spelling



def _wordings(paragraphs):
    """Wording indexes of every question and every context sentence of one-person paragraphs."""
    found = set()
    for para in paragraphs:
        for qa in para["qas"]:
            found.add(wording_index(qa["question"]))
        for sentence in para["context"].split(". "):
            found.add(wording_index(sentence.rstrip(".") + "."))
    return found


def test_wordings_1_keeps_only_each_relations_first_sentence_and_question():
    def paragraphs(wordings):
        return make_squad_dataset(30, seed=5, min_people=1, max_people=1, facts_per_person=4, paraphrased=True,
                                  wordings=wordings)["data"][0]["paragraphs"]

    assert _wordings(paragraphs(1)) == {0}
    assert _wordings(paragraphs(0)) == {0, 1, 2}
    for para in paragraphs(1):
        assert len(para["qas"]) == 4
        for qa in para["qas"]:
            answer = qa["answers"][0]
            assert para["context"][answer["answer_start"]:].startswith(answer["text"])


@pytest.mark.parametrize("bad", [dict(min_people=0), dict(min_people=3, max_people=2), dict(wordings=4)])
def test_bad_task_options_are_refused_with_the_allowed_range(bad):
    with pytest.raises(ValueError, match="min_people|wordings"):
        make_squad_dataset(2, paraphrased=True, **bad)


def test_the_students_labels_use_one_wording_and_the_dev_set_several(tiny_demo):
    from haystack_distill.squad import load_squad

    out, cfg, _ = tiny_demo
    assert cfg.labelled_wordings == 1 and cfg.max_people == 1

    def wordings(name):
        return _wordings(load_squad(out / "data" / name)["data"][0]["paragraphs"])

    assert wordings("labelled.json") == {0}
    assert len(wordings("dev.json")) >= 2


def _demo_wordings_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_wordings.py"
    spec = importlib.util.spec_from_file_location("demo_wordings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_wording_split_of_the_benchmark_keeps_every_question_once():
    bench = _demo_wordings_module()
    assert wording_index("Where was Wen born?") == 0
    assert wording_index("What is the birthplace of Wen?") == 1
    assert wording_index("When did Wen stop working?") == 2
    assert wording_index("The retirement of Wen came in 2012.") == 2
    with pytest.raises(ValueError, match="not a sentence or question of the paraphrased task"):
        wording_index("Who is Wen?")
    paragraphs = make_squad_dataset(20, seed=2, min_people=1, max_people=1, facts_per_person=4,
                                    paraphrased=True)["data"][0]["paragraphs"]
    groups = bench.split_by_wording(paragraphs)
    ids = {name: [qa["id"] for p in paras for qa in p["qas"]] for name, paras in groups.items()}
    every = sorted(qa["id"] for p in paragraphs for qa in p["qas"])
    assert sorted(ids["first wording"] + ids["other wordings"]) == every
    assert ids["first wording"] and ids["other wordings"]
    assert all(wording_index(qa["question"]) == 0 for p in groups["first wording"] for qa in p["qas"])
