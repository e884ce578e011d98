"""Prediction-layer distillation end to end on tiny models the tests build."""

import inspect
import json

import numpy as np
import pytest
import torch

from haystack_distill.losses import kd_kl_div
from haystack_distill.safety import UnsafeOutputError
from haystack_distill.squad import SquadFormatError
from haystack_distill.tokenizers import TokenizerMismatchError

READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)
FAST = dict(batch_size=8, n_epochs=1, evaluate_every=0, show_progress=False)


@pytest.fixture(scope="module")
def readers(tiny_models):
    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)
    return teacher, lambda key="student": DistillableFARMReader(str(tiny_models[key]), **READER_KW)


def test_signature_is_farm_haystack_compatible():
    from haystack.nodes import FARMReader

    from haystack_distill.reader import DistillableFARMReader

    ours = inspect.signature(DistillableFARMReader.distil_prediction_layer_from).parameters
    theirs = inspect.signature(FARMReader.distil_prediction_layer_from).parameters
    positional = [p for p in ours.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in positional] == list(theirs)
    for name, param in theirs.items():
        assert ours[name].default == param.default, name
    assert all(p.default is not inspect.Parameter.empty for p in ours.values() if p.kind is p.KEYWORD_ONLY)


def test_import_does_not_patch_haystack():
    from haystack.nodes import FARMReader

    import haystack_distill.reader  # noqa: F401

    assert FARMReader.distil_prediction_layer_from.__module__ == "haystack.nodes.reader.farm"


def _span_kl(student, teacher, squad_dir):
    from haystack_distill.reader import data

    proc = data.build_processor(student, 96, 32, 24)
    feats = data.featurize(proc, data.read_paragraphs(squad_dir / "train.json"))
    with torch.no_grad():
        args = {k: feats[k] for k in ("input_ids", "segment_ids", "padding_mask")}
        s = student.inferencer.model.eval().forward(**args)[0]
        t = teacher.inferencer.model.eval().forward(**args)[0]
    mask = feats["span_mask"].bool()
    return float(kd_kl_div(s[..., 0], t[..., 0], 1.0, mask) + kd_kl_div(s[..., 1], t[..., 1], 1.0, mask))


@pytest.mark.parametrize("loss", ["mse", "callable"])
def test_distil_saves_reloads_and_answers_in_pipeline(readers, tiny_squad, tmp_path, loss):
    from haystack import Document
    from haystack.document_stores import InMemoryDocumentStore
    from haystack.nodes import BM25Retriever, FARMReader
    from haystack.pipelines import ExtractiveQAPipeline

    teacher, make_student = readers
    student = make_student()

    def l1(student_logits, teacher_logits):
        return (student_logits - teacher_logits).abs().mean()

    before = _span_kl(student, teacher, tiny_squad)
    metrics = student.distil_prediction_layer_from(
        teacher, data_dir=str(tiny_squad), train_filename="train.json", dev_filename="dev.json",
        save_dir=str(tmp_path / "out"), distillation_loss=l1 if loss == "callable" else "mse",
        distillation_loss_weight=1.0, temperature=2.0, learning_rate=1e-3, **{**FAST, "n_epochs": 3})
    assert np.isfinite(metrics["loss"]) and metrics["global_step"] > 0
    assert 0.0 <= metrics["f1"] <= 100.0 and "em" in metrics
    assert _span_kl(student, teacher, tiny_squad) < before  # the student moved toward the teacher
    record = json.loads((tmp_path / "out" / "distillation.json").read_text())
    assert record["stage"] == "prediction_layer"

    reloaded = FARMReader(str(tmp_path / "out"), use_gpu=False, progress_bar=False)
    store = InMemoryDocumentStore(use_bm25=True)
    context = json.loads((tiny_squad / "dev.json").read_text())["data"][0]["paragraphs"][0]["context"]
    store.write_documents([Document(content=context)])
    pipe = ExtractiveQAPipeline(reader=reloaded, retriever=BM25Retriever(document_store=store))
    result = pipe.run(query="Where was Nadia born?", params={"Retriever": {"top_k": 1}, "Reader": {"top_k": 2}})
    assert result["answers"] and all(a.answer in context for a in result["answers"])
    reloaded_w = reloaded.inferencer.model.state_dict()
    for name, value in student.inferencer.model.state_dict().items():
        assert torch.allclose(value.cpu(), reloaded_w[name].cpu()), name


def test_tokenizer_mismatch_fails_before_teacher_pass(readers, tmp_path, tiny_squad, monkeypatch):
    from conftest import build_tiny_bert

    from haystack_distill.reader import DistillableFARMReader

    teacher, _ = readers
    other = build_tiny_bert(tmp_path / "other", vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x", "y"])
    student = DistillableFARMReader(str(other), **READER_KW)

    def boom(*args, **kwargs):
        raise AssertionError("teacher forward must not run")

    monkeypatch.setattr(teacher.inferencer.model, "forward", boom)
    with pytest.raises(TokenizerMismatchError, match="vocab size"):
        student.distil_prediction_layer_from(teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / "o"))


def test_teacher_cache_key_covers_doc_stride(readers, tiny_squad, tmp_path, monkeypatch):
    from haystack_distill.reader import targets

    teacher, make_student = readers
    calls = []
    real = targets.cached_outputs

    def counting(cache_dir, key, n_rows, row_shape, produce):
        def wrapped():
            calls.append(key["doc_stride"])
            yield from produce()
        return real(cache_dir, key, n_rows, row_shape, wrapped)

    monkeypatch.setattr(targets, "cached_outputs", counting)
    kw = dict(caching=True, cache_path=tmp_path / "cache", distillation_loss_weight=0.5, **FAST)
    for stride, out in ((32, "a"), (32, "b"), (16, "c")):
        make_student().distil_prediction_layer_from(teacher, str(tiny_squad), "train.json",
                                                    save_dir=str(tmp_path / out), doc_stride=stride, **kw)
    assert calls == [32, 16]  # the second run reused the cache; the changed stride recomputed it
    stored = list((tmp_path / "cache" / "teacher_outputs").rglob("outputs.npy"))
    assert len(stored) == 2 and np.load(stored[0], mmap_mode="r").dtype == np.float16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(temperature=0), ValueError, "temperature"),
        (dict(distillation_loss_weight=1.5), ValueError, "distillation_loss_weight"),
        (dict(distillation_loss="cosine"), ValueError, "distillation_loss"),
        (dict(train_filename="missing.json"), SquadFormatError, "does not exist"),
        (dict(train_filename="broken.json"), SquadFormatError, "not valid JSON"),
        (dict(train_filename="badstart.json"), SquadFormatError,
         r"1 questions have an answer whose answer_start.*q-bad"),
        (dict(train_filename="empty.json"), SquadFormatError, "no questions"),
        (dict(teacher_top_k=0), ValueError, "teacher_top_k must be a positive integer"),
        (dict(teacher_top_k=97), ValueError, "exceeds max_seq_len=96"),
        (dict(teacher_top_k=8, distillation_loss="mse"), ValueError, "'kl_div' or 'soft_ce'"),
        (dict(hard_loss_padding="max"), ValueError, "hard_loss_padding='max'"),
        (dict(group_by_length=True), ValueError, "group_by_length=True needs batches computed in slices"),
    ],
)
def test_bad_input_is_rejected_before_work(readers, tiny_squad, tmp_path, kwargs, error, match):
    teacher, make_student = readers
    (tiny_squad / "broken.json").write_text("{not json")
    (tiny_squad / "empty.json").write_text(json.dumps({"data": []}))
    bad = {"data": [{"paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "q-bad", "question": "Where?", "answers": [{"text": "France", "answer_start": 3}]}]}]}]}
    (tiny_squad / "badstart.json").write_text(json.dumps(bad))
    args = {"train_filename": "train.json", "save_dir": str(tmp_path / "out"), **kwargs}
    with pytest.raises(error, match=match):
        make_student().distil_prediction_layer_from(teacher, str(tiny_squad), **args)


def test_existing_foreign_save_dir_is_refused(readers, tiny_squad, tmp_path):
    teacher, make_student = readers
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match="holds files this tool did not write"):
        make_student().distil_prediction_layer_from(teacher, str(tiny_squad), "train.json",
                                                    save_dir=str(tmp_path / "precious"))
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_make_distillable_on_existing_instance(tiny_models):
    from haystack.nodes import FARMReader

    from haystack_distill.reader import DistillationMixin, make_distillable

    reader = FARMReader(str(tiny_models["student"]), **READER_KW)
    same = make_distillable(reader)
    assert same is reader and isinstance(reader, DistillationMixin) and isinstance(reader, FARMReader)
    assert not hasattr(FARMReader, "train_reader")
    assert type(reader).distil_prediction_layer_from is DistillationMixin.distil_prediction_layer_from
    with pytest.raises(TypeError, match="expects a FARMReader"):
        make_distillable(object())


def test_student_from_teacher_keeps_teacher_layers(readers, tmp_path):
    from haystack_distill.reader import student_from_teacher

    teacher, _ = readers
    student = student_from_teacher(teacher, [0, 3], tmp_path / "s2", **READER_KW)
    t_layers = teacher.inferencer.model.language_model.model.encoder.layer
    s_layers = student.inferencer.model.language_model.model.encoder.layer
    assert len(s_layers) == 2
    for s_idx, t_idx in enumerate([0, 3]):
        for (name, p_s), (_, p_t) in zip(s_layers[s_idx].named_parameters(), t_layers[t_idx].named_parameters()):
            assert torch.equal(p_s, p_t), name


def test_top_k_teacher_cache(readers, tiny_squad, tmp_path):
    """k = max_seq_len keeps every valid position, so training matches the dense cache exactly; small k shrinks it."""
    teacher, make_student = readers
    weights, stored = {}, {}
    for name, k in (("dense", None), ("all", 96), ("top4", 4)):
        student = make_student()
        student.distil_prediction_layer_from(teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / name),
                                             caching=True, cache_path=tmp_path / f"cache-{name}", temperature=2.0,
                                             teacher_top_k=k, **FAST)
        weights[name] = {n: p.detach().clone() for n, p in student.inferencer.model.named_parameters()}
        (stored[name],) = (tmp_path / f"cache-{name}" / "teacher_outputs").rglob("outputs.npy")
    for n, value in weights["dense"].items():
        if ".pooler." not in n:  # unused by QA, randomly initialised on every load of the tiny student
            torch.testing.assert_close(weights["all"][n], value, msg=n)
    dense, top4 = np.load(stored["dense"], mmap_mode="r"), np.load(stored["top4"], mmap_mode="r")
    assert dense.shape[1:] == (96, 2) and top4.shape == (dense.shape[0], 2, 9) and top4.dtype == np.float16
    assert any(not torch.equal(weights["top4"][n], v) for n, v in weights["dense"].items())


def test_distil_reader_cli(tiny_models, tiny_squad, tmp_path, capsys):
    from haystack_distill.cli import main

    code = main(["distil-reader", "--teacher", str(tiny_models["teacher"]), "--student", str(tiny_models["student"]),
                 "--data-dir", str(tiny_squad), "--train-filename", "train.json", "--output", str(tmp_path / "out"),
                 "--epochs", "1", "--batch-size", "8", "--max-seq-len", "96", "--doc-stride", "32",
                 "--max-query-length", "24", "--device", "cpu", "--teacher-top-k", "8", "--temperature", "2",
                 "--hard-loss-padding", "max_seq_len", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["global_step"] > 0
    record = json.loads((tmp_path / "out" / "distillation.json").read_text())
    assert record["teacher_top_k"] == "8" and record["temperature"] == "2.0"
    assert record["hard_loss_padding"] == "max_seq_len"


def test_teacher_pass_on_cut_batches_matches_the_padded_forward(readers, tiny_squad, tmp_path):
    from haystack_distill.reader import data, targets

    teacher, _ = readers
    proc = data.build_processor(teacher, 96, 32, 24)
    feats = data.featurize(proc, data.read_paragraphs(tiny_squad / "train.json"))
    cached = targets.teacher_span_logits(teacher, feats, 5, torch.device("cpu"), tmp_path, {"test": 1})
    with torch.no_grad():
        full = teacher.inferencer.model.eval().forward(
            **{k: feats[k] for k in ("input_ids", "segment_ids", "padding_mask")})[0]
    real = feats["padding_mask"].bool()
    assert (~real).any()  # the data has padding, so rows were really cut
    torch.testing.assert_close(torch.from_numpy(np.asarray(cached, dtype=np.float32))[real], full[real],
                               atol=2e-2, rtol=2e-3)  # fp16 storage


def test_prediction_loss_ignores_how_wide_a_batch_is_computed(readers, tiny_squad):
    """KD (top-k cache, context mask) is the same on a batch padded to max_seq_len and on one cut to its longest
    row, so computing batches in cut slices leaves its gradient unchanged."""
    from haystack_distill.reader import data
    from haystack_distill.reader.prediction import PredictionLayerLoss
    from haystack_distill.reader.sparse_logits import encode_top_k

    teacher, make = readers
    model = make().inferencer.model.eval()
    feats = data.featurize(data.build_processor(teacher, 96, 32, 24),
                           data.read_paragraphs(tiny_squad / "train.json"))
    batch = {k: v[:6] for k, v in feats.items() if isinstance(v, torch.Tensor)}
    inputs = {k: batch[k] for k in ("input_ids", "segment_ids", "padding_mask")}
    with torch.no_grad():
        batch["teacher_logits"] = encode_top_k(teacher.inferencer.model.eval().forward(**inputs)[0],
                                               batch["span_mask"], 8, 2.0)
    width = int(batch["padding_mask"].sum(1).max())
    assert width < 96
    cut = {k: v[:, :width] if k in data.SEQUENCE_FEATURES else v for k, v in batch.items()}
    kd = PredictionLayerLoss(model, 1.0, "kl_div", 2.0, "span", top_k=8)
    with torch.no_grad():
        torch.testing.assert_close(kd(cut), kd(batch), atol=1e-5, rtol=1e-5)
        hard = PredictionLayerLoss(model, 0.0, "kl_div", 2.0, "span", padded_length=96)
        haystack = PredictionLayerLoss(model, 0.0, "kl_div", 2.0, "span")
        torch.testing.assert_close(hard(batch), haystack(batch))  # at full width: Haystack's loss


def test_hard_loss_padding_chooses_the_batch_layout(readers, tiny_squad, tmp_path, monkeypatch):
    """Default: whole batches at max_seq_len (Haystack's exact loss); the fast options compute slices."""
    from haystack_distill.reader import stage

    teacher, make_student = readers
    seen, real = [], stage.train

    def spy(model, features, loss_fn, config, **kw):
        seen.append((config.length_key, loss_fn.padded_length))
        return real(model, features, loss_fn, config, **kw)
    monkeypatch.setattr(stage, "train", spy)
    options = [{}, *({"hard_loss_padding": name} for name in ("slices", "max_seq_len", "batch"))]
    for i, option in enumerate(options):
        make_student().distil_prediction_layer_from(teacher, str(tiny_squad), "train.json", **FAST,
                                                    save_dir=str(tmp_path / str(i)), **option)
    assert seen == [(None, None), ("padding_mask", 96), ("padding_mask", 96), ("padding_mask", None)]
    records = [json.loads((tmp_path / str(i) / "distillation.json").read_text()) for i in (1, 2)]
    assert records[0]["hard_loss_padding"] == records[1]["hard_loss_padding"]  # one run identity for both names


def test_stage_configs_validate_naming_the_field():
    from haystack_distill.reader.config import IntermediateLayerConfig, PredictionLayerConfig

    files = dict(data_dir="data", train_filename="train.json")
    with pytest.warns(FutureWarning, match="pass 'slices'"):
        assert PredictionLayerConfig(**files, hard_loss_padding="max_seq_len").validate().hard_loss_padding == "slices"
    for config, match in ((PredictionLayerConfig(**files, tokenizer_alignment="words"), "tokenizer_alignment='words'"),
                          (PredictionLayerConfig(**files, kd_mask="all"), "kd_mask='all'"),
                          (PredictionLayerConfig(**files, dev_split=1.0), "dev_split"),
                          (IntermediateLayerConfig(**files, attention_loss="dot"), "attention_loss='dot'"),
                          (IntermediateLayerConfig(**files, hidden_weight=-1.0), "hidden_weight")):
        with pytest.raises(ValueError, match=match):
            config.validate()


@pytest.mark.parametrize("method, config_name", [("distil_prediction_layer_from", "PredictionLayerConfig"),
                                                 ("distil_intermediate_layers_from", "IntermediateLayerConfig")])
def test_method_defaults_are_the_config_defaults(method, config_name):
    import dataclasses

    from haystack_distill.reader import DistillationMixin, config

    fields = {f.name: f for f in dataclasses.fields(getattr(config, config_name))}
    params = inspect.signature(getattr(DistillationMixin, method)).parameters
    assert set(fields) <= set(params)  # every setting is a method argument
    for name, field in fields.items():
        if field.default is not dataclasses.MISSING:
            assert params[name].default == field.default, name


def test_check_pair_counts_the_positions_a_roberta_model_skips(monkeypatch):
    from types import SimpleNamespace

    from transformers import BertConfig, RobertaConfig

    from haystack_distill.reader import stage

    monkeypatch.setattr(stage, "check_tokenizer_compatibility", lambda *a: None)
    monkeypatch.setattr(stage, "check_reader_vocab", lambda *a: None)

    def reader(config):
        model = SimpleNamespace(language_model=SimpleNamespace(model=SimpleNamespace(config=config)))
        return SimpleNamespace(inferencer=SimpleNamespace(model=model, processor=SimpleNamespace(tokenizer=None)))

    bert = reader(BertConfig(max_position_embeddings=258))
    roberta = reader(RobertaConfig(max_position_embeddings=258, pad_token_id=1))  # positions 0-1 are skipped
    stage.check_pair(bert, bert, 258)
    stage.check_pair(roberta, bert, 256)
    with pytest.raises(ValueError, match=r"max_seq_len=257 exceeds the 256 positions the teacher can read "
                                         r"\(max_position_embeddings=258\); pass max_seq_len=256 or less"):
        stage.check_pair(roberta, bert, 257)
