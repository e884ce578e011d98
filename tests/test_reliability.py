"""Promises: nothing lost, nothing silently wrong (issue 18). One test (or a few) per guarantee, on tiny models.

1. Training stops at the first non-finite loss or gradient (DivergenceError: step, last finite loss) and
   never updates or saves non-finite weights.
"""

import math

import pytest
import torch
from torch import nn

from haystack_distill.safety import DivergenceError
from haystack_distill.training import TrainConfig, train


def _linear_data(n=24):
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    return {"x": x, "y": x.sum(1, keepdim=True)}


def _config(tmp_path, **kw):
    return TrainConfig(**{**dict(n_epochs=2, batch_size=4, learning_rate=1e-2, show_progress=False,
                                 checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1), **kw})


# -- 1. divergence ---------------------------------------------------------------------------------------------
def test_training_stops_at_the_first_non_finite_loss_naming_step_and_last_loss(tmp_path):
    model, calls = nn.Linear(3, 1), {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return loss * float("nan") if calls["n"] == 4 else loss

    with pytest.raises(DivergenceError, match=r"step 4: loss is nan \(last finite loss \d"):
        train(model, _linear_data(), loss_fn, _config(tmp_path))
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never updated the weights
    assert calls["n"] == 4  # stopped there, not at the end of training


def test_training_stops_at_a_non_finite_gradient(tmp_path):
    model = nn.Linear(3, 1)

    def loss_fn(batch):  # a finite loss whose gradient is inf: sqrt'(0)
        return torch.sqrt((model(batch["x"]) * 0).pow(2).sum()) + 1.0

    with pytest.raises(DivergenceError, match="step 1: the gradient norm is (nan|inf)"):
        train(model, _linear_data(), loss_fn, _config(tmp_path))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    from haystack_distill.training import save_checkpoint

    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(DivergenceError, match="non-finite weights .* weight"):
        save_checkpoint(tmp_path, {"model": model}, opt, sched, {"epoch": 0, "batch": 1, "global_step": 1}, {}, 2)
    assert not list(tmp_path.glob("step-*"))
