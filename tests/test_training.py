"""The shared training loop: exact resume after an interruption, refusal of foreign checkpoints."""

import math

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
    with pytest.raises(ValueError, match=r"pass --checkpoint-dir \(checkpoint_root_dir in Python\)"):
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


def test_length_buckets_do_not_batch_near_duplicates_together():
    from haystack_distill.training import epoch_order

    # 20 "paragraphs" of 5 questions each; a paragraph's rows share one length, all lengths fall in one 32-bucket
    paragraph = torch.arange(20).repeat_interleave(5)
    lengths = 100 + paragraph
    def paragraphs_per_batch(bucket: int) -> list:
        order = epoch_order(100, 10, seed=0, lengths=lengths, group=10, bucket=bucket)
        return [len(set(paragraph[b].tolist())) for b in order.view(10, 10)]
    assert max(paragraphs_per_batch(1)) <= 3  # exact sort: each batch is a run of 2-3 whole paragraphs
    assert sum(paragraphs_per_batch(32)) / 10 > 6  # buckets keep the shuffle: ~8.3 expected of 10 random rows


def test_length_slices_partition_the_batch_by_length():
    from haystack_distill.training import length_slices

    lengths = torch.tensor([5, 1, 4, 2, 3, 6, 7])
    slices = length_slices(torch.tensor([6, 0, 1, 2, 3, 4]), lengths, 4)
    assert [s.tolist() for s, _ in slices] == [[1, 3], [4, 2], [0], [6]]  # sorted by length, tensor_split sizes
    assert [f for _, f in slices] == [2 / 6, 2 / 6, 1 / 6, 1 / 6]
    assert length_slices(torch.tensor([3]), lengths, 4)[0][1] == 1.0
    assert len(length_slices(torch.tensor([0, 1]), None, 4)) == 1  # no lengths: the batch whole


def _sequence_data():
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(1, 9, (24,), generator=g)
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
    return {"x": torch.randn(24, 8, generator=g) * mask, "padding_mask": mask, "y": torch.randn(24, generator=g)}


def _train_pooled(tmp_path, **kw):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)

    def loss_fn(batch):  # a per-row loss averaged over rows, on the masked mean of each row's sequence
        pooled = (batch["x"] * batch["padding_mask"]).sum(1) / batch["padding_mask"].sum(1)
        return ((model(pooled[:, None])[:, 0] - batch["y"]) ** 2).mean()
    train(model, _sequence_data(), loss_fn, _config(tmp_path, checkpoint_dir=None, checkpoint_every=None,
                                                    length_key="padding_mask", sequence_keys=("x", "padding_mask"),
                                                    length_bucket=1, **kw))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_length_split_batches_give_the_whole_batch_gradient_of_a_padding_free_loss(tmp_path):
    whole = _train_pooled(tmp_path / "a", length_splits=1)
    split = _train_pooled(tmp_path / "b", length_splits=3)
    assert torch.allclose(whole, split, atol=1e-6)
    assert not torch.allclose(whole, _train_pooled(tmp_path / "c", length_splits=3, group_by_length=True), atol=1e-4)


def test_collate_cuts_sequence_columns_to_the_longest_row():
    from haystack_distill.training import _collate

    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    data = {"padding_mask": mask, "input_ids": torch.arange(15).view(3, 5), "labels": torch.zeros(3, 6, 2)}
    batch = _collate(data, torch.tensor([0, 1]), "cpu", "padding_mask", ("padding_mask", "input_ids"))
    assert batch["input_ids"].tolist() == [[0, 1, 2], [5, 6, 7]] and batch["padding_mask"].shape == (2, 3)
    assert batch["labels"].shape == (2, 6, 2)  # not a sequence field: untouched
    wide = _collate(data, torch.tensor([0, 1]), "cpu", "padding_mask", ("padding_mask", "input_ids"), bucket=2)
    assert wide["input_ids"].tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]]  # 3 rounded up to the bucket multiple 4


class _Scores:
    """An Evaluator scoring 0.5, then 0.9, then worse and worse; it remembers the weights it saw."""

    primary_metric, greater_is_better = "score", True

    def __init__(self):
        self.seen = []

    def __call__(self, model):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": [0.5, 0.9, 0.4, 0.3, 0.2, 0.1][min(len(self.seen), 6) - 1]}


def test_evaluator_keeps_the_best_weights_and_stops_after_patience(tmp_path):
    model, evaluator = Tiny(), _Scores()
    config = _config(tmp_path, checkpoint_every=None, evaluate_every=1, evaluate_at_start=True, keep_best=True,
                     patience=1, grad_acc_steps=1)
    result = train(model, _data(), _loss_for(model), config, evaluator=evaluator)
    assert [h["step"] for h in result.history] == [0, 1, 2, 3] and result.stopped_early
    assert result.best == {"step": 1, "score": 0.9} and result.global_step == 3
    for name, value in model.state_dict().items():
        assert torch.equal(value, evaluator.seen[1][name]), name


def test_bf16_autocast_runs_on_the_cpu(tmp_path):
    model = Tiny()
    seen = []

    def loss_fn(batch):
        out = model(batch["x"])
        seen.append(out.dtype)
        return ((out.float() - batch["y"]) ** 2).mean()

    result = train(model, _data(), loss_fn, _config(tmp_path, n_epochs=1, use_amp=True, amp_dtype="bf16",
                                                    checkpoint_every=None))
    assert seen and all(d == torch.bfloat16 for d in seen) and math.isfinite(result.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_new_run_never_overwrites_or_prunes_another_runs_checkpoints(tmp_path):
    first = Tiny()
    train(first, _data(), _loss_for(first), _config(tmp_path, n_epochs=1))
    kept = sorted(p.name for p in (tmp_path / "ckpt").glob("step-*"))
    states = {name: (tmp_path / "ckpt" / name / "state.pt").read_bytes() for name in kept}
    other = Tiny()
    calls = {"n": 0}

    def counting(batch):
        calls["n"] += 1
        return ((other(batch["x"]) - batch["y"]) ** 2).mean()

    with pytest.raises(CheckpointMismatchError, match="another run.*--checkpoint-dir"):
        train(other, _data(), counting, _config(tmp_path, n_epochs=1, run_fields={"run": "b"}))
    assert calls["n"] == 0  # refused before the first step
    assert {n: (tmp_path / "ckpt" / n / "state.pt").read_bytes() for n in kept} == states
    again = Tiny()  # the same run again, without resume, may replace its own checkpoints
    train(again, _data(), _loss_for(again), _config(tmp_path, n_epochs=1))


def test_pruning_keeps_checkpoints_it_did_not_write(tmp_path):
    from haystack_distill.training import save_checkpoint

    model = Tiny()
    foreign = tmp_path / "ckpt" / "step-1"
    foreign.mkdir(parents=True)
    (foreign / "state.pt").write_bytes(b"not ours")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    for step in (2, 3, 4):
        save_checkpoint(tmp_path / "ckpt", {"model": model}, optimizer, scheduler,
                        {"epoch": 0, "batch": step, "global_step": step}, {"run": "a"}, keep=2)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == ["step-1", "step-3", "step-4"]
