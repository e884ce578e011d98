"""The one training loop behind every stage (fine-tuning, prediction-layer KD, intermediate-layer KD).

A stage is just a ``loss_fn(batch) -> scalar``; the loop owns optimisation, gradient accumulation, warmup,
AMP on GPU, evaluation with early stopping, torch.distributed gradient averaging, and exact resume:
checkpoints hold model, extra modules (e.g. projections), optimizer, scheduler, RNG states and the data
position, saved as plain tensors/containers so they load with ``torch.load(weights_only=True)``.
No Haystack import.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from .safety import check_finite, check_finite_grad, check_finite_loss
from .teacher_cache import fingerprint_file

logger = logging.getLogger(__name__)

Batch = Dict[str, Tensor]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


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
    use_amp: bool = False
    device: str = "cpu"
    evaluate_every: int = 0
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
    """What the loop returns: final training loss, steps taken and the best evaluation metrics."""

    loss: float
    global_step: int
    metrics: Dict[str, float]
    stopped_early: bool = False


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def world() -> tuple:
    """(rank, world_size) under torch.distributed, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ensure_distributed() -> tuple:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1) and not yet joined.

    Uses NCCL with CUDA, gloo otherwise; returns ``(rank, world_size)``.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        logger.info("joined torch.distributed: rank %d of %d", dist.get_rank(), dist.get_world_size())
    return world()


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if world()[1] > 1:
        dist.barrier()


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed): only it writes outputs."""
    return world()[0] == 0


def trainable_parameters(modules: Sequence[nn.Module]) -> List[tuple]:
    """Named parameters that require grad, de-duplicated (tied weights appear once)."""
    seen, named = set(), []
    for idx, module in enumerate(modules):
        for name, param in module.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                named.append((f"{idx}.{name}", param))
    return named


def build_optimizer(named: List[tuple], config: TrainConfig, total_steps: int) -> tuple:
    """AdamW with weight decay off for biases and LayerNorm, and linear warmup then linear decay."""
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)
    warmup = int(config.warmup_proportion * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _rng_state() -> Dict[str, Any]:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


class CheckpointMismatchError(ValueError):
    """A resume checkpoint belongs to a different run (teacher, student or configuration)."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file is truncated, unreadable or fails its checksum."""


CHECKSUM = "checksum.json"  # {"state.pt": blake2b of its bytes}, written after state.pt


def _checkpoints(root: Path) -> List[Path]:
    return sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


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
    (tmp / CHECKSUM).write_text(json.dumps({"state.pt": fingerprint_file(tmp / "state.pt")}))  # written last
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    for old in _checkpoints(root)[:-keep] if keep > 0 else []:
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
            logger.info("resume=True but no checkpoint in %s: starting from scratch", config.checkpoint_dir)
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
            "use another checkpoint_root_dir or resume=False."
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


def _average_gradients(params: List[Tensor]) -> None:
    rank_world = world()
    if rank_world[1] == 1:
        return
    for param in params:  # every rank reduces every parameter, so the collective calls always match
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad /= rank_world[1]


class _EarlyStopper:
    """Duck-types Haystack's ``EarlyStopping`` (metric, mode, patience, min_delta) on our metrics dict."""

    def __init__(self, early_stopping: Any) -> None:
        self.metric = getattr(early_stopping, "metric", "f1")
        self.mode = getattr(early_stopping, "mode", "max")
        self.patience = getattr(early_stopping, "patience", 0)
        self.min_delta = getattr(early_stopping, "min_delta", 0.0)
        self.best: Optional[float] = None
        self.best_state: Optional[Dict[str, Tensor]] = None
        self.bad_rounds = 0

    def value(self, metrics: Dict[str, float]) -> float:
        if callable(self.metric):
            return float(self.metric(metrics))
        key = str(self.metric).lower()
        if key not in metrics:
            raise ValueError(f"early_stopping metric {self.metric!r} is not computed; choose from {sorted(metrics)}.")
        return float(metrics[key])

    def update(self, metrics: Dict[str, float], model: nn.Module) -> bool:
        """Record an evaluation; return True when training should stop."""
        value = self.value(metrics)
        better = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        )
        if better:
            self.best, self.bad_rounds = value, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad_rounds += 1
        return self.bad_rounds > self.patience


def train(
    model: nn.Module,
    dataset: Dict[str, Any],
    loss_fn: Callable[[Batch], Tensor],
    config: TrainConfig,
    extra_modules: Optional[nn.Module] = None,
    eval_fn: Optional[Callable[[], Dict[str, float]]] = None,
    early_stopping: Any = None,
) -> TrainResult:
    """Train ``model`` (and ``extra_modules``) on a dict of equally long tensors/arrays with ``loss_fn``.

    Under torch.distributed each rank computes its slice of every global batch of ``config.batch_size`` rows
    and gradients are averaged across ranks, so results match a single process with the same global batch.
    """
    rank, world_size = world()
    n_rows = len(next(iter(dataset.values())))
    batches_per_epoch = math.ceil(n_rows / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_acc_steps)
    modules = {"model": model} | ({"extra": extra_modules} if extra_modules is not None else {})
    named = trainable_parameters(list(modules.values()))
    params = [p for _, p in named]
    optimizer, scheduler = build_optimizer(named, config, steps_per_epoch * config.n_epochs)
    set_seed(config.seed)
    progress = {"epoch": 0, "batch": 0, "global_step": 0}
    resume_from = _resolve_resume(config)
    if resume_from is not None:
        progress = load_checkpoint(resume_from[0], modules, optimizer, scheduler, config.run_fields, resume_from[1])
    stopper = _EarlyStopper(early_stopping) if early_stopping is not None and eval_fn is not None else None
    amp = config.use_amp and str(config.device).startswith("cuda")
    if config.use_amp and not amp:
        logger.info("use_amp=True ignored: AMP needs a CUDA device, training on %s in fp32", config.device)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    lengths = None if config.length_key is None else torch.as_tensor(np.asarray(dataset[config.length_key])).sum(1)
    last_loss, metrics, stopped = float("nan"), {}, False
    last_finite: Optional[float] = None
    bad_loss: Optional[float] = None  # the first non-finite micro-batch loss of the current step
    bar = tqdm(total=steps_per_epoch * config.n_epochs, initial=progress["global_step"], desc="training",
               disable=not config.show_progress or rank != 0)
    for epoch in range(progress["epoch"], config.n_epochs):
        order = epoch_order(n_rows, config.batch_size, config.seed + epoch,
                            lengths if config.group_by_length else None, bucket=config.length_bucket)
        start = progress["batch"] if epoch == progress["epoch"] else 0
        for model_ in modules.values():
            model_.train()
        for b_idx in range(start, batches_per_epoch):
            global_idx = order[b_idx * config.batch_size : (b_idx + 1) * config.batch_size]
            local_idx = global_idx[rank::world_size]
            if len(local_idx):
                # weight each rank's mean loss by its share of the global batch: gradients then average exactly
                share = len(local_idx) * world_size / len(global_idx)
                total = 0.0
                for rows, fraction in length_slices(local_idx, lengths, config.length_splits):
                    with torch.autocast("cuda", enabled=amp):
                        batch = _collate(dataset, rows, config.device, config.length_key, config.sequence_keys,
                                         config.length_bucket)
                        loss = loss_fn(batch) * fraction * share / config.grad_acc_steps
                    (scaler.scale(loss) if scaler else loss).backward()
                    total += float(loss.detach())
                last_loss = total * config.grad_acc_steps / share
                if not math.isfinite(last_loss) and bad_loss is None:
                    bad_loss = last_loss
                elif math.isfinite(last_loss):
                    last_finite = last_loss
            if (b_idx + 1) % config.grad_acc_steps and b_idx + 1 != batches_per_epoch:
                continue
            _average_gradients(params)
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            step = progress["global_step"] + 1
            check_finite_loss(last_loss if bad_loss is None else bad_loss, step, last_finite)
            if not scaler:  # AMP's scaler skips steps with inf gradients itself
                check_finite_grad(grad_norm, step, last_finite)
            scaler.step(optimizer) if scaler else optimizer.step()
            if scaler:
                scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress = {"epoch": epoch, "batch": b_idx + 1, "global_step": progress["global_step"] + 1}
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            every = config.checkpoint_every
            if every and config.checkpoint_dir and progress["global_step"] % every == 0:
                if rank == 0:
                    save_checkpoint(Path(config.checkpoint_dir), modules, optimizer, scheduler,
                                    progress, config.run_fields, config.checkpoints_to_keep)
                barrier()
            if eval_fn and config.evaluate_every and progress["global_step"] % config.evaluate_every == 0:
                metrics = eval_fn()
                logger.info("step %d: %s", progress["global_step"], metrics)
                if stopper and stopper.update(metrics, model):
                    stopped = True
                    break
                for model_ in modules.values():
                    model_.train()
        if stopped:
            break
        progress = {"epoch": epoch + 1, "batch": 0, "global_step": progress["global_step"]}
    bar.close()
    if stopper and stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
        logger.info("early stopping kept the best model (%s=%.4f)", stopper.metric, stopper.best)
    for model_ in modules.values():
        model_.eval()
    return TrainResult(loss=last_loss, global_step=progress["global_step"], metrics=metrics, stopped_early=stopped)


def config_fields(config: TrainConfig) -> Dict[str, Any]:
    """The config fields that must match for a resume to be exact."""
    keys = ("n_epochs", "batch_size", "learning_rate", "warmup_proportion", "grad_acc_steps", "seed", "weight_decay",
            "length_key", "length_bucket", "group_by_length")
    return {k: v for k, v in asdict(config).items() if k in keys}
