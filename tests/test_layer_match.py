"""Pinned values of TinyBERT's layer-matching loss: general distillation and the reader's intermediate stage.

The PINNED numbers below were recorded from the code before the two losses (``GeneralDistillationLoss`` in
general.py, ``IntermediateLayerLoss`` in reader/intermediate.py) were merged into one class; the merged code must
reproduce them for the same settings. Tiny random models, fixed seeds, fixed inputs, eval mode (no dropout).
"""

from __future__ import annotations

from typing import Dict

import pytest
import torch
from conftest import build_tiny_bert

from haystack_distill.general import GeneralDistillationLoss
from haystack_distill.losses import attention_score_mse

MAPPING = {0: 1, 1: 3}
READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)

# recorded from the code before the refactor: (total loss, last_terms)
PINNED_GENERAL = {
    "w1_a0.01": (4.167259693145752, {"hidden": 4.106350898742676, "attention": 6.090897560119629}),
    "w2_a0.5": (11.258150100708008, {"hidden": 4.106350898742676, "attention": 6.090897560119629}),
    "w1_a0": (4.106350898742676, {"hidden": 4.106350898742676}),
}
PINNED_READER = {
    "scores": (2.2505781650543213, {"embeddings": 1.3119367361068726, "hidden": 3.1208605766296387,
                                    "attention": 5.311823844909668, "prediction": 0.01524076797068119}),
    "kl": (5.436501979827881, {"embeddings": 1.3119367361068726, "hidden": 3.1208603382110596,
                               "attention": 1.1682993173599243, "prediction": 0.0014720931649208069}),
    "none": (4.432797431945801, {"embeddings": 1.3119367361068726, "hidden": 3.1208605766296387}),
}


def _sharpen(model: torch.nn.Module, seed: int) -> None:
    """Larger random weights (as tests/test_general.py's teacher) so that the attention scores matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0, 0.3)


def _close(value: float, pinned: float) -> bool:
    return value == pytest.approx(pinned, rel=1e-5, abs=1e-7)


def _hidden_part(terms: Dict[str, float]) -> float:
    """Embeddings plus hidden layers: general distillation reported them as one ``hidden`` term."""
    return terms.get("embeddings", 0.0) + terms["hidden"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """A 4-layer teacher (32 wide, 4 heads), a 2-layer student (16 wide, 2 heads) and a same-width student."""
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("layer_match")
    paths = {"teacher": build_tiny_bert(root / "t", layers=4, hidden=32, heads=4, seed=1, qa=False),
             "student": build_tiny_bert(root / "s", layers=2, hidden=16, heads=2, seed=2, qa=False),
             "same": build_tiny_bert(root / "w", layers=2, hidden=32, heads=4, seed=3, qa=False)}
    models = {k: AutoModel.from_pretrained(str(p), attn_implementation="eager").eval() for k, p in paths.items()}
    for seed, model in enumerate(models.values()):
        _sharpen(model, seed)
    return models


def _text_batch(vocab_size: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, vocab_size, (3, 12), generator=generator)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for row, length in enumerate((12, 9, 5)):
        mask[row, :length] = 1
    return {"input_ids": input_ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}


def _general(encoders, student: str, hidden_weight: float, attention_weight: float):
    torch.manual_seed(0)  # the projections' init
    loss = GeneralDistillationLoss(encoders[student], encoders["teacher"], MAPPING, hidden_weight, attention_weight)
    with torch.no_grad():
        total = float(loss(_text_batch(encoders["teacher"].config.vocab_size)))
    return total, dict(loss.last_terms)


@pytest.mark.parametrize("case, hidden_weight, attention_weight",
                         [("w1_a0.01", 1.0, 0.01), ("w2_a0.5", 2.0, 0.5), ("w1_a0", 1.0, 0.0)])
def test_general_distillation_terms_are_pinned(encoders, case, hidden_weight, attention_weight):
    total, terms = _general(encoders, "student", hidden_weight, attention_weight)
    pinned_total, pinned_terms = PINNED_GENERAL[case]
    assert _close(total, pinned_total)
    assert _close(_hidden_part(terms), _hidden_part(pinned_terms))
    assert ("attention" in terms) == ("attention" in pinned_terms)
    if "attention" in terms:
        assert _close(terms["attention"], pinned_terms["attention"])


def test_general_hidden_term_matches_a_hand_formula(encoders):
    """Same widths, no attention: the loss is the masked MSE of embeddings and mapped layers, summed."""
    total, _ = _general(encoders, "same", 1.0, 0.0)
    batch = _text_batch(encoders["teacher"].config.vocab_size)
    with torch.no_grad():
        h_s = encoders["same"](**batch, output_hidden_states=True).hidden_states
        h_t = encoders["teacher"](**batch, output_hidden_states=True).hidden_states
    m = batch["attention_mask"].float()[..., None]
    pairs = [(0, 0)] + [(s + 1, t + 1) for s, t in MAPPING.items()]
    hand = sum(float(((h_s[s] - h_t[t]) ** 2 * m).sum() / (m.sum() * 32)) for s, t in pairs)
    assert total == pytest.approx(hand, rel=1e-5)


def test_attention_score_mse_matches_a_hand_formula():
    """Scores [1, 1, 2, 2]: all pairs valid, MSE = (1 + 4 + 9 + 16) / 4; second token padded: only (0, 0)."""
    teacher = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    student = torch.zeros_like(teacher)
    assert float(attention_score_mse(student, teacher, torch.tensor([[1, 1]]))) == pytest.approx(7.5)
    assert float(attention_score_mse(student, teacher, torch.tensor([[1, 0]]))) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def readers(tiny_models, tiny_squad):
    from haystack_distill.reader import DistillableFARMReader, data

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)  # 4 layers, 32 wide, 4 heads
    student = DistillableFARMReader(str(tiny_models["student"]), **READER_KW)  # 2, 16, 2
    for seed, reader in enumerate((teacher, student)):
        reader.inferencer.model.eval()
        _sharpen(reader.inferencer.model.language_model.model, 10 + seed)
    processor = data.build_processor(student, 96, 32, 24)
    features = data.featurize(processor, data.read_paragraphs(tiny_squad / "train.json"))
    return teacher, student, {k: v[:6] for k, v in features.items()}


READER_CASES = {
    "scores": dict(prediction_weight=0.5),
    "kl": dict(embedding_weight=0.5, hidden_weight=2.0, attention_weight=0.3, attention_loss="kl",
               prediction_weight=0.25, prediction_loss="kl_div", temperature=2.0, kd_mask="padding",
               teacher_batch_size=4),
    "none": dict(attention_loss="none", prediction_weight=0.0),
}


@pytest.mark.parametrize("case", list(READER_CASES))
def test_reader_intermediate_terms_are_pinned(readers, case):
    from haystack_distill.reader.intermediate import build_intermediate_loss

    teacher, student, batch = readers
    torch.manual_seed(0)  # the projections' init
    loss = build_intermediate_loss(student, teacher, "uniform", **READER_CASES[case])
    with torch.no_grad():
        total = float(loss(batch))
    terms = dict(loss.last_terms)
    pinned_total, pinned_terms = PINNED_READER[case]
    assert _close(total, pinned_total)
    assert terms.keys() == pinned_terms.keys()
    assert all(_close(terms[k], pinned_terms[k]) for k in terms)
