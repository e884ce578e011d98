"""Loss values pinned against hand computation and independent formulas (math/torch.nn.functional)."""

import math

import pytest
import torch
import torch.nn.functional as F

from haystack_distill import losses


def _softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_kl_matches_hand_computation():
    s, t = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    p_s, p_t = _softmax(s), _softmax(t)
    expected = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    got = losses.kd_kl_div(torch.tensor([s]), torch.tensor([t]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() == pytest.approx(1.1504, abs=1e-4)


def test_kl_t1_equals_torch_kl_div_batchmean():
    torch.manual_seed(0)
    s, t = torch.randn(4, 7), torch.randn(4, 7)
    ref = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
    assert losses.kd_kl_div(s, t).item() == pytest.approx(ref.item(), rel=1e-6)


def test_kl_temperature_scaling_is_t_squared_times_softened_kl():
    torch.manual_seed(1)
    s, t, T = torch.randn(3, 5), torch.randn(3, 5), 4.0
    ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    assert losses.kd_kl_div(s, t, temperature=T).item() == pytest.approx(ref.item(), rel=1e-6)


def test_masked_positions_change_nothing():
    torch.manual_seed(2)
    s, t = torch.randn(2, 6), torch.randn(2, 6)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 1, 0]], dtype=torch.bool)
    base = losses.kd_kl_div(s, t, 2.0, mask)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = 1e3
    t2[~mask] = -55.0
    assert losses.kd_kl_div(s2, t2, 2.0, mask).item() == pytest.approx(base.item(), rel=1e-6)
    # and equals the KL computed on the valid entries only
    ref = sum(losses.kd_kl_div(s[i][mask[i]][None], t[i][mask[i]][None], 2.0) for i in range(2)) / 2
    assert base.item() == pytest.approx(ref.item(), rel=1e-6)


def test_soft_ce_is_kl_plus_teacher_entropy():
    torch.manual_seed(3)
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    p_t = F.softmax(t, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    assert losses.soft_cross_entropy(s, t).item() == pytest.approx((losses.kd_kl_div(s, t) + entropy).item(), rel=1e-6)


def test_mse_masked_mean():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[0.0, 0.0, 100.0]])
    mask = torch.tensor([[True, True, False]])
    assert losses.logit_mse(s, t, mask).item() == pytest.approx((1 + 4) / 2)
    assert losses.logits_kd(s, t, "mse", temperature=3.0, mask=mask).item() == pytest.approx(2.5)


def test_span_kd_averages_start_and_end():
    torch.manual_seed(4)
    s, t = torch.randn(2, 5, 2), torch.randn(2, 5, 2)
    mask = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    start = losses.kd_kl_div(s[..., 0], t[..., 0], 2.0, mask)
    end = losses.kd_kl_div(s[..., 1], t[..., 1], 2.0, mask)
    got = losses.span_kd_loss(s, t, mask, "kl_div", 2.0)
    assert got.item() == pytest.approx(((start + end) / 2).item(), rel=1e-6)


def test_span_kd_callable_gets_scaled_masked_logits():
    seen = {}

    def my_loss(student_logits, teacher_logits):
        seen["s"], seen["t"] = student_logits, teacher_logits
        return (student_logits - teacher_logits).abs().sum()

    s, t = torch.ones(1, 3, 2) * 4.0, torch.zeros(1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    got = losses.span_kd_loss(s, t, mask, my_loss, temperature=2.0)
    # valid: 2 positions, |4/2 - 0| = 2 each -> 4 per column, times T^2 = 16, averaged over start/end
    assert got.item() == pytest.approx(16.0)
    assert seen["s"][0, 2].item() == losses.MASK_FILL_VALUE == seen["t"][0, 2].item()


def test_positional_callable_and_bad_return():
    got = losses.logits_kd(torch.ones(2, 3), torch.zeros(2, 3), lambda a, b: ((a - b) ** 2).mean())
    assert got.item() == pytest.approx(1.0)
    with pytest.raises(TypeError, match="scalar"):
        losses.logits_kd(torch.ones(2, 3), torch.zeros(2, 3), lambda a, b: a - b)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_kl_div(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0)
    with pytest.raises(ValueError, match="distillation_loss='cosine'"):
        losses.validate_distillation_loss("cosine")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.combine_losses(torch.tensor(1.0), torch.tensor(1.0), 1.5)


def test_combine_losses():
    assert losses.combine_losses(torch.tensor(2.0), torch.tensor(10.0), 0.75).item() == pytest.approx(8.0)


@pytest.mark.parametrize("w", [0.0, 0.5, 0.75, 1.0])
def test_haystack_equivalent_weight_matches_haystacks_balance(w):
    # Haystack 1.26.4: w * (KD_start + KD_end) + (1 - w) * (CE_start + CE_end) / 2, written out by hand
    kd_start, kd_end, ce_start, ce_end = 3.0, 5.0, 2.0, 6.0
    haystack = w * (kd_start + kd_end) + (1 - w) * (ce_start + ce_end) / 2
    ours = losses.combine_losses(torch.tensor((ce_start + ce_end) / 2), torch.tensor((kd_start + kd_end) / 2),
                                 losses.haystack_equivalent_weight(w)).item()
    assert ours == pytest.approx(haystack / (1 + w))
    assert losses.haystack_equivalent_weight(0.75) == pytest.approx(6 / 7)
    with pytest.raises(ValueError, match="haystack_weight"):
        losses.haystack_equivalent_weight(-0.1)


def test_hidden_state_mse_with_projection_and_mask():
    proj = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    s = torch.tensor([[[1.0, 2.0], [9.0, 9.0]]])
    t = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    # projected first token [1, 2, 3] vs [1, 2, 4]: squared error 1 over 3 elements
    assert losses.hidden_state_mse(s, t, proj, mask).item() == pytest.approx(1 / 3)
    projections = losses.hidden_projections(2, 3, [0])
    assert any(p is projections["layer_0"].weight for p in projections.parameters())
    with pytest.raises(ValueError, match="projection"):
        losses.hidden_state_mse(s, t)


def test_embedding_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert losses.embedding_mse(a, b).item() == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert losses.embedding_cosine(a, b).item() == pytest.approx((1.0 + 0.0) / 2)


def test_classification_kd_loss_hand_value():
    s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    labels = torch.tensor([1])
    ce = -math.log(_softmax([0.0, 1.0])[1])
    p_s, p_t = _softmax([0.0, 0.5]), _softmax([0.5, 0.0])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)) * 4
    got = losses.classification_kd_loss(s, t, labels, alpha=0.3, temperature=2.0)
    assert got.item() == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-6)


def test_gradients_flow_only_to_student():
    s = torch.randn(2, 4, 2, requires_grad=True)
    t = torch.randn(2, 4, 2, requires_grad=True)
    losses.span_kd_loss(s, t, torch.ones(2, 4, dtype=torch.bool)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_fully_masked_rows_are_left_out_of_the_average():
    torch.manual_seed(5)
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    row_mask = torch.tensor([True, False, True])
    got = losses.kd_kl_div(s, t, 2.0, row_mask)
    assert got.item() == pytest.approx(losses.kd_kl_div(s[row_mask], t[row_mask], 2.0).item(), rel=1e-6)


def _padded_ce(row_logits, real, gold, length):
    """Reference: CE over the row written out at ``length``, each present padding logit repeated equally often."""
    pads = row_logits[~real]
    copies, rest = divmod(length - int(real.sum()), len(pads))
    assert rest == 0
    full = torch.cat([row_logits[real], pads.repeat(copies)])
    return F.cross_entropy(full[None], torch.tensor([gold])).item()


def test_span_cross_entropy_without_padding_length_is_haystacks_loss():
    from haystack.modeling.model.prediction_head import QuestionAnsweringHead

    torch.manual_seed(0)
    logits = torch.randn(3, 7, 2)
    labels = torch.tensor([[[1, 3], [-1, -1]], [[0, 0], [-1, -1]], [[2, 5], [-1, -1]]])
    expected = QuestionAnsweringHead().logits_to_loss(logits=logits, labels=labels.clone())
    ours = losses.span_cross_entropy(logits, labels[:, 0, :], torch.ones(3, 7))
    assert torch.allclose(ours, expected)


def test_span_cross_entropy_counts_the_padding_up_to_padded_length():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 2)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    gold = torch.tensor([[1, 2], [0, 2]])
    got = losses.span_cross_entropy(logits, gold, mask, padded_length=16)
    # row 0: 12 padding positions at length 16, from 2 present (x6); row 1: 13 from 3 present (weight 13/3)
    row0 = [_padded_ce(logits[0, :, k], mask[0].bool(), int(gold[0, k]), 16) for k in (0, 1)]
    assert got[0].item() == pytest.approx(sum(row0) / 2, rel=1e-5)
    row1 = [(torch.logsumexp(torch.cat([logits[1, :3, k], logits[1, 3:, k] + math.log(13 / 3)]), 0)
             - logits[1, gold[1, k], k]).item() for k in (0, 1)]
    assert got[1].item() == pytest.approx(sum(row1) / 2, rel=1e-5)


def test_span_cross_entropy_does_not_depend_on_the_computed_width():
    torch.manual_seed(2)
    logits = torch.randn(2, 6, 2)
    logits[0, 4:], logits[1, 3:] = 0.5, -1.0  # one logit per row's padding, as for a model's pad positions
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    gold = torch.tensor([[1, 2], [0, 2]])
    wide = losses.span_cross_entropy(logits, gold, mask, padded_length=16)
    narrow = losses.span_cross_entropy(logits[:, :5], gold, mask[:, :5], padded_length=16)
    assert torch.allclose(narrow, wide)
    assert not torch.allclose(losses.span_cross_entropy(logits[:, :5], gold, mask[:, :5]),
                              losses.span_cross_entropy(logits, gold, mask))  # without it the width matters
    with pytest.raises(ValueError, match="padded_length"):
        losses.span_cross_entropy(logits, gold, mask, padded_length=4)


def test_one_registry_names_every_loss():
    assert losses.BUILTIN_LOSSES == ("kl_div", "mse", "soft_ce")
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    for name in losses.BUILTIN_LOSSES:
        assert losses.logits_kd(s, t, name, 2.0).item() == pytest.approx(
            losses.get_loss("logits", name)(s, t, 2.0, None).item())
    assert losses.get_loss("embedding", "cosine") is losses.embedding_cosine
    with pytest.raises(ValueError, match="attention_loss='dot'.*scores, kl"):
        losses.get_loss("attention", "dot", "attention_loss")
