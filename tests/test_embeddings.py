"""Sentence-embedding side: truncation, distillation, teacher cache, PCA, int8, STS, CLI, retriever adapter.

Every model here is a tiny random BERT SentenceTransformer built in a tmp dir (hidden 32, 4 layers).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import List
from unittest import mock

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from conftest import embedding_loss_killed_at  # noqa: E402
from sentence_transformers import SentenceTransformer, models  # noqa: E402

from haystack_distill.embeddings import (  # noqa: E402
    NotASentenceTransformerError,
    StsPair,
    distil_embeddings_from,
    evaluate_sts,
    is_quantized,
    load_sentence_transformer,
    quantize,
    read_sentences,
    read_sts,
    reduce_dimensions,
    save_sentence_transformer,
    spearman,
    teacher_embeddings,
    truncate_layers,
)

WORDS = ("cat dog bird fish man woman child car bus train red blue green big small old new runs eats sleeps "
         "plays reads sings on in under near the a park house river road city").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_sentences(n: int, seed: int = 0) -> List[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + " ."
        if sentence not in out:
            out.append(sentence)
    return out


def build_sentence_bert(path: Path, layers: int = 4, hidden: int = 32, heads: int = 2, seed: int = 0,
                        words=WORDS, normalize: bool = False) -> Path:
    """Write a tiny vocab, a random BertModel and tokenizer, and wrap them as a saved SentenceTransformer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf_dir = path / "hf"
    hf_dir.mkdir(parents=True)
    (hf_dir / "vocab.txt").write_text("\n".join(SPECIAL + [".", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=32)
    modules = [transformer, models.Pooling(hidden, pooling_mode="mean")]
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(path / "st"), create_model_card=False)
    return path / "st"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared CPU extra threads spin-wait (10x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return build_sentence_bert(tmp_path_factory.mktemp("teacher"))


@pytest.fixture()
def teacher(teacher_dir) -> SentenceTransformer:
    return load_sentence_transformer(teacher_dir)


@pytest.fixture(scope="module")
def sentences() -> List[str]:
    return make_sentences(64)


def encode(model: SentenceTransformer, sentences: List[str]) -> np.ndarray:
    return model.encode(sentences, batch_size=16, convert_to_numpy=True)


def layer_state(model: SentenceTransformer, index: int) -> dict:
    return model._first_module().auto_model.encoder.layer[index].state_dict()


# ---------------------------------------------------------------- truncation


def test_truncate_keeps_the_named_layers_and_leaves_the_teacher(teacher):
    student = truncate_layers(teacher, [0, 3])
    auto = student._first_module().auto_model
    assert auto.config.num_hidden_layers == 2 and len(auto.encoder.layer) == 2
    for new, old in ((0, 0), (1, 3)):
        for name, tensor in layer_state(student, new).items():
            assert torch.equal(tensor, layer_state(teacher, old)[name]), name
    assert len(teacher._first_module().auto_model.encoder.layer) == 4
    assert student.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()


def test_truncate_count_spreads_layers_first_and_last_included(teacher):
    student = truncate_layers(teacher, 2)
    for new, old in ((0, 0), (1, 3)):
        weight = "output.dense.weight"
        assert torch.equal(layer_state(student, new)[weight], layer_state(teacher, old)[weight])


def test_truncated_student_saves_and_loads(teacher, sentences, tmp_path):
    student = truncate_layers(teacher, [1, 2])
    save_sentence_transformer(student, tmp_path / "student")
    loaded = load_sentence_transformer(tmp_path / "student")
    assert loaded._first_module().auto_model.config.num_hidden_layers == 2
    np.testing.assert_allclose(encode(loaded, sentences), encode(student, sentences), atol=1e-6)
    assert json.loads((tmp_path / "student" / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.parametrize(("keep", "message"), [([4], "lacks"), ([0, 7], "4 layers"), ([2, 1], "increasing"),
                                                ([], "lacks"), (0, "cannot keep 0"), (5, "cannot keep 5")])
def test_truncate_rejects_layers_the_model_lacks(teacher, keep, message):
    with pytest.raises(ValueError, match=message):
        truncate_layers(teacher, keep)


# ---------------------------------------------------------------- teacher cache


def test_teacher_cache_is_reused_and_recomputed_when_sentences_change(teacher, sentences, tmp_path):
    with mock.patch.object(teacher, "encode", wraps=teacher.encode) as spy:
        first, info1 = teacher_embeddings(teacher, sentences, cache_dir=tmp_path, show_progress_bar=False)
        assert spy.call_count >= 1 and not info1["hit"]
        spy.reset_mock()
        second, info2 = teacher_embeddings(teacher, sentences, cache_dir=tmp_path, show_progress_bar=False)
        assert spy.call_count == 0 and info2["hit"]
        third, info3 = teacher_embeddings(teacher, sentences[:-1] + ["a new sentence ."], cache_dir=tmp_path,
                                          show_progress_bar=False)
        assert spy.call_count >= 1 and not info3["hit"]
    assert first.dtype == np.float16 and first.shape == (len(sentences), 32)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first.astype(np.float32), encode(teacher, sentences), atol=2e-3)
    assert info3["path"] != info1["path"]


def test_teacher_cache_key_changes_with_teacher_weights(teacher, sentences, tmp_path):
    _, before = teacher_embeddings(teacher, sentences, cache_dir=tmp_path, show_progress_bar=False)
    with torch.no_grad():
        teacher._first_module().auto_model.encoder.layer[0].output.dense.bias.add_(0.5)
    with mock.patch.object(teacher, "encode", wraps=teacher.encode) as spy:
        _, after = teacher_embeddings(teacher, sentences, cache_dir=tmp_path, show_progress_bar=False)
        assert spy.call_count >= 1
    assert not after["hit"] and after["teacher"] != before["teacher"]


# ---------------------------------------------------------------- distillation


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory) -> Path:
    """Another random 1-layer model of the teacher's width: far from the teacher before distillation."""
    return build_sentence_bert(tmp_path_factory.mktemp("other"), layers=1, seed=7)


def test_distillation_lowers_mse_to_the_teacher(teacher, other_dir, sentences, tmp_path):
    student = load_sentence_transformer(other_dir)
    target = encode(teacher, sentences)
    before = float(np.mean((encode(student, sentences) - target) ** 2))
    metrics = distil_embeddings_from(student, teacher, sentences, epochs=8, batch_size=16, learning_rate=1e-3,
                                     cache_dir=tmp_path, show_progress_bar=False)
    after = float(np.mean((encode(student, sentences) - target) ** 2))
    assert after < 0.5 * before, (before, after)
    assert metrics["steps"] == 8 * 4 and len(metrics["epoch_losses"]) == 8
    assert metrics["epoch_losses"][-1] < metrics["epoch_losses"][0]
    assert metrics["teacher_projection"] is None and not metrics["cache"]["hit"]
    again = distil_embeddings_from(student, teacher, sentences, epochs=1, batch_size=16, cache_dir=tmp_path,
                                   show_progress_bar=False)
    assert again["cache"]["hit"]


def test_frozen_word_embeddings_stay_fixed_and_trainable_afterwards(teacher, sentences, tmp_path):
    student = truncate_layers(teacher, [0, 1])
    words = student._first_module().auto_model.get_input_embeddings().weight
    before_words, before_layer = words.detach().clone(), layer_state(student, 0)["output.dense.weight"].clone()
    metrics = distil_embeddings_from(student, teacher, sentences, batch_size=32, freeze_word_embeddings=True,
                                     cache_dir=tmp_path, show_progress_bar=False)
    assert metrics["freeze_word_embeddings"] and torch.equal(words, before_words) and words.requires_grad
    assert not torch.equal(layer_state(student, 0)["output.dense.weight"], before_layer)


def test_cosine_loss_and_saved_output(teacher, sentences, tmp_path):
    student = truncate_layers(teacher, [0, 1])
    out = tmp_path / "student"
    metrics = distil_embeddings_from(student, teacher, sentences, loss="cosine", batch_size=32, cache_dir=tmp_path,
                                     output_dir=out, show_progress_bar=False)
    assert metrics["loss"] == "cosine"
    saved = json.loads((out / "distillation_metrics.json").read_text())
    assert saved["steps"] == 2
    np.testing.assert_allclose(encode(load_sentence_transformer(out), sentences), encode(student, sentences), atol=1e-5)
    with pytest.raises(FileExistsError, match="--overwrite"):
        distil_embeddings_from(student, teacher, sentences, cache_dir=tmp_path, output_dir=out)


def test_dev_evaluation_keeps_the_best_checkpoint(teacher, sentences, tmp_path):
    """A student identical to the teacher starts at dev MSE ~0; a huge learning rate only makes it worse,
    so the kept checkpoint must be the initial one."""
    student = truncate_layers(teacher, [0, 1, 2, 3])
    initial = encode(student, sentences)
    metrics = distil_embeddings_from(student, teacher, sentences, epochs=2, batch_size=16, learning_rate=0.05,
                                     dev_sentences=sentences[:16], cache_dir=tmp_path, show_progress_bar=False)
    assert metrics["dev_metric"] == "mse"
    assert [h["step"] for h in metrics["dev"]] == [0, 4, 8]
    assert metrics["best"]["step"] == 0 and metrics["dev"][1]["mse"] > metrics["dev"][0]["mse"]
    np.testing.assert_allclose(encode(student, sentences), initial, atol=1e-6)


def test_dev_sts_history_and_best_is_the_maximum(teacher, sentences, tmp_path):
    rng = random.Random(0)
    dev = [StsPair(a, b, rng.uniform(0, 5)) for a, b in zip(sentences[:20], sentences[20:40])]
    student = truncate_layers(teacher, [0])
    metrics = distil_embeddings_from(student, teacher, sentences, epochs=2, batch_size=32, dev_sts=dev,
                                     evaluation_steps=1, cache_dir=tmp_path, show_progress_bar=False)
    steps = [h["step"] for h in metrics["dev"]]
    assert steps == [0, 1, 2, 3, 4]
    best = max(metrics["dev"], key=lambda h: h["sts_spearman"])
    assert metrics["best"] == best
    assert metrics["teacher_dev"]["sts_spearman"] == pytest.approx(evaluate_sts(teacher, dev))
    assert evaluate_sts(student, dev) == pytest.approx(best["sts_spearman"], abs=1e-6)


def test_interrupted_distillation_resumes_exactly(teacher, sentences, tmp_path, monkeypatch):
    """The embedding loop is training.train: checkpoints, accumulation and exact resume come with it."""
    from haystack_distill.embeddings import distil

    kw = dict(epochs=2, batch_size=16, grad_acc_steps=2, learning_rate=1e-3, cache_dir=tmp_path, checkpoint_every=1,
              show_progress_bar=False)
    reference = truncate_layers(teacher, [0, 1])
    assert distil_embeddings_from(reference, teacher, sentences, checkpoint_dir=tmp_path / "a", **kw)["steps"] == 4
    with monkeypatch.context() as patch:
        patch.setitem(distil.EMBEDDING_LOSSES, "mse", embedding_loss_killed_at(5))
        with pytest.raises(KeyboardInterrupt):
            distil_embeddings_from(truncate_layers(teacher, [0, 1]), teacher, sentences, checkpoint_dir=tmp_path / "b",
                                   **kw)
    resumed = truncate_layers(teacher, [0, 1])
    distil_embeddings_from(resumed, teacher, sentences, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_narrower_student_with_another_tokenizer_learns_teacher_pca_space(teacher, sentences, tmp_path):
    student = load_sentence_transformer(build_sentence_bert(tmp_path / "s", layers=1, hidden=16, seed=5,
                                                            words=sorted(WORDS, reverse=True)[:30]))
    assert student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab()
    metrics = distil_embeddings_from(student, teacher, sentences, epochs=2, batch_size=16, cache_dir=tmp_path,
                                     show_progress_bar=False)
    projection = metrics["teacher_projection"]
    assert projection["from"] == 32 and projection["to"] == 16 and projection["fit_on"] == len(sentences)
    assert 0 < projection["explained_variance"] <= 1
    assert encode(student, sentences).shape == (len(sentences), 16)


def test_distillation_rejects_bad_input_before_work(teacher, sentences, tmp_path):
    wide = load_sentence_transformer(build_sentence_bert(tmp_path / "w", layers=1, hidden=48, heads=2))
    with mock.patch.object(teacher, "encode") as spy:
        with pytest.raises(ValueError, match="wider than the teacher"):
            distil_embeddings_from(wide, teacher, sentences, cache_dir=tmp_path)
        with pytest.raises(ValueError, match="empty"):
            distil_embeddings_from(truncate_layers(teacher, 1), teacher, [], cache_dir=tmp_path)
        with pytest.raises(ValueError, match="not non-blank strings"):
            distil_embeddings_from(truncate_layers(teacher, 1), teacher, ["ok .", 3, ""], cache_dir=tmp_path)
        with pytest.raises(ValueError, match="loss="):
            distil_embeddings_from(truncate_layers(teacher, 1), teacher, sentences, loss="kl")
        with pytest.raises(ValueError, match="same object"):
            distil_embeddings_from(teacher, teacher, sentences)
        with pytest.raises(ValueError, match="int8"):
            distil_embeddings_from(quantize(teacher), teacher, sentences)
        assert spy.call_count == 0


# ---------------------------------------------------------------- PCA


def test_reduce_dimensions_matches_an_independent_pca(teacher, sentences, tmp_path):
    from sklearn.decomposition import PCA

    reduced = reduce_dimensions(teacher, sentences, 8)
    assert reduced.get_sentence_embedding_dimension() == 8
    dense = list(reduced)[-1]
    assert isinstance(dense, models.Dense) and dense.linear.bias is None
    reference = PCA(n_components=8).fit(encode(teacher, sentences).astype(np.float64))
    weight = dense.linear.weight.detach().numpy()
    np.testing.assert_allclose(np.abs(weight), np.abs(reference.components_), atol=1e-4)
    np.testing.assert_allclose(encode(reduced, sentences), encode(teacher, sentences) @ weight.T, atol=1e-5)
    save_sentence_transformer(reduced, tmp_path / "pca")
    np.testing.assert_allclose(encode(load_sentence_transformer(tmp_path / "pca"), sentences),
                               encode(reduced, sentences), atol=1e-6)
    assert teacher.get_sentence_embedding_dimension() == 32


def test_reduce_dimensions_keeps_unit_length_outputs(tmp_path, sentences):
    model = load_sentence_transformer(build_sentence_bert(tmp_path / "n", normalize=True))
    reduced = reduce_dimensions(model, sentences, 4)
    assert isinstance(list(reduced)[-1], models.Normalize)
    np.testing.assert_allclose(np.linalg.norm(encode(reduced, sentences), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("dim", "n", "message"), [(33, 64, "larger than the embedding size 32"),
                                                   (16, 10, "larger than the number of sentences"),
                                                   (0, 64, "positive integer")])
def test_reduce_dimensions_validates_dim_before_encoding(teacher, dim, n, message):
    with mock.patch.object(teacher, "encode") as spy, pytest.raises(ValueError, match=message):
        reduce_dimensions(teacher, make_sentences(n), dim)
    assert spy.call_count == 0


# ---------------------------------------------------------------- quantization


def test_quantize_round_trip_gives_close_embeddings(teacher, sentences, tmp_path):
    float_emb = encode(teacher, sentences)
    quantized = quantize(teacher, output_dir=tmp_path / "int8")
    assert is_quantized(quantized) and not is_quantized(teacher)
    reloaded = load_sentence_transformer(tmp_path / "int8")
    assert is_quantized(reloaded)
    np.testing.assert_allclose(encode(reloaded, sentences), encode(quantized, sentences), atol=1e-6)
    q = encode(quantized, sentences)
    cos = (q * float_emb).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(float_emb, axis=1)
    assert cos.min() > 0.99
    assert not np.allclose(q, float_emb, atol=1e-7)
    with pytest.raises(FileExistsError, match="--overwrite"):
        quantize(teacher, output_dir=tmp_path / "int8")
    with pytest.raises(ValueError, match="already quantized"):
        quantize(quantized)


# ---------------------------------------------------------------- STS


def _average_ranks(values) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (written out, not scipy's)."""
    values = list(values)
    ranks = np.empty(len(values))
    for i, v in enumerate(values):
        below, same = sum(u < v for u in values), sum(u == v for u in values)
        ranks[i] = below + (same + 1) / 2
    return ranks


def _pearson_by_formula(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum()))


def test_spearman_and_pearson_equal_the_textbook_formulas():
    from haystack_distill.embeddings import pearson

    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0]) == pytest.approx(1 - 6 * 2 / (4 * 15), abs=1e-15)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 200).astype(float), rng.normal(size=200)
    y[:50] = np.round(y[:50])  # ties in both
    assert spearman(x, y) == pytest.approx(_pearson_by_formula(_average_ranks(x), _average_ranks(y)), abs=1e-12)
    assert pearson(x, y) == pytest.approx(_pearson_by_formula(x, y), abs=1e-12)
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) == pytest.approx(5 / np.sqrt(2 * 114 / 9), abs=1e-12)  # by hand
    for bad, message in (([1.0], "length >= 2"), ([2.0, 2.0, 2.0], "constant")):
        with pytest.raises(ValueError, match=message):
            spearman(bad, list(range(len(bad))))


def test_sts_correlations_equal_the_formulas_on_independent_cosines(teacher, sentences):
    """Pins the numbers through sentence-transformers' evaluator: cosines in float64 from encode(), ranks and
    correlations written out; gold scores with ties and a repeated sentence."""
    from haystack_distill.embeddings import sts_correlations

    rng = random.Random(3)
    pairs = [StsPair(a, b, float(rng.randint(0, 10)) / 2) for a, b in zip(sentences[:40], sentences[20:60])]
    left = teacher.encode([p.sentence1 for p in pairs]).astype(np.float64)
    right = teacher.encode([p.sentence2 for p in pairs]).astype(np.float64)
    cosines = (left * right).sum(1) / np.linalg.norm(left, axis=1) / np.linalg.norm(right, axis=1)
    gold = [p.score for p in pairs]
    card_before = dict(teacher.model_card_data.eval_results_dict)
    result = sts_correlations(teacher, pairs, batch_size=7)
    assert result["spearman"] == pytest.approx(_pearson_by_formula(_average_ranks(cosines), _average_ranks(gold)),
                                               abs=1e-6)
    assert result["pearson"] == pytest.approx(_pearson_by_formula(cosines, gold), abs=1e-6)
    assert evaluate_sts(teacher, pairs) == result["spearman"]
    assert teacher.model_card_data.eval_results_dict == card_before  # scoring leaves the model unchanged
    with pytest.raises(ValueError, match="at least 2 pairs"):
        evaluate_sts(teacher, pairs[:1])
    with pytest.raises(ValueError, match="every gold score .* is 2.0"):
        evaluate_sts(teacher, [StsPair(p.sentence1, p.sentence2, 2.0) for p in pairs])


def test_evaluate_sts_equals_scipy_on_independently_computed_cosines(teacher, sentences):
    from scipy.stats import spearmanr

    rng = random.Random(1)
    pairs = [StsPair(a, b, round(rng.uniform(0, 5), 1)) for a, b in zip(sentences[:30], sentences[30:60])]
    pairs.append(StsPair(sentences[0], sentences[5], 2.0))  # a repeated sentence
    left = teacher.encode([p.sentence1 for p in pairs], convert_to_tensor=True)
    right = teacher.encode([p.sentence2 for p in pairs], convert_to_tensor=True)
    cosines = torch.nn.functional.cosine_similarity(left, right).numpy()
    expected = spearmanr(cosines, [p.score for p in pairs]).correlation
    assert evaluate_sts(teacher, pairs) == pytest.approx(expected, abs=1e-6)
    assert evaluate_sts(teacher, [(p.sentence1, p.sentence2, p.score) for p in pairs]) == pytest.approx(expected,
                                                                                                        abs=1e-6)


def test_read_sts_splits_on_tabs_only(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('main-news\tfile\t2012\t0001\t4.250\tHe said "hi.\tShe said hi.\textra\tcolumns\n'
                    "\n"
                    "main-forums\tf\t2014\t0002\t0\tA cat, a dog.\tA 'bird'.\n", encoding="utf-8")
    assert read_sts(path) == [StsPair('He said "hi.', "She said hi.", 4.25), StsPair("A cat, a dog.", "A 'bird'.", 0.0)]


@pytest.mark.parametrize(("text", "message"), [("a\tb\tc\n", r"sts.csv:1: expected at least 7"),
                                               ("g\tf\ty\ti\t4.0\ts1\ts2\ng\tf\ty\ti\thigh\ts1\ts2\n",
                                                r"sts.csv:2: score column"),
                                               ("", "no sentence pairs")])
def test_read_sts_names_the_bad_line(tmp_path, text, message):
    path = tmp_path / "sts.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_sts(path)


# ---------------------------------------------------------------- bad inputs: files and model paths


@pytest.mark.parametrize(("content", "message"), [(b"", "no sentences"), (b"\n  \n\n", "no sentences"),
                                                  (b"abc\x00\x01\x02", "binary"), (b"caf\xe9 au lait\n", "not UTF-8")])
def test_read_sentences_rejects_empty_and_non_text_files(tmp_path, content, message):
    path = tmp_path / "sentences.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_sentences(path)
    with pytest.raises(FileNotFoundError):
        read_sentences(tmp_path / "missing.txt")


def test_model_path_that_is_not_a_sentence_transformer_says_what_was_found(teacher_dir, tmp_path):
    hf_dir = teacher_dir.parent / "hf"  # the plain transformers checkpoint the fixture wrapped
    with pytest.raises(NotASentenceTransformerError, match=r"plain Hugging Face .*model_type='bert'.*BertModel"):
        load_sentence_transformer(hf_dir)
    (tmp_path / "farm").mkdir()
    (tmp_path / "farm" / "language_model_config.json").write_text("{}")
    with pytest.raises(NotASentenceTransformerError, match="Haystack FARM model"):
        load_sentence_transformer(tmp_path / "farm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotASentenceTransformerError, match="empty folder"):
        load_sentence_transformer(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotASentenceTransformerError, match="is a file"):
        load_sentence_transformer(tmp_path / "file.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sentence_transformer(tmp_path / "nowhere")


def test_save_refuses_an_existing_output_unless_overwrite(teacher, tmp_path):
    save_sentence_transformer(teacher, tmp_path / "m")
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_sentence_transformer(teacher, tmp_path / "m")
    save_sentence_transformer(truncate_layers(teacher, 1), tmp_path / "m", overwrite=True)
    assert load_sentence_transformer(tmp_path / "m")._first_module().auto_model.config.num_hidden_layers == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


# ---------------------------------------------------------------- CLI


def test_cli_distils_and_evaluates(teacher_dir, sentences, tmp_path, capsys):
    from haystack_distill.cli import main

    sentence_file = tmp_path / "sentences.txt"
    sentence_file.write_text("\n".join(sentences) + "\n")
    sts_file = tmp_path / "sts.csv"
    rng = random.Random(2)
    sts_file.write_text("".join(f"g\tf\t2012\t{i}\t{rng.uniform(0, 5):.2f}\t{a}\t{b}\n"
                                for i, (a, b) in enumerate(zip(sentences[:20], sentences[20:40]))))
    out = tmp_path / "student"
    argv = ["distil-embeddings", "--teacher", str(teacher_dir), "--layers", "2", "--sentences", str(sentence_file),
            "--output", str(out), "--batch-size", "32", "--dev-sts", str(sts_file), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    assert "dev STS Spearman" in capsys.readouterr().out
    assert load_sentence_transformer(out)._first_module().auto_model.config.num_hidden_layers == 2
    assert json.loads((out / "distillation_metrics.json").read_text())["sentences"] == len(sentences)
    assert main(["eval-sts", "--model", str(out), "--model", str(teacher_dir), "--sts", str(sts_file)]) == 0
    table = capsys.readouterr().out
    expected = evaluate_sts(load_sentence_transformer(out), read_sts(sts_file))
    assert f"{100 * expected:.2f}" in table and str(teacher_dir) in table

    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main([*argv[:-6], "--sentences", str(empty), "--output", str(tmp_path / "o2")]) == 2
    assert "no sentences" in capsys.readouterr().err
    assert main(["eval-sts", "--model", str(teacher_dir.parent / "hf"), "--sts", str(sts_file)]) == 2
    assert "plain Hugging Face" in capsys.readouterr().err


def test_cli_pca_head_after_distillation(teacher_dir, sentences, tmp_path):
    from haystack_distill.cli import main

    sentence_file = tmp_path / "sentences.txt"
    sentence_file.write_text("\n".join(sentences))
    out = tmp_path / "student"
    assert main(["distil-embeddings", "--teacher", str(teacher_dir), "--keep", "0,3", "--sentences",
                 str(sentence_file), "--output", str(out), "--pca-dim", "8", "--cache-dir", str(tmp_path)]) == 0
    assert load_sentence_transformer(out).get_sentence_embedding_dimension() == 8
    assert main(["distil-embeddings", "--teacher", str(teacher_dir), "--layers", "1", "--sentences",
                 str(sentence_file), "--output", str(tmp_path / "o"), "--pca-dim", "64"]) == 2


# ---------------------------------------------------------------- Haystack adapter


def test_embedding_retriever_adapter(teacher_dir, other_dir, sentences, tmp_path):
    pytest.importorskip("haystack")
    from haystack_distill.embeddings.retriever import DistillableEmbeddingRetriever, retriever_model

    retriever = DistillableEmbeddingRetriever(embedding_model=str(teacher_dir), use_gpu=False, progress_bar=False)
    retriever.truncate_layers([0, 2])
    assert retriever_model(retriever)._first_module().auto_model.config.num_hidden_layers == 2
    retriever = DistillableEmbeddingRetriever(embedding_model=str(other_dir), use_gpu=False, progress_bar=False)
    teacher = load_sentence_transformer(teacher_dir)
    target = encode(teacher, sentences)
    before = float(np.mean((retriever.embed_queries(sentences) - target) ** 2))
    metrics = retriever.distil_embeddings_from(str(teacher_dir), sentences, epochs=8, batch_size=16,
                                               learning_rate=1e-3, cache_dir=tmp_path, show_progress_bar=False)
    after = float(np.mean((retriever.embed_queries(sentences) - target) ** 2))
    assert metrics["steps"] == 32 and after < 0.5 * before
    retriever.model_format = "farm"
    with pytest.raises(TypeError, match="model_format='farm'"):
        retriever.distil_embeddings_from(teacher, sentences)
