"""The one training loop behind every stage (reader fine-tuning and KD, general distillation, embedding
distillation, the MLM-head fitter).

A stage is just a ``loss_fn(batch) -> scalar``; the loop owns optimisation (:func:`build_optimizer`), gradient
accumulation, warmup, AMP (fp16 or bf16), evaluation with early stopping (an :class:`Evaluator`),
``DistributedDataParallel`` under torchrun, and exact resume: checkpoints hold model, extra modules (e.g.
projections), optimizer, scheduler, RNG states (CUDA too) and the data position, saved as plain
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
import hashlib
import json
import logging
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from .safety import check_finite, check_finite_value
from .teacher_cache import fingerprint_file

logger = logging.getLogger(__name__)

Batch = Dict[str, Tensor]
NamedParams = List[Tuple[str, nn.Parameter]]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
#: Minutes a rank waits for the others in a collective before torch.distributed gives up (env overrides).
DIST_TIMEOUT_ENV = "HAYSTACK_DISTILL_DIST_TIMEOUT_MINUTES"
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainConfig:
    """Settings of one training run; ``run_fields`` identify the run for resume safety checks."""

    n_epochs: int = 2
    batch_size: int = 10
    learning_rate: float = 3e-5
    warmup_proportion: float = 0.2
    grad_acc_steps: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    seed: int = 42
    # use_amp: autocast to amp_dtype; fp16 (CUDA only, with a gradient scaler) or bf16 (CUDA or CPU, no scaler).
    use_amp: bool = False
    amp_dtype: Literal["fp16", "bf16"] = "fp16"
    device: str = "cpu"
    # evaluation (with an evaluator): every evaluate_every steps (0: not by steps), and optionally before the first
    # step and after every epoch (one evaluation per step at most). keep_best restores the best-scoring weights at
    # the end; patience (evaluations without an improvement over min_delta) stops early; None never stops.
    evaluate_every: int = 0
    evaluate_at_start: bool = False
    evaluate_every_epoch: bool = False
    keep_best: bool = False
    patience: Optional[int] = None
    min_delta: float = 0.0
    checkpoint_dir: Optional[str] = None
    checkpoint_every: Optional[int] = None
    checkpoints_to_keep: int = 3
    resume: Union[bool, str] = False
    show_progress: bool = True
    # length_key (e.g. "padding_mask"): compute each (randomly drawn) batch in ``length_splits`` slices of
    # length-sorted rows, each with the columns of sequence_keys cut to its longest row (rounded up to a multiple
    # of length_bucket, so few shapes recur), and accumulate: the whole batch's gradient for losses that average
    # over rows and ignore padding, with the padding no slice needs never computed.
    length_key: Optional[str] = None
    sequence_keys: Tuple[str, ...] = ()
    length_splits: int = 4
    length_bucket: int = 32
    # group_by_length: also order the epoch so that a batch holds rows of one length bucket (a little faster; off,
    # so batches stay random).
    group_by_length: bool = False
    run_fields: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What the loop returns.

    ``loss``: the last micro-batch loss; ``metrics``: the last evaluation; ``history``: every evaluation with its
    ``step``; ``best``: the best of them (None without an evaluator); ``step_losses``: mean micro-batch loss of each
    optimizer step of this call (a resumed run lists only its own steps); ``epoch_losses``: their means per epoch.
    """

    loss: float
    global_step: int
    metrics: Dict[str, float]
    stopped_early: bool = False
    history: List[Dict[str, float]] = field(default_factory=list)
    best: Optional[Dict[str, float]] = None
    step_losses: List[float] = field(default_factory=list)
    epoch_losses: List[float] = field(default_factory=list)


class Evaluator(Protocol):
    """What the loop evaluates with (like sentence-transformers' ``SentenceEvaluator``).

    ``evaluator(model)`` returns metrics; ``primary_metric`` names the one early stopping and ``keep_best``
    compare, ``greater_is_better`` its direction.
    """

    primary_metric: str
    greater_is_better: bool

    def __call__(self, model: nn.Module) -> Dict[str, float]: ...


class CallbackEvaluator:
    """An :class:`Evaluator` from a zero-argument ``eval_fn`` and a metric name (or a callable on the metrics).

    Example:
        >>> ev = CallbackEvaluator(lambda: {"f1": 0.5}, "F1")
        >>> ev(None), ev.primary_metric, ev.greater_is_better, ev.value({"f1": 0.5})
        ({'f1': 0.5}, 'f1', True, 0.5)
    """

    def __init__(self, eval_fn: Callable[[], Dict[str, float]], metric: Any = "f1",
                 greater_is_better: bool = True) -> None:
        self.eval_fn = eval_fn
        self.metric = metric
        self.primary_metric = getattr(metric, "__name__", "metric") if callable(metric) else str(metric).lower()
        self.greater_is_better = greater_is_better

    def __call__(self, model: Any) -> Dict[str, float]:
        return self.eval_fn()

    def value(self, metrics: Dict[str, float]) -> float:
        """The primary metric's value (a callable metric is applied to the metrics)."""
        return float(self.metric(metrics)) if callable(self.metric) else _lookup(self.primary_metric, metrics)


def _lookup(key: str, metrics: Dict[str, float]) -> float:
    if key not in metrics:
        raise ValueError(f"early_stopping metric {key!r} is not computed; choose from {sorted(metrics)}.")
    return float(metrics[key])


def metric_value(evaluator: Evaluator, metrics: Dict[str, float]) -> float:
    """The evaluator's primary metric in ``metrics`` (through its ``value(metrics)`` if it has one)."""
    value = getattr(evaluator, "value", None)
    return float(value(metrics)) if callable(value) else _lookup(evaluator.primary_metric, metrics)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def world() -> Tuple[int, int]:
    """(rank, world_size) under torch.distributed, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ensure_distributed(timeout: Optional[timedelta] = None) -> Tuple[int, int]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1) and not yet joined.

    Uses NCCL with CUDA, gloo otherwise; a rank waiting longer than ``timeout`` (default: 30 minutes, or
    ``$HAYSTACK_DISTILL_DIST_TIMEOUT_MINUTES``) for the others fails instead of hanging. Returns
    ``(rank, world_size)``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        timeout = timeout or timedelta(minutes=float(os.environ.get(DIST_TIMEOUT_ENV, "30")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
        logger.info("joined torch.distributed: rank %d of %d", dist.get_rank(), dist.get_world_size())
    return world()


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if world()[1] > 1:
        dist.barrier()


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed): only it writes outputs."""
    return world()[0] == 0


def trainable_parameters(modules: Sequence[nn.Module]) -> NamedParams:
    """Named parameters that require grad, de-duplicated (tied weights appear once)."""
    seen: set = set()
    named: NamedParams = []
    for idx, module in enumerate(modules):
        for name, param in module.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                named.append((f"{idx}.{name}", param))
    return named


def decay_groups(named: NamedParams, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` for weights, none for biases and LayerNorm (empty groups dropped)."""
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def linear_schedule(warmup: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor of a step: linear warmup over ``warmup`` steps, then linear decay to 0 at ``total_steps``.

    Example:
        >>> [round(linear_schedule(2, 6)(s), 2) for s in range(6)]
        [0.33, 0.67, 1.0, 0.75, 0.5, 0.25]
    """

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return schedule


def build_optimizer(named: NamedParams, config: TrainConfig,
                    total_steps: int) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay off for biases and LayerNorm, and linear warmup then linear decay (the one
    optimizer of every stage; the HF Trainer adapter builds its groups with :func:`decay_groups` too)."""
    optimizer = torch.optim.AdamW(decay_groups(named, config.weight_decay), lr=config.learning_rate)
    warmup = int(config.warmup_proportion * total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))


def _rng_state() -> Dict[str, Any]:
    version, state, gauss = random.getstate()
    np_state: Any = np.random.get_state()
    rng: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointMismatchError(ValueError):
    """A resume checkpoint belongs to a different run (teacher, student or configuration)."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file is truncated, unreadable or fails its checksum."""


CHECKSUM = "checksum.json"  # {"state.pt": blake2b of its bytes}, written after state.pt
RUN_ID = "run.json"  # {"run_id": ...}: which run wrote the checkpoint, readable without loading state.pt


def _checkpoints(root: Path) -> List[Path]:
    return sorted(root.glob("step-[0-9]*"), key=lambda p: int(p.name.split("-")[1]))


def run_id(run_fields: Dict[str, Any]) -> str:
    """A short hash of everything that identifies a run (its ``run_fields``)."""
    text = json.dumps({k: str(v) for k, v in run_fields.items()}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def checkpoint_run_id(path: Path) -> Optional[str]:
    """The run id a checkpoint folder was written by, or None (an older checkpoint, or not one of ours)."""
    try:
        return str(json.loads((path / RUN_ID).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_checkpoint_dir(root: Path, run_fields: Dict[str, Any], resuming: bool) -> None:
    """Before training: refuse a fresh run in a folder holding another run's checkpoints (it would overwrite or
    prune them), naming the way out."""
    if resuming or not root.is_dir():
        return
    mine = run_id(run_fields)
    others = [p.name for p in _checkpoints(root) if checkpoint_run_id(p) != mine]
    if others:
        raise CheckpointMismatchError(
            f"{root} holds checkpoints of another run ({', '.join(others[:3])}); a new run would overwrite them. "
            "Use another checkpoint folder (--checkpoint-dir / checkpoint_root_dir), or delete those folders.")


def save_checkpoint(root: Path, modules: Dict[str, nn.Module], optimizer, scheduler, progress: Dict[str, int],
                    run_fields: Dict[str, Any], keep: int) -> Path:
    """Write ``root/step-N/state.pt`` atomically and prune to the newest ``keep``."""
    for name, module in modules.items():
        check_finite(module, f"the {name} at step {progress['global_step']}")
    target = root / f"step-{progress['global_step']}"
    tmp = root / f".tmp-step-{progress['global_step']}"
    tmp.mkdir(parents=True, exist_ok=True)
    state = {
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "progress": progress,
        "run_fields": {k: str(v) for k, v in run_fields.items()},
    }
    torch.save(state, tmp / "state.pt")
    mine = run_id(run_fields)
    (tmp / RUN_ID).write_text(json.dumps({"run_id": mine}))
    (tmp / CHECKSUM).write_text(json.dumps({"state.pt": fingerprint_file(tmp / "state.pt")}))  # written last
    if target.exists():
        if checkpoint_run_id(target) != mine:
            raise CheckpointMismatchError(f"{target} belongs to another run; it was not replaced.")
        shutil.rmtree(target)
    tmp.rename(target)
    own = [p for p in _checkpoints(root) if checkpoint_run_id(p) == mine]  # never prune another run's
    for old in own[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """The state in ``path/state.pt``, verified against its checksum; :class:`CheckpointCorruptError` otherwise."""
    state_file = path / "state.pt"
    checksum = path / CHECKSUM
    try:
        if checksum.is_file() and json.loads(checksum.read_text())["state.pt"] != fingerprint_file(state_file):
            raise CheckpointCorruptError(f"checkpoint {state_file} is corrupt: its checksum does not match "
                                         f"{checksum.name}.")
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except CheckpointCorruptError:
        raise
    except Exception as err:  # truncated, empty (EOFError), unpicklable, missing ...
        raise CheckpointCorruptError(f"checkpoint {state_file} cannot be read ({type(err).__name__}: {err}).") from err


def _resolve_resume(config: TrainConfig) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """(checkpoint folder, its verified state) to resume from, falling back past corrupt ones; None: start fresh."""
    if not config.resume:
        return None
    if isinstance(config.resume, (str, Path)) and not isinstance(config.resume, bool):
        path = Path(config.resume)
        if (path / "state.pt").is_file():
            return path, read_checkpoint(path)  # the checkpoint asked for, or an error naming it
        candidates = _checkpoints(path)
        if not candidates:
            raise FileNotFoundError(f"resume={config.resume!r}: no checkpoint (step-*/state.pt) found there.")
    elif not config.checkpoint_dir:
        raise ValueError("resume=True needs checkpoint_root_dir (where the interrupted run saved checkpoints).")
    else:
        candidates = _checkpoints(Path(config.checkpoint_dir))
        if not candidates:
            logger.debug("resume=True but no checkpoint in %s: starting from scratch", config.checkpoint_dir)
            return None
    errors = []
    for path in reversed(candidates):
        try:
            state = read_checkpoint(path)
        except CheckpointCorruptError as err:
            logger.warning("%s Falling back to the previous checkpoint.", err)
            errors.append(str(err))
            continue
        return path, state
    raise CheckpointCorruptError(" ".join(errors) + " No readable checkpoint is left: delete these folders and "
                                                    "resume=False to start again.")


def load_checkpoint(path: Path, modules: Dict[str, nn.Module], optimizer, scheduler,
                    run_fields: Dict[str, Any], state: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
    """Restore a checkpoint saved by :func:`save_checkpoint`; refuse one from a different run or a corrupt one."""
    state = read_checkpoint(path) if state is None else state
    saved, current = state["run_fields"], {k: str(v) for k, v in run_fields.items()}
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differing:
        raise CheckpointMismatchError(
            f"checkpoint {path} is from a different run: {', '.join(differing)} differ "
            f"(checkpoint {[saved.get(k) for k in differing]} vs now {[current.get(k) for k in differing]}); "
            "resume only the run that wrote it, or start this one in another checkpoint folder "
            "(--checkpoint-dir / checkpoint_root_dir) without --resume."
        )
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    logger.info("resumed from %s (epoch %d, batch %d)", path, state["progress"]["epoch"],
                state["progress"]["batch"])
    return state["progress"]


def _rows_of(values: Any, indices: Tensor) -> Tensor:
    if isinstance(values, np.ndarray):  # e.g. a memory-mapped teacher cache: read only these rows
        return torch.from_numpy(np.ascontiguousarray(values[indices.numpy()]))
    return values[indices]


def _collate(dataset: Dict[str, Any], indices: Tensor, device: str, length_key: Optional[str] = None,
             sequence_keys: Sequence[str] = (), bucket: int = 1) -> Batch:
    """Rows ``indices``; with ``length_key`` the ``sequence_keys`` columns are cut to the longest row, rounded up
    to a multiple of ``bucket`` (a few batch widths instead of one per length, so allocations are reused)."""
    batch = {name: _rows_of(values, indices) for name, values in dataset.items()}
    if length_key is not None:
        longest = -(-int(batch[length_key].sum(1).max()) // bucket) * bucket
        for name in sequence_keys:
            if name in batch:
                batch[name] = batch[name][:, :longest]
    return {name: values.to(device) for name, values in batch.items()}


def length_slices(indices: Tensor, lengths: Optional[Tensor], splits: int) -> List[Tuple[Tensor, float]]:
    """``indices`` sorted by length and cut into ``splits`` slices, each with its share of the rows.

    Weighting a slice's mean loss by its share gives the mean over all rows, so for a loss that ignores padding
    the accumulated gradient is the whole batch's; short slices are then computed without the long rows' padding.

    Example:
        >>> import torch
        >>> [(s.tolist(), f) for s, f in length_slices(torch.tensor([0, 1, 2, 3]), torch.tensor([9, 2, 5, 1]), 2)]
        [([3, 1], 0.5), ([2, 0], 0.5)]
    """
    if lengths is None or splits <= 1 or len(indices) < 2:
        return [(indices, 1.0)]
    ordered = indices[torch.argsort(lengths[indices], stable=True)]
    return [(part, len(part) / len(indices)) for part in ordered.tensor_split(min(splits, len(indices)))]


def epoch_order(n_rows: int, batch_size: int, seed: int, lengths: Optional[Tensor] = None,
                group: int = 50, bucket: int = 32) -> Tensor:
    """Row order of one epoch: a seeded permutation, or with ``lengths`` length-grouped batches in random order.

    Grouping sorts each run of ``group * batch_size`` shuffled rows by length bucket (``ceil(length / bucket)``;
    the shuffled order is kept inside a bucket), cuts it into batches and shuffles the full batches (a short last
    batch stays last), so rows in a batch have similar lengths and the order is still random and reproducible
    from ``seed`` (exact resume). ``bucket=1`` sorts by exact length, which also batches near-duplicates (a SQuAD
    paragraph's questions) together.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_rows, generator=generator)
    if lengths is None:
        return order
    chunk = group * batch_size
    keys = -(-lengths // bucket)
    parts = [order[i : i + chunk] for i in range(0, n_rows, chunk)]
    order = torch.cat([p[torch.argsort(keys[p], descending=True, stable=True)] for p in parts])
    batches = list(order.split(batch_size))
    tail = [batches.pop()] if len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return torch.cat(shuffled + tail)


class _LossModule(nn.Module):
    """The trained modules with the loss as ``forward``: DistributedDataParallel wraps this, so each
    ``loss_fn(batch)`` is one DDP forward whatever modules the loss calls, and ``extra_modules`` are averaged too."""

    def __init__(self, modules: Dict[str, nn.Module], loss_fn: Callable[[Batch], Tensor]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self._loss_fn = (loss_fn,)  # in a tuple: a loss that is an nn.Module (holding the teacher) is not a child

    def forward(self, batch: Batch) -> Tensor:
        return self._loss_fn[0](batch)


class _Tracker:
    """Evaluation history, the best result (its weights with ``keep_best``) and early stopping by patience."""

    def __init__(self, evaluator: Evaluator, keep_best: bool, patience: Optional[int], min_delta: float) -> None:
        self.evaluator, self.keep_best, self.patience, self.min_delta = evaluator, keep_best, patience, min_delta
        self.history: List[Dict[str, float]] = []
        self.best: Optional[Dict[str, float]] = None
        self.best_value: Optional[float] = None
        self.best_state: Optional[Dict[str, Tensor]] = None
        self.bad_rounds = 0

    def improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.evaluator.greater_is_better:
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, step: int, model: nn.Module) -> Tuple[Dict[str, float], bool]:
        """Evaluate at ``step``; return (metrics, whether training should stop)."""
        metrics = self.evaluator(model)
        logger.info("step %d: %s", step, metrics)
        self.history.append({"step": step, **metrics})
        if not (self.keep_best or self.patience is not None):
            return metrics, False
        value = metric_value(self.evaluator, metrics)
        if self.improved(value):
            self.best, self.best_value, self.bad_rounds = self.history[-1], value, 0
            if self.keep_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return metrics, False
        self.bad_rounds += 1
        return metrics, self.patience is not None and self.bad_rounds > self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
            logger.info("kept the best model (%s=%.4f)", self.evaluator.primary_metric, self.best_value)


def _tracker(config: TrainConfig, evaluator: Optional[Evaluator], eval_fn: Optional[Callable[[], Dict[str, float]]],
             early_stopping: Any) -> Optional[_Tracker]:
    """The tracker for ``evaluator``, or for the older ``eval_fn`` + Haystack-style ``early_stopping`` (metric,
    mode, patience, min_delta): then the best model is kept only with ``early_stopping``."""
    if evaluator is not None:
        return _Tracker(evaluator, config.keep_best, config.patience, config.min_delta)
    if eval_fn is None:
        return None
    if early_stopping is None:
        return _Tracker(CallbackEvaluator(eval_fn), False, None, 0.0)
    wrapped = CallbackEvaluator(eval_fn, getattr(early_stopping, "metric", "f1"),
                                getattr(early_stopping, "mode", "max") == "max")
    return _Tracker(wrapped, True, getattr(early_stopping, "patience", 0), getattr(early_stopping, "min_delta", 0.0))


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


def config_fields(config: TrainConfig) -> Dict[str, Any]:
    """The config fields that must match for a resume to be exact."""
    keys = ("n_epochs", "batch_size", "learning_rate", "warmup_proportion", "grad_acc_steps", "seed", "weight_decay",
            "length_key", "length_bucket", "group_by_length")
    return {k: v for k, v in asdict(config).items() if k in keys}
