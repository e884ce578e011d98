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
