"""The one training loop behind every stage (reader fine-tuning and KD, general distillation, embedding
distillation, the MLM-head fitter).

A stage is just a ``loss_fn(batch) -> scalar``; the loop owns optimisation (:mod:`.optim`), gradient
accumulation, warmup, AMP (fp16 or bf16), evaluation with early stopping (an :class:`~.evaluation.Evaluator`),
``DistributedDataParallel`` under torchrun, and exact resume (:mod:`.checkpoint`): checkpoints hold model, extra
modules (e.g. projections), optimizer, scheduler, RNG states (CUDA too) and the data position, saved as plain
tensors/containers so they load with ``torch.load(weights_only=True)``. No Haystack import.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> data = {"x": torch.randn(16, 2), "y": torch.zeros(16, 1)}
    >>> loss_fn = lambda batch: ((model(batch["x"]) - batch["y"]) ** 2).mean()
    >>> result = train(model, data, loss_fn, TrainConfig(n_epochs=1, batch_size=4, show_progress=False))
    >>> result.global_step, len(result.step_losses)
    (4, 4)
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..distributed import barrier, world
from ..safety import check_finite_value
from .batching import _collate, epoch_order, length_slices
from .checkpoint import _resolve_resume, check_checkpoint_dir, load_checkpoint, save_checkpoint
from .config import Batch, TrainConfig, TrainResult
from .evaluation import Evaluator, _Tracker, _tracker
from .optim import build_optimizer, trainable_parameters
from .rng import set_seed

logger = logging.getLogger(__name__)

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class _LossModule(nn.Module):
    """The trained modules with the loss as ``forward``: DistributedDataParallel wraps this, so each
    ``loss_fn(batch)`` is one DDP forward whatever modules the loss calls, and ``extra_modules`` are averaged too."""

    def __init__(self, modules: Dict[str, nn.Module], loss_fn: Callable[[Batch], Tensor]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self._loss_fn = (loss_fn,)  # in a tuple: a loss that is an nn.Module (holding the teacher) is not a child

    def forward(self, batch: Batch) -> Tensor:
        return self._loss_fn[0](batch)


def _amp_settings(config: TrainConfig) -> Tuple[bool, torch.dtype]:
    """(autocast on, dtype): fp16 needs CUDA; bf16 also runs on the CPU."""
    if config.amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype={config.amp_dtype!r}; use one of {', '.join(AMP_DTYPES)}.")
    on_cuda = str(config.device).startswith("cuda")
    amp = config.use_amp and (on_cuda or config.amp_dtype == "bf16")
    if config.use_amp and not amp:
        logger.info("use_amp=True ignored: fp16 AMP needs a CUDA device, training on %s in fp32 (bf16 runs on CPU)",
                    config.device)
    return amp, AMP_DTYPES[config.amp_dtype]


class _Run:
    """One call of :func:`train`: the state shared by its steps."""

    def __init__(self, modules: Dict[str, nn.Module], dataset: Dict[str, Any], loss_fn: Callable[[Batch], Tensor],
                 config: TrainConfig) -> None:
        self.config, self.dataset, self.modules = config, dataset, modules
        self.rank, self.world_size = world()
        self.n_rows = len(next(iter(dataset.values())))
        self.batches_per_epoch = math.ceil(self.n_rows / config.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_acc_steps)
        named = trainable_parameters(list(modules.values()))
        self.params = [p for _, p in named]
        self.optimizer, self.scheduler = build_optimizer(named, config, self.steps_per_epoch * config.n_epochs)
        set_seed(config.seed)
        self.progress = {"epoch": 0, "batch": 0, "global_step": 0}
        resume_from = _resolve_resume(config)
        if config.checkpoint_dir and config.checkpoint_every and self.rank == 0:
            check_checkpoint_dir(Path(config.checkpoint_dir), config.run_fields, resume_from is not None)
        if resume_from is not None:
            self.progress = load_checkpoint(resume_from[0], modules, self.optimizer, self.scheduler,
                                            config.run_fields, resume_from[1])
        self.amp, self.amp_dtype = _amp_settings(config)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.amp_dtype == torch.float16 else None
        self.lengths = (None if config.length_key is None
                        else torch.as_tensor(np.asarray(dataset[config.length_key])).sum(1))
        self.forward: nn.Module = _LossModule(modules, loss_fn)
        if self.world_size > 1:
            self.forward = nn.parallel.DistributedDataParallel(self.forward, find_unused_parameters=True)
        self.last_loss: float = float("nan")
        self.last_finite: Optional[float] = None
        self.bad_loss: Optional[float] = None  # the first non-finite micro-batch loss of the current step
        self.micro_losses: List[float] = []

    def sync_context(self, sync: bool) -> contextlib.AbstractContextManager:
        """Gradients are all-reduced only on a step's last backward (DDP's ``no_sync`` before it)."""
        if isinstance(self.forward, nn.parallel.DistributedDataParallel) and not sync:
            return self.forward.no_sync()
        return contextlib.nullcontext()

    def backward(self, rows: Tensor, scale: float, sync: bool) -> float:
        """Forward and backward one slice of rows with its loss times ``scale``; return the scaled loss."""
        config = self.config
        device_type = "cuda" if str(config.device).startswith("cuda") else "cpu"
        with self.sync_context(sync):
            with torch.autocast(device_type, dtype=self.amp_dtype, enabled=self.amp):
                batch = _collate(self.dataset, rows, config.device, config.length_key, config.sequence_keys,
                                 config.length_bucket)
                loss = self.forward(batch) * scale
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return float(loss.detach())

    def micro_batch(self, global_idx: Tensor, sync: bool) -> None:
        """This rank's share of one global batch, in length slices, accumulated into the gradients."""
        local_idx = global_idx[self.rank::self.world_size]
        if not len(local_idx):  # fewer rows than ranks: join the all-reduce with a zero gradient
            self.backward(global_idx[:1], 0.0, sync)
            return
        # weight each rank's mean loss by its share of the global batch: gradients then average exactly
        share = len(local_idx) * self.world_size / len(global_idx)
        slices = length_slices(local_idx, self.lengths, self.config.length_splits)
        total = 0.0
        for i, (rows, fraction) in enumerate(slices):
            total += self.backward(rows, fraction * share / self.config.grad_acc_steps, sync and i == len(slices) - 1)
        self.last_loss = total * self.config.grad_acc_steps / share
        self.micro_losses.append(self.last_loss)
        if not math.isfinite(self.last_loss) and self.bad_loss is None:
            self.bad_loss = self.last_loss
        elif math.isfinite(self.last_loss):
            self.last_finite = self.last_loss

    def step(self) -> float:
        """Clip, check and apply the accumulated gradients; return the step's mean micro-batch loss."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
        step = self.progress["global_step"] + 1
        check_finite_value(self.last_loss if self.bad_loss is None else self.bad_loss, step, self.last_finite)
        if not self.scaler:  # AMP's scaler skips steps with inf gradients itself
            check_finite_value(grad_norm, step, self.last_finite, "grad")
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = float(np.mean(self.micro_losses)) if self.micro_losses else self.last_loss
        self.micro_losses = []
        return mean

    def checkpoint(self) -> None:
        every, config = self.config.checkpoint_every, self.config
        if every and config.checkpoint_dir and self.progress["global_step"] % every == 0:
            if self.rank == 0:
                save_checkpoint(Path(config.checkpoint_dir), self.modules, self.optimizer, self.scheduler,
                                self.progress, config.run_fields, config.checkpoints_to_keep)
            barrier()

    def set_train(self) -> None:
        for module in self.modules.values():
            module.train()


def _evaluate(run: _Run, tracker: Optional[_Tracker], result: TrainResult) -> bool:
    """Evaluate at the current step unless already done there; return True to stop early."""
    step = run.progress["global_step"]
    if tracker is None or (tracker.history and tracker.history[-1]["step"] == step):
        return False
    result.metrics, stop = tracker.update(step, run.modules["model"])
    run.set_train()
    return stop


def _epoch(run: _Run, epoch: int, tracker: Optional[_Tracker], result: TrainResult, bar: tqdm) -> bool:
    """Train one epoch (from the resume position); return True when early stopping ended training."""
    config = run.config
    order = epoch_order(run.n_rows, config.batch_size, config.seed + epoch,
                        run.lengths if config.group_by_length else None, bucket=config.length_bucket)
    start = run.progress["batch"] if epoch == run.progress["epoch"] else 0
    run.set_train()
    first = len(result.step_losses)
    for b_idx in range(start, run.batches_per_epoch):
        sync = not (b_idx + 1) % config.grad_acc_steps or b_idx + 1 == run.batches_per_epoch
        run.micro_batch(order[b_idx * config.batch_size : (b_idx + 1) * config.batch_size], sync)
        if not sync:
            continue
        result.step_losses.append(run.step())
        run.progress = {"epoch": epoch, "batch": b_idx + 1, "global_step": run.progress["global_step"] + 1}
        bar.update(1)
        bar.set_postfix(loss=f"{run.last_loss:.4f}")
        run.checkpoint()
        if config.evaluate_every and run.progress["global_step"] % config.evaluate_every == 0:
            if _evaluate(run, tracker, result):
                return True
    if len(result.step_losses) > first:
        result.epoch_losses.append(float(np.mean(result.step_losses[first:])))
    run.progress = {"epoch": epoch + 1, "batch": 0, "global_step": run.progress["global_step"]}
    return config.evaluate_every_epoch and _evaluate(run, tracker, result)


def train(
    model: nn.Module,
    dataset: Dict[str, Any],
    loss_fn: Callable[[Batch], Tensor],
    config: TrainConfig,
    extra_modules: Optional[nn.Module] = None,
    eval_fn: Optional[Callable[[], Dict[str, float]]] = None,
    early_stopping: Any = None,
    evaluator: Optional[Evaluator] = None,
) -> TrainResult:
    """Train ``model`` (and ``extra_modules``) on a dict of equally long tensors/arrays with ``loss_fn``.

    ``evaluator(model)`` scores the model as ``config`` says (``evaluate_every``, ``evaluate_at_start``,
    ``evaluate_every_epoch``, ``keep_best``, ``patience``); the older ``eval_fn()`` with a Haystack-style
    ``early_stopping`` (metric, mode, patience, min_delta) still works. Under torch.distributed each rank computes
    its slice of every global batch of ``config.batch_size`` rows and DistributedDataParallel averages the
    gradients, so results match a single process with the same global batch.
    """
    modules = {"model": model} | ({"extra": extra_modules} if extra_modules is not None else {})
    run = _Run(modules, dataset, loss_fn, config)
    tracker = _tracker(config, evaluator, eval_fn, early_stopping)
    result = TrainResult(loss=float("nan"), global_step=run.progress["global_step"], metrics={})
    bar = tqdm(total=run.steps_per_epoch * config.n_epochs, initial=run.progress["global_step"], desc="training",
               disable=not config.show_progress or run.rank != 0)
    stopped = config.evaluate_at_start and run.progress["global_step"] == 0 and _evaluate(run, tracker, result)
    for epoch in range(run.progress["epoch"], config.n_epochs):
        if stopped or _epoch(run, epoch, tracker, result, bar):
            stopped = True
            break
    bar.close()
    if tracker is not None:
        tracker.restore(model)
        result.history, result.best = tracker.history, tracker.best
    for module in modules.values():
        module.eval()
    result.loss, result.global_step, result.stopped_early = run.last_loss, run.progress["global_step"], stopped
    return result
