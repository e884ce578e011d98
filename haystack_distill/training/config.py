"""What a training run is given and what it returns: :class:`TrainConfig`, :class:`TrainResult`, and the
config fields that identify a run for exact resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from torch import Tensor

Batch = Dict[str, Tensor]


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


def config_fields(config: TrainConfig) -> Dict[str, Any]:
    """The config fields that must match for a resume to be exact."""
    keys = ("n_epochs", "batch_size", "learning_rate", "warmup_proportion", "grad_acc_steps", "seed", "weight_decay",
            "length_key", "length_bucket", "group_by_length")
    return {k: v for k, v in asdict(config).items() if k in keys}
