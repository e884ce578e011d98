"""The one training loop behind every stage (reader fine-tuning and KD, general distillation, embedding
distillation, the MLM-head fitter), one concept per module:

- :mod:`.loop`: :func:`train`, a ``loss_fn(batch) -> scalar`` trained with accumulation, AMP, evaluation and DDP;
- :mod:`.config`: :class:`TrainConfig`, :class:`TrainResult` and the run fields resume compares;
- :mod:`.optim`: AdamW parameter groups and the warmup/decay schedule;
- :mod:`.batching`: epoch order, length slices and collating rows;
- :mod:`.evaluation`: the :class:`Evaluator` protocol, early stopping and ``keep_best``;
- :mod:`.checkpoint`: saving, verifying, pruning and resuming checkpoints;
- :mod:`.rng`: seeding and the RNG states a checkpoint holds.

The torch.distributed helpers live in :mod:`haystack_distill.distributed` and are re-exported here. No Haystack
import.
"""

from ..distributed import DIST_TIMEOUT_ENV, barrier, ensure_distributed, is_main_process, world
from .batching import _collate, epoch_order, length_slices
from .checkpoint import (
    CHECKSUM,
    RUN_ID,
    CheckpointCorruptError,
    CheckpointMismatchError,
    _checkpoints,
    _resolve_resume,
    check_checkpoint_dir,
    checkpoint_run_id,
    load_checkpoint,
    read_checkpoint,
    run_id,
    save_checkpoint,
)
from .config import Batch, TrainConfig, TrainResult, config_fields
from .evaluation import CallbackEvaluator, Evaluator, metric_value
from .loop import AMP_DTYPES, train
from .optim import NO_DECAY, NamedParams, build_optimizer, decay_groups, linear_schedule, trainable_parameters
from .rng import set_seed

__all__ = [
    "AMP_DTYPES", "Batch", "CHECKSUM", "CallbackEvaluator", "CheckpointCorruptError", "CheckpointMismatchError",
    "DIST_TIMEOUT_ENV", "Evaluator", "NO_DECAY", "NamedParams", "RUN_ID", "TrainConfig", "TrainResult", "barrier",
    "build_optimizer", "check_checkpoint_dir", "checkpoint_run_id", "config_fields", "decay_groups",
    "ensure_distributed", "epoch_order", "is_main_process", "length_slices", "linear_schedule", "load_checkpoint",
    "metric_value", "read_checkpoint", "run_id", "save_checkpoint", "set_seed", "train", "trainable_parameters",
    "world", "_checkpoints", "_collate", "_resolve_resume",
]
