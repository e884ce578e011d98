"""The shape of every reader stage: validate, inputs, data, teacher targets, loss, train, finish.

:class:`ReaderStage` runs these steps in that order; a stage (prediction layer, intermediate layers) subclasses
it and fills in only what differs: its model checks, teacher targets, loss, batching and run record.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..devices import resolve_device
from ..distributed import ensure_distributed, world
from ..fingerprint import fingerprint_file, fingerprint_module
from ..tokenizers import check_tokenizer_compatibility, check_vocab_fits, max_positions
from ..training import TrainConfig, TrainResult, config_fields, train
from .config import ReaderStageConfig
from .data import (
    SequenceSettings,
    StageData,
    StageInputs,
    batching,
    data_path,
    training_data,
    unlabeled_fingerprint,
    unlabeled_paths,
)
from .output import check_save_dir, default_save_dir, finish, make_eval_fn, run_sources
from .targets import UNUSED_WEIGHTS, teacher_fingerprint

logger = logging.getLogger(__name__)
Loss = Callable[[Dict[str, torch.Tensor]], torch.Tensor]


def stage_inputs(student: Any, teacher: Optional[Any], config: ReaderStageConfig, save_suffix: str = "",
                 ) -> StageInputs:
    """Check the data files and ``save_dir`` (before any model work) and resolve the sequence settings."""
    train_path = data_path(config.data_dir, config.train_filename)
    if train_path is None:
        raise ValueError("train_filename is empty; name the SQuAD file to train on.")
    dev, test = data_path(config.data_dir, config.dev_filename), data_path(config.data_dir, config.test_filename)
    save = check_save_dir(Path(config.save_dir) if config.save_dir else default_save_dir(student, save_suffix),
                          [r for r in (teacher, student) if r is not None])
    unlabeled = unlabeled_paths(config.data_dir, config.unlabeled_filename)
    settings = SequenceSettings.of(student, config.max_seq_len, config.doc_stride, config.max_query_length)
    return StageInputs(train_path, dev, test, save, settings, unlabeled)


def check_reader_vocab(reader: Any, role: str) -> None:
    """The reader's tokenizer emits only ids its embedding matrix has (both sizes named otherwise)."""
    check_vocab_fits(reader.inferencer.processor.tokenizer, reader.inferencer.model.language_model.model, role)


def check_pair(teacher: Any, student: Any, max_seq_len: int) -> None:
    """Tokenizers identical and the teacher able to read ``max_seq_len`` positions; no forward pass."""
    if teacher is None:
        raise ValueError("teacher_model is required: pass a FARMReader holding the fine-tuned teacher.")
    check_tokenizer_compatibility(teacher.inferencer.processor.tokenizer, student.inferencer.processor.tokenizer)
    for role, reader in (("teacher", teacher), ("student", student)):
        check_reader_vocab(reader, role)
        config = reader.inferencer.model.language_model.model.config
        limit = max_positions(config.to_dict())
        if limit is not None and limit < max_seq_len:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the {limit} positions the {role} can read "
                             f"(max_position_embeddings={config.max_position_embeddings}); pass max_seq_len={limit} "
                             "or less.")


def freeze_confidence_temperature(model: Any) -> None:
    """Keep the QA head's calibration scalar out of training (Haystack trains it by accident)."""
    for name, param in model.named_parameters():
        if name.endswith("temperature_for_confidence"):
            param.requires_grad_(False)


class ReaderStage:
    """One reader stage; :meth:`run` is the template, the other methods are what a stage may fill in."""

    name = ""  # the run record's ``stage`` and the checkpoint folder under ``checkpoint_root_dir``
    save_suffix = ""  # of the default save folder, ``./saved_models/<model name><suffix>``

    def __init__(self, student: Any, teacher: Optional[Any], config: ReaderStageConfig) -> None:
        self.student, self.teacher, self.config = student, teacher, config
        self.teacher_stats: Dict[str, Any] = {}  # filled by teacher_targets, e.g. teacher_rows (of this rank)

    def check(self, inputs: StageInputs) -> None:
        """Model checks (tokenizers, sizes), before any data work."""

    def teacher_targets(self, data: StageData, inputs: StageInputs, device: torch.device, scratch: Path) -> bool:
        """Add the teacher's targets to ``data.features``; True if a teacher pass ran (it is timed). Anything put
        in ``self.teacher_stats`` (e.g. ``teacher_rows``: rows this rank computed) joins the metrics."""
        return False

    def loss(self, inputs: StageInputs, device: torch.device) -> Loss:
        """The loss ``batch -> scalar``, on ``device``."""
        raise NotImplementedError

    def batching(self) -> Dict[str, Any]:
        """TrainConfig fields saying how batches are computed (:func:`..data.batching`)."""
        return batching(self.config.group_by_length)

    def run_fields(self, inputs: StageInputs, loss_fn: Loss) -> Dict[str, Any]:
        """The stage's settings that identify the run (resume checks) beyond the training loop's."""
        return {}

    def extra_modules(self, loss_fn: Loss) -> Optional[nn.Module]:
        """Trained modules besides the student (optimizer, checkpoints), e.g. projections."""
        return None

    def extra_metrics(self, loss_fn: Loss) -> Dict[str, Any]:
        """Metrics besides loss, steps and timings."""
        return {}

    def save_extra(self, loss_fn: Loss) -> Optional[Callable[[Path], None]]:
        """Writes more files into the save folder, or None."""
        return None

    def train_config(self, inputs: StageInputs, data: StageData, device: torch.device, loss_fn: Loss) -> TrainConfig:
        """The training loop's settings and run identity."""
        c = self.config
        config = TrainConfig(
            n_epochs=c.n_epochs, batch_size=c.batch_size, learning_rate=c.learning_rate,
            warmup_proportion=c.warmup_proportion, grad_acc_steps=c.grad_acc_steps, seed=c.seed, use_amp=c.use_amp,
            device=str(device), evaluate_every=c.evaluate_every if data.dev else 0,
            checkpoint_dir=str(Path(c.checkpoint_root_dir) / self.name), checkpoint_every=c.checkpoint_every,
            checkpoints_to_keep=c.checkpoints_to_keep, resume=c.resume, show_progress=c.show_progress,
            **self.batching())
        config.run_fields = {**config_fields(config), "stage": self.name, **self.run_fields(inputs, loss_fn),
                             **self.model_fields(),
                             "train_file": fingerprint_file(inputs.train),  # its content: an edited file differs
                             "n_features": len(data.features["input_ids"])}
        if inputs.unlabeled:  # recorded only by runs that have unlabelled data
            config.run_fields.update(unlabeled_file=unlabeled_fingerprint(inputs.unlabeled), **data.counts())
        return config

    def model_fields(self) -> Dict[str, Any]:
        """The teacher's and the student's starting weights, so a checkpoint resumes only the run that wrote it."""
        fields = {"student_weights": fingerprint_module(self.student.inferencer.model, exclude=UNUSED_WEIGHTS)}
        if self.teacher is not None:
            fields["teacher_weights"] = teacher_fingerprint(self.teacher)
        return fields

    def run(self) -> Dict[str, Any]:
        """Validate, inputs, data, teacher targets, loss, train, finish; returns the metrics."""
        config = self.config.validate()
        ensure_distributed()
        inputs = stage_inputs(self.student, self.teacher, config, self.save_suffix)
        self.check(inputs)
        device = resolve_device(config.devices[0] if config.devices else None, use_gpu=config.use_gpu)
        data = training_data(self.student, inputs, config)
        logger.info("%s: %d training features (%d unlabelled) from %d paragraphs", self.name,
                    len(data.features["input_ids"]), data.counts()["unlabeled_features"], len(data.train))
        timings: Dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="teacher-cache-") as scratch:
            started = time.perf_counter()
            if self.teacher_targets(data, inputs, device, Path(scratch)):
                timings["teacher_seconds"] = time.perf_counter() - started
            loss_fn = self.loss(inputs, device)
            train_config = self.train_config(inputs, data, device, loss_fn)
            result = self._train(data, loss_fn, train_config, device, timings)
        metrics = {"loss": result.loss, "global_step": result.global_step, "stopped_early": result.stopped_early,
                   **data.counts(), **timings, **self.teacher_stats, **self.extra_metrics(loss_fn)}
        record = {"stage": self.name, "world_size": world()[1],
                  **{k: str(v) for k, v in train_config.run_fields.items()},
                  **run_sources(self.student, self.teacher, inputs)}
        return finish(self.student, inputs, data, metrics, record, self.save_extra(loss_fn))

    def _train(self, data: StageData, loss_fn: Loss, config: TrainConfig, device: torch.device,
               timings: Dict[str, float]) -> TrainResult:
        model = self.student.inferencer.model.to(device)
        freeze_confidence_temperature(model)
        started = time.perf_counter()
        result = train(model, data.features, loss_fn, config, extra_modules=self.extra_modules(loss_fn),
                       eval_fn=make_eval_fn(self.student, data.dev), early_stopping=self.config.early_stopping)
        timings["train_seconds"] = time.perf_counter() - started
        return result
