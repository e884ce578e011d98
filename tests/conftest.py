"""Shared fixtures: tiny random models built in tmp dirs (a few hundred KB), offline settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, List

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)  # the test models are tiny: extra threads only add overhead (and contention)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab() -> List[str]:
    """A WordPiece vocab covering the synthetic QA data and common English."""
    from haystack_distill import synthetic

    words = set()
    for group in (synthetic.NAMES, synthetic.CITIES, synthetic.JOBS, synthetic.COMPANIES):
        for item in group:
            words.update(item.lower().split())
    for template, question, _ in synthetic.FACTS:
        for text in (template, question):
            words.update(w.strip("{}.?'").lower() for w in text.split())
    words.update("the a an of in is was what where when who which year and to paris france".split())
    words = sorted(w for w in words if w and "{" not in w and "}" not in w)
    pieces = [str(d) for d in range(10)] + [f"##{d}" for d in range(10)] + list(".,?!:;'()-")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return list(dict.fromkeys(SPECIAL + pieces + letters + [f"##{c}" for c in letters] + words))


def build_tiny_bert(path: Path, layers: int = 2, hidden: int = 32, heads: int = 2, vocab: List[str] = None,
                    seed: int = 0, qa: bool = True) -> Path:
    """Save a random BertForQuestionAnswering (or BertModel) + fast tokenizer to ``path``."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab or tiny_vocab()) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=512)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=256)
    torch.manual_seed(seed)
    model = (BertForQuestionAnswering if qa else BertModel)(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Paths of a 4-layer teacher (hidden 32, 4 heads) and a 2-layer student (hidden 16, 2 heads)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "teacher": build_tiny_bert(root / "teacher", layers=4, hidden=32, heads=4, seed=1),
        "student": build_tiny_bert(root / "student", layers=2, hidden=16, heads=2, seed=2),
        "student_same_width": build_tiny_bert(root / "student_w", layers=2, hidden=32, heads=4, seed=3),
    }


@pytest.fixture(scope="session")
def tiny_squad(tmp_path_factory) -> Path:
    """A small synthetic SQuAD train file (and dev file) in a tmp dir; returns the directory."""
    from haystack_distill.synthetic import make_squad_dataset

    root = tmp_path_factory.mktemp("squad")
    (root / "train.json").write_text(json.dumps(make_squad_dataset(12, seed=0)))
    (root / "dev.json").write_text(json.dumps(make_squad_dataset(4, seed=1)))
    return root


def kill_augmentation_on_second_article(monkeypatch) -> Callable[[], None]:
    """Make ``augment`` raise KeyboardInterrupt (a simulated kill) on its second article, after the first is saved;
    returns a function that restores the real augmenter."""
    from augment.core import SquadAugmenter

    real, calls = SquadAugmenter.augment_article, []

    def dies_on_second_article(self, article, index):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self, article, index)

    monkeypatch.setattr(SquadAugmenter, "augment_article", dies_on_second_article)
    return lambda: monkeypatch.setattr(SquadAugmenter, "augment_article", real)


def embedding_loss_killed_at(batch: int) -> Callable:
    """The embedding MSE loss, raising KeyboardInterrupt (a simulated kill) on its ``batch``-th call."""
    from haystack_distill.embeddings import distil

    calls = []

    def loss(student, target):
        calls.append(1)
        if len(calls) == batch:
            raise KeyboardInterrupt("simulated kill")
        return distil.embedding_mse(student, target)
    return loss
