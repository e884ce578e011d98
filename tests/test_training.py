"""The shared training loop: exact resume after an interruption, refusal of foreign checkpoints."""

import pytest
import torch
from torch import nn

from haystack_distill.training import CheckpointMismatchError, TrainConfig, train


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True)}


def _config(tmp_path, **kw):
    base = dict(n_epochs=3, batch_size=6, learning_rate=1e-2, warmup_proportion=0.2, grad_acc_steps=2, seed=7,
                checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1, checkpoints_to_keep=2,
                show_progress=False, run_fields={"run": "a"})
    return TrainConfig(**{**base, **kw})


def _loss_for(model, fail_at=None):
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt("simulated kill")
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()

    return loss_fn


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    reference = Tiny()
    result = train(reference, _data(), _loss_for(reference), _config(tmp_path / "a"))
    assert result.global_step == 3 * 4  # 7 batches per epoch, accumulated by 2 -> 4 optimizer steps

    interrupted = Tiny()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, _data(), _loss_for(interrupted, fail_at=11), _config(tmp_path / "b"))
    resumed = Tiny()  # a fresh process would rebuild the model from its initial weights
    train(resumed, _data(), _loss_for(resumed), _config(tmp_path / "b", resume=True))
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert len(list((tmp_path / "b" / "ckpt").glob("step-*"))) == 2  # pruned to checkpoints_to_keep


def test_checkpoint_loads_with_weights_only(tmp_path):
    model = Tiny()
    train(model, _data(), _loss_for(model), _config(tmp_path, n_epochs=1))
    state = torch.load(next((tmp_path / "ckpt").glob("step-*")) / "state.pt", weights_only=True)
    assert set(state) >= {"modules", "optimizer", "scheduler", "rng", "progress"}


def test_resume_refuses_a_different_run(tmp_path):
    model = Tiny()
    train(model, _data(), _loss_for(model), _config(tmp_path, n_epochs=1))
    other = Tiny()
    with pytest.raises(CheckpointMismatchError, match="run"):
        train(other, _data(), _loss_for(other), _config(tmp_path, n_epochs=1, resume=True,
                                                         run_fields={"run": "b"}))


def test_resume_true_without_checkpoint_dir_is_an_error(tmp_path):
    model = Tiny()
    with pytest.raises(ValueError, match="checkpoint_root_dir"):
        train(model, _data(), _loss_for(model), _config(tmp_path, checkpoint_dir=None, resume=True))


def test_loss_decreases(tmp_path):
    model = Tiny()
    data = _data()
    model.eval()
    before = ((model(data["x"]) - data["y"]) ** 2).mean().item()
    train(model, data, _loss_for(model), _config(tmp_path, n_epochs=30, learning_rate=5e-2, checkpoint_every=None))
    model.eval()
    assert ((model(data["x"]) - data["y"]) ** 2).mean().item() < 0.5 * before


def test_length_grouped_epoch_order():
    from haystack_distill.training import epoch_order

    lengths = torch.tensor([(i * 37) % 100 for i in range(103)])
    order = epoch_order(103, 10, seed=3, lengths=lengths, group=5)
    assert sorted(order.tolist()) == list(range(103))  # a permutation
    assert torch.equal(order, epoch_order(103, 10, seed=3, lengths=lengths, group=5))  # reproducible
    assert not torch.equal(order, epoch_order(103, 10, seed=4, lengths=lengths, group=5))
    batches = order[:100].view(10, 10)
    spread = (lengths[batches].max(1).values - lengths[batches].min(1).values).float().mean()
    plain = epoch_order(103, 10, seed=3)[:100].view(10, 10)
    plain_spread = (lengths[plain].max(1).values - lengths[plain].min(1).values).float().mean()
    assert spread < plain_spread / 2  # rows of a batch have similar lengths


def test_collate_cuts_sequence_columns_to_the_longest_row():
    from haystack_distill.training import _collate

    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    data = {"padding_mask": mask, "input_ids": torch.arange(15).view(3, 5), "labels": torch.zeros(3, 6, 2)}
    batch = _collate(data, torch.tensor([0, 1]), "cpu", "padding_mask", ("padding_mask", "input_ids"))
    assert batch["input_ids"].tolist() == [[0, 1, 2], [5, 6, 7]] and batch["padding_mask"].shape == (2, 3)
    assert batch["labels"].shape == (2, 6, 2)  # not a sequence field: untouched
