"""Unlabelled transfer data in the reader stages: questions that learn only from the teacher."""

import json
import logging

import pytest
import torch

from haystack_distill.losses import kd_kl_div, span_cross_entropy, span_kd_loss
from haystack_distill.spans import best_spans
from haystack_distill.squad import SquadFormatError, unlabeled_paragraphs
from haystack_distill.synthetic import make_squad_dataset

READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)
FAST = dict(batch_size=8, n_epochs=1, evaluate_every=0, show_progress=False, learning_rate=1e-3)


@pytest.fixture(scope="module")
def pair(tiny_models):
    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)
    return teacher, lambda: DistillableFARMReader(str(tiny_models["student_same_width"]), **READER_KW)


@pytest.fixture()
def data(tmp_path):
    """2 labelled paragraphs, 8 unlabelled ones (their answers still in the file) and a second unlabelled file."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.json").write_text(json.dumps(make_squad_dataset(2, seed=0)))
    (root / "pool.json").write_text(json.dumps(make_squad_dataset(8, seed=3)))
    (root / "pool2.json").write_text(json.dumps(make_squad_dataset(8, seed=4)))
    return root


def _unlabeled_kl(student, teacher, path):
    """Start + end KL(teacher || student) over the unlabelled questions' features."""
    from haystack_distill.reader import data

    proc = data.build_processor(student, 96, 32, 24)
    feats = data.featurize(proc, unlabeled_paragraphs(path)[0])
    with torch.no_grad():
        args = {k: feats[k] for k in ("input_ids", "segment_ids", "padding_mask")}
        s = student.inferencer.model.eval().forward(**args)[0]
        t = teacher.inferencer.model.eval().forward(**args)[0]
    mask = feats["span_mask"].bool()
    return float(kd_kl_div(s[..., 0], t[..., 0], 1.0, mask) + kd_kl_div(s[..., 1], t[..., 1], 1.0, mask))


def test_unlabeled_file_answers_are_dropped_with_a_count(data):
    paragraphs, dropped = unlabeled_paragraphs(data / "pool.json")
    squad = json.loads((data / "pool.json").read_text())
    questions = [qa for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert dropped == sum(bool(qa["answers"]) for qa in questions) > 0
    assert [qa["question"] for p in paragraphs for qa in p["qas"]] == [qa["question"] for qa in questions]
    assert all(qa["answers"] == [] for p in paragraphs for qa in p["qas"])


def test_unlabeled_file_without_questions_is_refused(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Text.", "qas": []}]}]}))
    with pytest.raises(SquadFormatError, match="no questions"):
        unlabeled_paragraphs(path)
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Text.", "qas": [{"id": 1}]}]}]}))
    with pytest.raises(SquadFormatError, match="question"):
        unlabeled_paragraphs(path)


def test_student_moves_toward_teacher_on_unlabeled_questions(pair, data, tmp_path, caplog):
    teacher, make_student = pair
    student = make_student()
    before = _unlabeled_kl(student, teacher, data / "pool.json")
    with caplog.at_level(logging.WARNING):
        metrics = student.distil_prediction_layer_from(
            teacher, str(data), "train.json", save_dir=str(tmp_path / "out"), unlabeled_filename="pool.json",
            distillation_loss_weight=0.9, temperature=1.0, checkpoint_root_dir=tmp_path / "ck",
            **{**FAST, "n_epochs": 4})
    assert _unlabeled_kl(student, teacher, data / "pool.json") < 0.8 * before
    assert "ignored the answers of" in caplog.text
    assert metrics["unlabeled_features"] > metrics["labeled_features"] > 0
    record = json.loads((tmp_path / "out" / "distillation.json").read_text())
    assert record["unlabeled_features"] == str(metrics["unlabeled_features"])


def test_features_of_the_unlabeled_file_are_flagged_and_labelled_no_answer(pair, data):
    from haystack_distill.reader.config import PredictionLayerConfig
    from haystack_distill.reader.data import SequenceSettings, StageInputs, training_data

    _, make_student = pair
    config = PredictionLayerConfig(data_dir=str(data), train_filename="train.json", unlabeled_filename="pool.json")
    inputs = StageInputs(data / "train.json", None, None, data / "out", SequenceSettings(96, 32, 24),
                         (data / "pool.json",))
    stage = training_data(make_student(), inputs, config)
    labeled = stage.features["labeled"].bool()
    n_train = len(json.loads((data / "train.json").read_text())["data"][0]["paragraphs"])
    assert torch.equal(labeled, stage.features["id"][:, 0] < n_train)
    # every unlabelled row carries the empty label (0, 0): the file's answers never became labels
    assert (stage.features["labels"][~labeled][:, 0] == 0).all()
    assert (stage.features["labels"][labeled][:, 0] > 0).any()


def test_hard_loss_skips_unlabeled_rows_and_keeps_the_labelled_value():
    from haystack_distill.reader.prediction import PredictionLayerLoss

    torch.manual_seed(0)
    logits = torch.randn(3, 6, 2)

    class Model:
        def forward(self, **_):
            return [logits]

    batch = {"input_ids": torch.zeros(3, 6, dtype=torch.long), "segment_ids": torch.zeros(3, 6, dtype=torch.long),
             "padding_mask": torch.ones(3, 6, dtype=torch.long), "span_mask": torch.ones(3, 6, dtype=torch.long),
             "labels": torch.tensor([[[1, 2]], [[3, 3]], [[4, 5]]]), "labeled": torch.tensor([1, 0, 1]),
             "teacher_logits": torch.randn(3, 6, 2)}
    w = 0.75
    loss = PredictionLayerLoss(Model(), w, "kl_div", 2.0, "span")(batch)
    hard = span_cross_entropy(logits, batch["labels"][:, 0], batch["padding_mask"])
    expected = w * span_kd_loss(logits, batch["teacher_logits"], batch["span_mask"].bool(), "kl_div", 2.0) \
        + (1 - w) * (hard[0] + hard[2]) / 3
    assert torch.isclose(loss, expected)
    batch["labels"][1] = torch.tensor([[0, 4]])  # another "answer" on the unlabelled row changes nothing
    assert torch.equal(PredictionLayerLoss(Model(), w, "kl_div", 2.0, "span")(batch), loss)


def test_pseudo_labels_take_the_teachers_confident_spans():
    from haystack_distill.reader.prediction import PredictionLayerLoss

    logits = torch.zeros(2, 6, 2)
    teacher = torch.full((2, 6, 2), -20.0)
    teacher[0, 2, 0] = teacher[0, 3, 1] = 20.0  # row 0: sure of (2, 3)
    teacher[1] = 0.0  # row 1: uniform, far below the threshold

    class Model:
        def forward(self, **_):
            return [logits]

    batch = {"input_ids": torch.zeros(2, 6, dtype=torch.long), "segment_ids": torch.zeros(2, 6, dtype=torch.long),
             "padding_mask": torch.ones(2, 6, dtype=torch.long), "span_mask": torch.ones(2, 6, dtype=torch.long),
             "labels": torch.zeros(2, 1, 2, dtype=torch.long), "labeled": torch.tensor([0, 0]),
             "teacher_logits": teacher}
    loss = PredictionLayerLoss(Model(), 0.5, "kl_div", 1.0, "span", pseudo_label_threshold=0.5)(batch)
    kd = span_kd_loss(logits, teacher, batch["span_mask"].bool(), "kl_div", 1.0)
    # uniform student logits: the cross-entropy of any single position is log(6); only row 0 counts, over 2 rows
    expected = 0.5 * kd + 0.5 * torch.log(torch.tensor(6.0)) / 2
    assert torch.isclose(loss, expected)


def test_best_spans_matches_brute_force():
    torch.manual_seed(1)
    logits = torch.randn(4, 7, 2) * 3
    valid = torch.ones(4, 7, dtype=torch.bool)
    valid[1, 5:] = False
    spans, prob = best_spans(logits, valid, max_answer_length=3)
    for row in range(4):
        p = torch.softmax(logits[row].masked_fill(~valid[row, :, None], -torch.inf), dim=0)
        candidates = [(float(p[s, 0] * p[e, 1]), s, e) for s in range(7) for e in range(7)
                      if s <= e < s + 3 and (s == 0) == (e == 0) and valid[row, s] and valid[row, e]]
        best = max(candidates)
        assert spans[row].tolist() == [best[1], best[2]]
        assert abs(float(prob[row]) - best[0]) < 1e-5


def test_teacher_cache_key_follows_the_unlabeled_file(pair, data, tmp_path):
    teacher, make_student = pair
    kw = dict(caching=True, cache_path=tmp_path / "cache", distillation_loss_weight=0.5, **FAST)
    runs = [("pool.json", "a"), ("pool.json", "b"), ("pool2.json", "c")]
    rows = [make_student().distil_prediction_layer_from(
        teacher, str(data), "train.json", save_dir=str(tmp_path / out), unlabeled_filename=pool,
        checkpoint_root_dir=tmp_path / f"ck-{out}", **kw)["teacher_rows"] for pool, out in runs]
    assert rows[0] > 0 and rows[1] == 0 and rows[2] > 0


def _killed_at_fourth_step(monkeypatch, student, teacher, data, **kw):
    """Run a distillation on train.json that is killed (KeyboardInterrupt) at its fourth loss call."""
    from haystack_distill.reader.prediction import PredictionLayerLoss

    real_call, calls = PredictionLayerLoss.__call__, {"n": 0}

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return real_call(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(PredictionLayerLoss, "__call__", dying)
        with pytest.raises(KeyboardInterrupt):
            student.distil_prediction_layer_from(teacher, str(data), "train.json", **kw)


def test_resume_with_unlabeled_data_is_exact(pair, data, tmp_path, monkeypatch):

    teacher, make_student = pair
    kw = dict(unlabeled_filename="pool.json", checkpoint_every=2, distillation_loss_weight=0.5, **FAST)
    reference = make_student()
    reference.distil_prediction_layer_from(teacher, str(data), "train.json", save_dir=str(tmp_path / "a"),
                                           checkpoint_root_dir=tmp_path / "ca", **kw)
    _killed_at_fourth_step(monkeypatch, make_student(), teacher, data, save_dir=str(tmp_path / "b"),
                           checkpoint_root_dir=tmp_path / "cb", **kw)
    resumed = make_student()
    resumed.distil_prediction_layer_from(teacher, str(data), "train.json", save_dir=str(tmp_path / "b"),
                                         checkpoint_root_dir=tmp_path / "cb", resume=True, **kw)
    ref_state = reference.inferencer.model.state_dict()
    for name, value in resumed.inferencer.model.state_dict().items():
        if ".pooler." not in name:  # unused by QA; Haystack initialises it randomly at each load
            assert torch.allclose(value, ref_state[name], atol=1e-5), name


def test_resume_refuses_another_unlabeled_file(pair, data, tmp_path, monkeypatch):

    teacher, make_student = pair
    kw = dict(checkpoint_every=2, distillation_loss_weight=0.5, checkpoint_root_dir=tmp_path / "ck", **FAST)
    _killed_at_fourth_step(monkeypatch, make_student(), teacher, data, save_dir=str(tmp_path / "b"),
                           unlabeled_filename="pool.json", **kw)
    with pytest.raises(Exception, match="unlabeled_file"):
        make_student().distil_prediction_layer_from(teacher, str(data), "train.json", save_dir=str(tmp_path / "b"),
                                                    unlabeled_filename="pool2.json", resume=True, **kw)


def test_unlabeled_data_without_teacher_or_with_bad_threshold_is_refused(pair, data, tmp_path):
    teacher, make_student = pair
    with pytest.raises(ValueError, match="needs a teacher"):
        make_student().train_reader(str(data), "train.json", save_dir=str(tmp_path / "x"),
                                    unlabeled_filename="pool.json", show_progress=False)
    with pytest.raises(ValueError, match="pseudo_label_threshold"):
        make_student().distil_prediction_layer_from(teacher, str(data), "train.json", unlabeled_filename="pool.json",
                                                    pseudo_labels=True, pseudo_label_threshold=1.5)
    with pytest.raises(ValueError, match="unlabeled_filename"):
        make_student().distil_prediction_layer_from(teacher, str(data), "train.json", pseudo_labels=True)


def test_tinybert_feeds_augmented_copies_as_unlabeled_in_both_stages(pair, data, tmp_path):
    teacher, make_student = pair
    stage = dict(batch_size=8, n_epochs=1, evaluate_every=0, show_progress=False,
                 checkpoint_root_dir=tmp_path / "ck")
    result = make_student().distil_tinybert_from(teacher, str(data), "train.json", str(tmp_path / "tiny"),
                                                 augmented_train_filename="pool.json", augmented_as="unlabeled",
                                                 intermediate=stage, prediction=stage)
    for name, folder in (("intermediate", "stage1_intermediate"), ("prediction", "stage2_prediction")):
        assert result[name]["unlabeled_features"] > 0 and result[name]["labeled_features"] > 0
        record = json.loads((tmp_path / "tiny" / folder / "distillation.json").read_text())
        assert "unlabeled_file" in record
    both = make_student().distil_tinybert_from(teacher, str(data), "train.json", str(tmp_path / "t2"),
                                               augmented_train_filename="pool.json", augmented_as="unlabeled",
                                               unlabeled_filename="pool2.json", intermediate=stage, prediction=stage)
    for name, folder in (("intermediate", "stage1_intermediate"), ("prediction", "stage2_prediction")):
        assert both[name]["labeled_features"] == result[name]["labeled_features"]
        assert both[name]["unlabeled_features"] > result[name]["unlabeled_features"]
        record = json.loads((tmp_path / "t2" / folder / "distillation.json").read_text())
        assert [p.rsplit("/", 1)[-1] for p in record["data_files"]["unlabeled"]] == ["pool2.json", "pool.json"]


def test_several_unlabeled_files_add_up_and_key_the_cache(pair, data, tmp_path):
    teacher, make_student = pair
    kw = dict(caching=True, cache_path=tmp_path / "cache", distillation_loss_weight=0.5, **FAST)

    def run(files, out):
        return make_student().distil_prediction_layer_from(
            teacher, str(data), "train.json", save_dir=str(tmp_path / out), unlabeled_filename=files,
            checkpoint_root_dir=tmp_path / f"ck-{out}", **kw)

    one, two, listed = run("pool.json", "a"), run("pool2.json", "b"), run(["pool.json"], "c")
    both = run(["pool.json", "pool2.json"], "d")
    assert listed["teacher_rows"] == 0  # a list of one file is that file: its cache is reused
    assert both["teacher_rows"] > 0  # two files are a new key
    assert both["unlabeled_features"] == one["unlabeled_features"] + two["unlabeled_features"]
    assert both["labeled_features"] == one["labeled_features"]
    with pytest.raises(ValueError, match="'pool.json' more than once"):
        run(["pool.json", "pool.json"], "e")


def test_cli_distil_reader_takes_unlabeled_questions(tiny_models, data, tmp_path, capsys):
    from haystack_distill.cli import main

    out = tmp_path / "cli-out"
    code = main(["distil-reader", "--teacher", str(tiny_models["teacher"]), "--student",
                 str(tiny_models["student_same_width"]), "--data-dir", str(data), "--train-filename", "train.json",
                 "--unlabeled-filename", "pool.json", "pool2.json", "--pseudo-labels", "--output", str(out),
                 "--epochs", "1",
                 "--batch-size", "8", "--max-seq-len", "96", "--doc-stride", "32", "--max-query-length", "24",
                 "--device", "cpu", "--json", "--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "1"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["unlabeled_features"] > 0
    record = json.loads((out / "distillation.json").read_text())
    assert record["pseudo_label_threshold"] == "0.5" and len(record["data_files"]["unlabeled"]) == 2
    assert list((tmp_path / "ck" / "prediction_layer").glob("step-*"))
