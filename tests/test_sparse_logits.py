"""Top-k teacher-logit packing: values pinned by hand and checked against dense softmax computed with numpy."""

import math

import numpy as np
import pytest
import torch

from haystack_distill.reader.sparse_logits import decode_top_k, encode_top_k, packed_width, validate_top_k


def _softmax(x, mask, t):
    x = np.where(mask, x / t, -np.inf)
    e = np.exp(x - x.max())
    return e / e.sum()


def test_hand_computed_fill_and_layout():
    logits = torch.tensor([[[3.0, -1.0], [1.0, 2.0], [0.0, 0.5], [-2.0, 0.0]]])
    packed = encode_top_k(logits, None, k=1, temperature=1.0)
    assert packed.shape == (1, 2, packed_width(1)) == (1, 2, 3)
    # start: keeps 3.0 at position 0; fill = log((e^1 + e^0 + e^-2) / 3)
    assert packed[0, 0].tolist() == pytest.approx([3.0, 0.0, math.log((math.e + 1 + math.exp(-2)) / 3)])
    # end: keeps 2.0 at position 1; fill = log((e^-1 + e^0.5 + e^0) / 3)
    assert packed[0, 1].tolist() == pytest.approx([2.0, 1.0, math.log((math.exp(-1) + math.exp(0.5) + 1) / 3)])


def test_temperature_enters_the_fill():
    logits = torch.tensor([[[4.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])
    packed = encode_top_k(logits, None, k=1, temperature=2.0)
    # fill f solves 2 * exp(f / 2) = exp(2 / 2) + exp(0 / 2)
    assert float(packed[0, 0, 2]) == pytest.approx(2 * math.log((math.e + 1) / 2))


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_topk_probabilities_exact_and_tail_mass_preserved(t):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 2, generator=gen) * 3
    mask = torch.rand(3, 40, generator=gen) > 0.3
    k = 5
    dense = decode_top_k(encode_top_k(logits, mask, k, t), 40)
    for b in range(3):
        for c in range(2):
            m = mask[b].numpy()
            true = _softmax(logits[b, :, c].numpy().astype(np.float64), m, t)
            got = _softmax(dense[b, :, c].numpy().astype(np.float64), m, t)
            top = np.argsort(-np.where(m, true, -1))[:k]
            np.testing.assert_allclose(got[top], true[top], rtol=1e-5)
            tail = m.copy()
            tail[top] = False
            assert got[tail].sum() == pytest.approx(true[tail].sum(), rel=1e-5)
            assert np.ptp(got[tail]) == pytest.approx(0.0, abs=1e-7)  # spread evenly


def test_k_covering_all_valid_positions_is_lossless():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 12, 2, generator=gen)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, 3:9] = True  # six valid positions, k = 8 keeps them all
    dense = decode_top_k(encode_top_k(logits, mask, 8, 2.0), 12)
    assert torch.equal(dense[mask], logits[mask])


def test_fp16_storage_round_trips_positions():
    logits = torch.randn(1, 512, 2)
    packed = encode_top_k(logits, None, 16, 1.0).half()
    dense = decode_top_k(packed, 512)
    top = logits[0, :, 0].topk(16).indices
    torch.testing.assert_close(dense[0, top, 0], logits[0, top, 0].half().float())


@pytest.mark.parametrize("k, seq_len, match", [(0, 10, "positive"), (True, 10, "positive"), (11, 10, "exceeds"),
                                                (8, 4096, "up to 2048")])
def test_validation_names_the_fix(k, seq_len, match):
    with pytest.raises(ValueError, match=match):
        validate_top_k(k, seq_len)


def test_decode_to_a_shorter_batch_drops_padding_positions():
    logits = torch.tensor([[[2.0, 2.0], [1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]])
    valid = torch.tensor([[True, True, False, False]])  # positions 2-3 are padding
    packed = encode_top_k(logits, valid, k=3, temperature=1.0)  # k > valid: a padding position is kept too
    assert decode_top_k(packed, seq_len=2)[0, :, 0].tolist() == [2.0, 1.0]
