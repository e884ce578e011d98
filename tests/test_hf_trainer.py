"""DistillationTrainer (transformers.Trainer adapter) and benchmark_classifier, on tiny random BERTs (CPU, seconds)."""

from __future__ import annotations

import copy
import math
import os
import random
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
    DataCollatorForTokenClassification,
    PretrainedConfig,
    TrainingArguments,
)
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from haystack_distill.evaluation.classification import benchmark_classifier
from haystack_distill.hf import DistillationTrainer, DistillationTrainingArguments
from haystack_distill.tokenizers import TokenizerMismatchError

WORDS = "good bad great awful movie film plot acting the a is was very not fun dull story cast".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ------------------------------------------------------------------------------------------------ helpers


def _tokenizer(path: Path, words: List[str]) -> BertTokenizerFast:
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(SPECIAL + words) + "\n")
    return BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)


def _bert(cls, vocab_size: int, layers: int, seed: int, num_labels: int = 2, **config) -> nn.Module:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels, **config)
    return cls(cfg)


def _sharp_teacher(cls, vocab_size: int, num_labels: int = 2) -> nn.Module:
    """A random teacher whose classifier is scaled up, so its predictions are confident and varied."""
    teacher = _bert(cls, vocab_size, layers=4, seed=11, num_labels=num_labels)
    with torch.no_grad():
        teacher.classifier.weight.normal_(0.0, 3.0)
    return teacher


def _sentences(n: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _args(tmp_path: Path, **kwargs) -> DistillationTrainingArguments:
    defaults = dict(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, save_strategy="no",
                    per_device_train_batch_size=8, per_device_eval_batch_size=16, learning_rate=5e-3,
                    max_steps=4, logging_strategy="no", seed=0, disable_tqdm=True, dataloader_num_workers=0)
    defaults.update(kwargs)
    return DistillationTrainingArguments(**defaults)


def _softmax(row: List[float], temperature: float = 1.0) -> List[float]:
    exps = [math.exp(x / temperature) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: List[float], q: List[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _mean_kl(teacher: nn.Module, student: nn.Module, batch: Dict[str, torch.Tensor]) -> float:
    """KL(teacher || student) at T=1, averaged over attended positions (rows), via torch ops."""
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    teacher.eval()
    student.eval()
    with torch.no_grad():
        t = torch.log_softmax(teacher(**inputs).logits, -1)
        s = torch.log_softmax(student(**inputs).logits, -1)
    per_row = (t.exp() * (t - s)).sum(-1)
    if per_row.dim() == 2:
        per_row = per_row[batch["attention_mask"].bool()]
    student.train()
    return float(per_row.mean())


class _Fixed(nn.Module):
    """A stand-in classifier returning fixed logits (as a trainable parameter)."""

    def __init__(self, logits: List, token_level: bool = False) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))
        self.config = PretrainedConfig(num_labels=self.logits.shape[-1])
        self.token_level = token_level

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        out = TokenClassifierOutput if self.token_level else SequenceClassifierOutput
        return out(logits=self.logits * 1.0)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run far faster on one thread, especially on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> BertTokenizerFast:
    return _tokenizer(tmp_path_factory.mktemp("tok"), WORDS)


@pytest.fixture(scope="module")
def seq_data(tok):
    from datasets import Dataset

    texts = _sentences(48, seed=0)
    labels = [int(t.count("good") + t.count("great") > t.count("bad") + t.count("awful")) for t in texts]
    encoded = tok(texts, truncation=True, max_length=16)
    return Dataset.from_dict({**encoded, "label": labels, "text": texts})


@pytest.fixture(scope="module")
def token_data(tok) -> List[Dict]:
    rows = []
    for text in _sentences(40, seed=1):
        enc = tok(text, truncation=True, max_length=16)
        words = tok.convert_ids_to_tokens(enc["input_ids"])
        labels = [-100 if w in SPECIAL else (1 if w in ("good", "great") else 2 if w in ("bad", "awful") else 0)
                  for w in words]
        rows.append({**enc, "labels": labels})
    return rows


# ------------------------------------------------------------------------------------ the loss, by hand


S_LOGITS = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
T_LOGITS = [[2.0, 0.0, 1.0], [0.5, 0.5, -0.5]]


def test_combined_loss_matches_hand_computation(tmp_path):
    alpha, temperature, labels = 0.3, 2.5, [1, 2]
    ce = sum(-math.log(_softmax(s)[y]) for s, y in zip(S_LOGITS, labels)) / 2
    kl = sum(_kl(_softmax(t, temperature), _softmax(s, temperature)) for s, t in zip(S_LOGITS, T_LOGITS)) / 2
    expected = alpha * ce + (1 - alpha) * temperature**2 * kl

    student, teacher = _Fixed(S_LOGITS), _Fixed(T_LOGITS)
    trainer = DistillationTrainer(student, _args(tmp_path, alpha=alpha, temperature=temperature),
                                  teacher_model=teacher)
    inputs = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": torch.tensor(labels)}
    loss = trainer.compute_loss(student, dict(inputs))
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    loss.backward()
    assert student.logits.grad is not None and student.logits.grad.abs().sum() > 0
    assert teacher.logits.grad is None and not teacher.logits.requires_grad

    # Without labels only the KD term remains, still scaled by T^2.
    kd_only = trainer.compute_loss(student, {"input_ids": inputs["input_ids"]})
    assert kd_only.item() == pytest.approx(temperature**2 * kl, rel=1e-5)


def test_token_loss_masks_ignored_positions_by_hand(tmp_path):
    s = [[[0.5, -1.0], [9.0, -9.0], [1.5, 0.0]]]  # the middle position is labelled -100
    t = [[[-0.5, 0.5], [-9.0, 9.0], [2.0, 1.0]]]
    alpha, temperature = 0.6, 2.0
    kept = [(s[0][0], t[0][0], 0), (s[0][2], t[0][2], 1)]
    ce = sum(-math.log(_softmax(si)[y]) for si, _, y in kept) / 2
    kl = sum(_kl(_softmax(ti, temperature), _softmax(si, temperature)) for si, ti, _ in kept) / 2
    expected = alpha * ce + (1 - alpha) * temperature**2 * kl

    student, teacher = _Fixed(s, token_level=True), _Fixed(t, token_level=True)
    trainer = DistillationTrainer(student, _args(tmp_path, alpha=alpha, temperature=temperature),
                                  teacher_model=teacher)
    inputs = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.tensor([[0, -100, 1]])}
    assert trainer.compute_loss(student, inputs).item() == pytest.approx(expected, rel=1e-5)


# -------------------------------------------------------------------------------------- end to end, CPU


def test_sequence_kd_moves_student_toward_teacher_and_leaves_teacher_alone(tmp_path, tok, seq_data):
    teacher = _sharp_teacher(BertForSequenceClassification, len(tok))
    teacher_before = copy.deepcopy(teacher.state_dict())

    def distil(alpha: float):
        student = _bert(BertForSequenceClassification, len(tok), layers=2, seed=5)
        trainer = DistillationTrainer(
            student, _args(tmp_path, alpha=alpha, temperature=1.0, max_steps=30), teacher_model=teacher,
            train_dataset=seq_data, processing_class=tok, teacher_tokenizer=tok,
        )
        batch = next(iter(trainer.get_eval_dataloader(seq_data)))
        kl_before = _mean_kl(teacher, student, batch)
        result = trainer.train()
        assert math.isfinite(result.training_loss)
        return trainer, kl_before, _mean_kl(teacher, student, batch)

    trainer, kl_before, kl_kd = distil(alpha=0.0)  # pure KD
    _, _, kl_ce = distil(alpha=1.0)  # same student, labels only
    assert kl_before > 0.1
    assert kl_kd < 0.1 * kl_before, (kl_before, kl_kd)
    assert kl_kd < kl_ce, (kl_kd, kl_ce)
    # The teacher: same weights, eval mode, frozen, and not in the optimizer.
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized.isdisjoint(id(p) for p in teacher.parameters())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))


def test_token_classification_with_precomputed_logits(tmp_path, tok, token_data):
    teacher = _sharp_teacher(BertForTokenClassification, len(tok), num_labels=3)
    student = _bert(BertForTokenClassification, len(tok), layers=2, seed=6, num_labels=3)
    trainer = DistillationTrainer(
        student, _args(tmp_path, alpha=0.2, temperature=2.0, max_steps=25, precompute_teacher_logits=True),
        teacher_model=teacher, train_dataset=token_data, processing_class=tok,
        data_collator=DataCollatorForTokenClassification(tok),
    )
    loader = trainer.get_train_dataloader()  # computes the logits (in memory) and indexes the data
    assert trainer.teacher_cache is not None and trainer.teacher_cache.token_level
    assert trainer.teacher_cache_hit is False
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 8 and (batch["attention_mask"] == 0).any()  # a padded batch
    cached = trainer.teacher_cache.lookup(batch["distill_teacher_index"], batch["attention_mask"],
                                          batch["input_ids"].shape + (3,), "cpu")
    live = trainer._teacher_forward(batch, "cpu")
    mask = batch["attention_mask"].bool()
    assert torch.allclose(cached[mask], live[mask], atol=2e-2)  # fp16 storage
    assert torch.all(cached[~mask] == 0)

    kl_before = _mean_kl(teacher, student, batch)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert _mean_kl(teacher, student, batch) < kl_before


def test_cached_teacher_logits_are_reused(tmp_path, tok, seq_data):
    teacher = _sharp_teacher(BertForSequenceClassification, len(tok))
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    cache_dir = tmp_path / "cache"

    def run(data, model=teacher) -> DistillationTrainer:
        student = _bert(BertForSequenceClassification, len(tok), layers=2, seed=5)
        trainer = DistillationTrainer(
            student, _args(tmp_path, max_steps=3, precompute_teacher_logits=True,
                           teacher_logits_cache_dir=str(cache_dir)),
            teacher_model=model, train_dataset=data, processing_class=tok,
        )
        trainer.train()
        return trainer

    first = run(seq_data)
    assert first.teacher_cache_hit is False and calls  # computed once, before training
    assert (first.teacher_cache_path / "outputs.npy").is_file()
    assert len(calls) == math.ceil(len(seq_data) / 16)  # one pass in eval batches, none during training
    calls.clear()

    second = run(seq_data)
    assert second.teacher_cache_hit is True and not calls  # loaded from disk: teacher never ran
    assert second.teacher_cache_path == first.teacher_cache_path
    np.testing.assert_array_equal(np.asarray(second.teacher_cache.logits), np.asarray(first.teacher_cache.logits))

    # The cached logits are the teacher's (to fp16 precision).
    batch = next(iter(second.get_eval_dataloader(seq_data)))
    with torch.no_grad():
        live = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    cached = second.teacher_cache.lookup(torch.arange(len(live)), None, live.shape, "cpu")
    assert torch.allclose(cached, live, atol=1e-2)

    # Different data or a different teacher: a new cache entry.
    assert run(seq_data.select(range(40))).teacher_cache_hit is False
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed.classifier.bias.add_(0.5)
    assert run(seq_data, changed).teacher_cache_hit is False
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 3


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [{"alpha": -0.1}, {"alpha": 1.5}, {"alpha": float("nan")},
                                 {"temperature": 0.0}, {"temperature": -1.0}, {"temperature": float("nan")}])
def test_bad_alpha_or_temperature_raise_when_arguments_are_built(tmp_path, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        _args(tmp_path, **bad)


def test_bad_arguments_caught_by_the_trainer(tmp_path, tok):
    teacher = _bert(BertForSequenceClassification, len(tok), layers=2, seed=1)
    student = _bert(BertForSequenceClassification, len(tok), layers=1, seed=2)
    args = _args(tmp_path)
    args.temperature = 0.0  # changed after construction
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(student, args, teacher_model=teacher)
    with pytest.raises(ValueError, match="distillation_loss"):
        _args(tmp_path, distillation_loss="cosine")
    with pytest.raises(TypeError, match="DistillationTrainingArguments"):
        DistillationTrainer(student, TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                            teacher_model=teacher)
    with pytest.raises(ValueError, match="teacher_model"):
        DistillationTrainer(student, _args(tmp_path))
    with pytest.raises(ValueError, match="student itself"):
        DistillationTrainer(student, _args(tmp_path), teacher_model=student)


def test_label_count_and_label_map_mismatches_name_the_difference(tmp_path, tok):
    teacher3 = _bert(BertForSequenceClassification, len(tok), layers=1, seed=1, num_labels=3)
    student2 = _bert(BertForSequenceClassification, len(tok), layers=1, seed=2, num_labels=2)
    with pytest.raises(ValueError, match=r"teacher has 3 labels.*student has 2 labels"):
        DistillationTrainer(student2, _args(tmp_path), teacher_model=teacher3)

    teacher = _bert(BertForSequenceClassification, len(tok), layers=1, seed=1,
                    id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    student = _bert(BertForSequenceClassification, len(tok), layers=1, seed=2,
                    id2label={0: "positive", 1: "negative"}, label2id={"positive": 0, "negative": 1})
    with pytest.raises(ValueError, match="id 0 is 'negative' in the teacher but 'positive' in the student"):
        DistillationTrainer(student, _args(tmp_path), teacher_model=teacher)

    token_student = _bert(BertForTokenClassification, len(tok), layers=1, seed=2)
    with pytest.raises(ValueError, match="sequence classifier but the student .* token classifier"):
        DistillationTrainer(token_student, _args(tmp_path), teacher_model=teacher)


def test_mismatched_tokenizers_raise_at_construction(tmp_path, tok):
    other = _tokenizer(tmp_path / "other", list(reversed(WORDS)))  # same size, ids moved
    teacher = _bert(BertForSequenceClassification, len(tok), layers=1, seed=1)
    student = _bert(BertForSequenceClassification, len(tok), layers=1, seed=2)
    with pytest.raises(TokenizerMismatchError, match="different ids"):
        DistillationTrainer(student, _args(tmp_path), teacher_model=teacher, processing_class=tok,
                            teacher_tokenizer=other)
    assert issubclass(TokenizerMismatchError, ValueError)
    # Same tokenizer passed as `tokenizer=` (the deprecated Trainer name) is accepted.
    DistillationTrainer(student, _args(tmp_path), teacher_model=teacher, tokenizer=tok, teacher_tokenizer=tok)
    # Without teacher_tokenizer, differing vocab sizes are caught from the configs.
    small_teacher = _bert(BertForSequenceClassification, len(tok) - 3, layers=1, seed=1)
    with pytest.raises(TokenizerMismatchError, match="vocab_size"):
        DistillationTrainer(student, _args(tmp_path), teacher_model=small_teacher)


def test_precompute_needs_a_map_style_dataset(tmp_path, tok):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"input_ids": [2, 5, 3], "label": 0}

    teacher = _bert(BertForSequenceClassification, len(tok), layers=1, seed=1)
    student = _bert(BertForSequenceClassification, len(tok), layers=1, seed=2)
    with pytest.raises(ValueError, match="map-style"):
        DistillationTrainer(student, _args(tmp_path, precompute_teacher_logits=True), teacher_model=teacher,
                            train_dataset=Stream())


# ------------------------------------------------------------------------------------ benchmark_classifier


def _roc_auc_by_pairs(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_benchmark_classifier_metrics_size_and_no_temp_files(tmp_path, tok, seq_data, monkeypatch):
    import tempfile

    model = _sharp_teacher(BertForSequenceClassification, len(tok))
    rows = [{"text": t, "label": y} for t, y in zip(seq_data["text"], seq_data["label"])]
    enc = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=128, return_tensors="pt")
    model.eval()
    with torch.no_grad():  # centre the decision threshold so both classes get predicted
        margin = model(**enc).logits.diff(dim=-1).squeeze(-1)
        model.classifier.bias[1] -= margin.median() + 1e-3
    model.train()
    scratch, cwd = tmp_path / "scratch", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(cwd)

    result = benchmark_classifier(model, tok, rows, batch_size=16, warmup=2, repeats=5, device="cpu")

    assert list(scratch.iterdir()) == [] and list(cwd.iterdir()) == []  # nothing written anywhere
    assert model.training  # mode restored
    # Independent reference: run the model ourselves and count.
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    labels = np.array([r["label"] for r in rows])
    preds = probs.argmax(1)
    tp, fp, fn = [int(((preds == a) & (labels == b)).sum()) for a, b in ((1, 1), (1, 0), (0, 1))]
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert 0 < tp and 0 < fp + fn  # a non-trivial case
    assert result["accuracy"] == pytest.approx(float((preds == labels).mean()))
    assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert result["roc_auc"] == pytest.approx(_roc_auc_by_pairs(labels, probs[:, 1]), abs=1e-9)
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    torch.save(model.state_dict(), tmp_path / "archive.pt")  # the zip root is named after the file stem
    assert result["size_mb"] == pytest.approx(os.path.getsize(tmp_path / "archive.pt") / 2**20)
    assert result["latency_ms_mean"] > 0 and result["latency_ms_std"] >= 0 and result["throughput_per_s"] > 0
    assert result["examples"] == len(rows)


def test_benchmark_classifier_pairs_tokens_and_bad_arguments(tok, token_data):
    model = _bert(BertForSequenceClassification, len(tok), layers=1, seed=3)
    pairs = [{"a": "good movie", "b": "great film", "label": 1}, {"a": "bad plot", "b": "fun cast", "label": 0}]
    result = benchmark_classifier(model, tok, pairs, text_column="a", text_pair_column="b", warmup=0, repeats=2)
    assert result["examples"] == 2 and 0.0 <= result["f1"] <= 1.0

    token_model = _bert(BertForTokenClassification, len(tok), layers=1, seed=3, num_labels=3)
    result = benchmark_classifier(token_model, tok, token_data[:10], warmup=1, repeats=2, average="macro")
    assert 0.0 <= result["accuracy"] <= 1.0 and result["examples"] == 10

    with pytest.raises(ValueError, match="repeats"):
        benchmark_classifier(model, tok, pairs, repeats=0)
    with pytest.raises(ValueError, match="text_column"):
        benchmark_classifier(model, tok, pairs)
    with pytest.raises(ValueError, match="empty"):
        benchmark_classifier(model, tok, [])


def test_a_non_finite_gradient_stops_training_before_the_update(tmp_path):
    from haystack_distill.safety import DivergenceError

    class InfGradient(DistillationTrainer):
        def distillation_objective(self, student_logits, *_):  # finite loss, infinite gradient: sqrt'(0)
            return torch.sqrt((student_logits * 0).pow(2).sum()) + 1.0

    cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    teacher, student = BertForSequenceClassification(cfg), BertForSequenceClassification(cfg)
    before = copy.deepcopy(student.state_dict())
    rows = [{"input_ids": torch.tensor([2, 5, 6, 3]), "labels": torch.tensor(i % 2)} for i in range(4)]
    args = _args(tmp_path, per_device_train_batch_size=4, max_steps=1, save_strategy="no", logging_strategy="no",
                 disable_tqdm=True)
    trainer = InfGradient(student, args, teacher_model=teacher, train_dataset=rows)
    with pytest.raises(DivergenceError, match="step 1: the gradient norm is (nan|inf)"):
        trainer.train()
    for name, value in student.state_dict().items():
        assert torch.equal(value, before[name]), name
