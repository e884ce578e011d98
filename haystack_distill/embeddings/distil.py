"""Embedding distillation: a student SentenceTransformer learns to reproduce a teacher's sentence embeddings.

The recipe of sentence-transformers' ``model_distillation*.py`` (Reimers & Gurevych): teacher embeddings of
unlabeled sentences are computed once (cached on disk, float16, see :mod:`.cache`), then the student
regresses them with MSE (or 1 - cosine). Only raw text reaches the teacher, so student and teacher may use
different tokenizers. When the student is narrower than the teacher, PCA fit on the teacher embeddings
projects the teacher down to the student's width (sentence-transformers appends this projection to the
teacher as a bias-free Dense layer); the student then learns the teacher's PCA space.

Training runs in :func:`haystack_distill.training.train` (resume from checkpoints, gradient accumulation, AMP,
DistributedDataParallel under torchrun); settings are one :class:`EmbeddingDistillationConfig`.

Example:
    >>> EmbeddingDistillationConfig(epochs=2, loss="cosine").validate().loss
    'cosine'
    >>> student = truncate_layers(teacher, 3)  # doctest: +SKIP
    >>> metrics = distil_embeddings_from(student, teacher, read_sentences("sentences.txt"),  # doctest: +SKIP
    ...                                  dev_sts=read_sts("sts-dev.csv"), output_dir="student")
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from haystack_distill.embeddings.cache import teacher_embeddings
from haystack_distill.embeddings.model_io import check_embeddings_output, model_source
from haystack_distill.embeddings.pca import check_pca_dim, dense_projection, fit_pca
from haystack_distill.embeddings.sentences import check_sentences
from haystack_distill.embeddings.sts import StsPair, evaluate_sts
from haystack_distill.fingerprint import fingerprint_module
from haystack_distill.losses import LOSSES, embedding_mse
from haystack_distill.training import TrainConfig, TrainResult, config_fields, train

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
EMBEDDING_LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = LOSSES["embedding"]  # the shared registry


@dataclass
class EmbeddingDistillationConfig:
    """Settings of :func:`distil_embeddings_from` (its keyword arguments override them one by one).

    Attributes:
        loss: ``"mse"`` (sentence-transformers' MSELoss) or ``"cosine"`` (mean 1 - cosine).
        dev_sts: STS pairs scored after every ``evaluation_steps`` steps, every epoch and before training; the
            best weights by Spearman are kept. Without it, ``dev_sentences`` (MSE to the teacher) decides.
        cache_dir: teacher-embedding cache folder (default ``~/.cache/haystack_distill/teacher_embeddings``).
        pca_sample_size: at most this many teacher embeddings fit the PCA projection.
        freeze_word_embeddings: keep the student's token-embedding matrix fixed during training (on a CPU this
            saves most of the optimizer time of small students, whose parameters are mostly that matrix).
        output_dir: save the trained student there (atomically; an existing folder needs ``overwrite``),
            with ``distillation_metrics.json``.
        grad_acc_steps, use_amp, amp_dtype, checkpoint_dir, checkpoint_every, resume: as in
            :class:`haystack_distill.training.TrainConfig`.
    """

    loss: str = "mse"
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dev_sts: Optional[Sequence[StsPair]] = None
    dev_sentences: Optional[Sequence[str]] = None
    evaluation_steps: int = 0
    cache_dir: Optional[PathLike] = None
    use_cache: bool = True
    teacher_batch_size: int = 128
    pca_sample_size: int = 20000
    freeze_word_embeddings: bool = False
    output_dir: Optional[PathLike] = None
    overwrite: bool = False
    seed: int = 42
    show_progress_bar: bool = True
    grad_acc_steps: int = 1
    use_amp: bool = False
    amp_dtype: Literal["fp16", "bf16"] = "fp16"
    checkpoint_dir: Optional[PathLike] = None
    checkpoint_every: Optional[int] = None
    resume: Union[bool, str] = False

    def validate(self) -> EmbeddingDistillationConfig:
        """Raise ``ValueError`` for settings that cannot train; return ``self``."""
        if self.loss not in EMBEDDING_LOSSES:
            raise ValueError(f"loss={self.loss!r} is not supported; use one of {', '.join(EMBEDDING_LOSSES)}.")
        if self.epochs < 1 or self.batch_size < 1 or self.evaluation_steps < 0 or self.grad_acc_steps < 1:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, evaluation_steps >= 0, grad_acc_steps >= 1; got "
                             f"{self.epochs}, {self.batch_size}, {self.evaluation_steps}, {self.grad_acc_steps}.")
        if not self.learning_rate > 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"need learning_rate > 0 and 0 <= warmup_ratio < 1; got {self.learning_rate}, "
                             f"{self.warmup_ratio}.")
        return self

    def train_config(self, device: str, run_fields: Dict[str, Any]) -> TrainConfig:
        """The loop's settings: evaluation before training, every ``evaluation_steps`` and every epoch."""
        config = TrainConfig(
            n_epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            warmup_proportion=self.warmup_ratio, grad_acc_steps=self.grad_acc_steps, max_grad_norm=self.max_grad_norm,
            weight_decay=self.weight_decay, seed=self.seed, use_amp=self.use_amp, amp_dtype=self.amp_dtype,
            device=device, evaluate_every=self.evaluation_steps, evaluate_at_start=True, evaluate_every_epoch=True,
            keep_best=True, checkpoint_dir=None if self.checkpoint_dir is None else str(self.checkpoint_dir),
            checkpoint_every=self.checkpoint_every, resume=self.resume, show_progress=self.show_progress_bar)
        config.run_fields = {**run_fields, **config_fields(config)}
        return config


def _as_model(model: Union[SentenceTransformer, PathLike], role: str) -> SentenceTransformer:
    if isinstance(model, (str, os.PathLike)):
        from haystack_distill.embeddings.model_io import load_sentence_transformer

        logger.info("loading %s from %s", role, model)
        return load_sentence_transformer(model)
    return model


def _check_models(student: SentenceTransformer, teacher: SentenceTransformer, n_pca: int) -> None:
    from haystack_distill.embeddings.quantization import is_quantized

    if student is teacher:
        raise ValueError("student and teacher are the same object; distil into a copy, e.g. "
                         "truncate_layers(teacher, 3).")
    if is_quantized(student):
        raise ValueError("the student is int8-quantized and cannot be trained; distil first, then quantize().")
    d_student, d_teacher = student.get_sentence_embedding_dimension(), teacher.get_sentence_embedding_dimension()
    if d_student > d_teacher:
        raise ValueError(f"the student's embeddings ({d_student}) are wider than the teacher's ({d_teacher}); PCA can "
                         "only shrink the teacher. Append a Dense layer to the student, e.g. with reduce_dimensions().")
    if d_student < d_teacher:
        check_pca_dim(d_student, d_teacher, n_pca)


@contextlib.contextmanager
def _frozen_word_embeddings(student: SentenceTransformer, freeze: bool) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on the student's input token embeddings."""
    embeddings = None
    if freeze:
        auto_model = getattr(student._first_module(), "auto_model", None)
        if auto_model is None:
            raise ValueError("freeze_word_embeddings needs a transformer student (its first module has no auto_model).")
        embeddings = auto_model.get_input_embeddings()
    previous = embeddings.weight.requires_grad if embeddings is not None else None
    if embeddings is not None:
        embeddings.weight.requires_grad_(False)
    try:
        yield
    finally:
        if embeddings is not None:
            embeddings.weight.requires_grad_(previous)


class _Targets:
    """Teacher embeddings (float16, possibly memory-mapped), projected to the student's width if needed."""

    def __init__(self, embeddings: np.ndarray, projection: Optional[np.ndarray]) -> None:
        self.embeddings = embeddings
        self.projection = None if projection is None else torch.as_tensor(projection, dtype=torch.float32)

    def __getitem__(self, index: np.ndarray) -> Tensor:
        batch = torch.from_numpy(np.asarray(self.embeddings[index], dtype=np.float32))
        return batch if self.projection is None else batch @ self.projection.T


def _fit_teacher_projection(embeddings: np.ndarray, dim: int, sample_size: int, seed: int) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = embeddings.shape[0]
    rows = np.sort(rng.choice(n, size=min(n, sample_size), replace=False))
    pca = fit_pca(np.asarray(embeddings[rows], dtype=np.float32), dim)
    info: Dict[str, Any] = {"method": "pca", "from": int(embeddings.shape[1]), "to": dim, "fit_on": len(rows),
            "explained_variance": float(pca.explained_variance_ratio.sum())}
    logger.info("teacher projected %d -> %d by PCA on %d embeddings (%.1f%% variance kept)", info["from"], dim,
                len(rows), 100 * info["explained_variance"])
    return {"components": pca.components.astype(np.float32), "info": info}


class _DevEvaluator:
    """An :class:`~haystack_distill.training.Evaluator` on dev STS pairs (Spearman, higher is better) or dev
    sentences (MSE to the teacher, lower is better)."""

    def __init__(self, dev_sts: Optional[List[StsPair]], dev_targets: Optional[Tensor],
                 dev_sentences: Optional[List[str]], batch_size: int) -> None:
        self.dev_sts, self.dev_targets, self.dev_sentences = dev_sts, dev_targets, dev_sentences
        self.batch_size = batch_size
        self.primary_metric = "sts_spearman" if dev_sts else "mse"
        self.greater_is_better = bool(dev_sts)

    @property
    def active(self) -> bool:
        return bool(self.dev_sts or self.dev_sentences)

    def __call__(self, model: Any) -> Dict[str, float]:
        model.eval()
        result: Dict[str, float] = {}
        if self.dev_sts:
            result["sts_spearman"] = evaluate_sts(model, self.dev_sts, batch_size=self.batch_size)
        if self.dev_sentences and self.dev_targets is not None:
            emb = model.encode(self.dev_sentences, batch_size=self.batch_size, convert_to_tensor=True).cpu().float()
            result["mse"] = float(embedding_mse(emb, self.dev_targets))
        model.train()
        return result


def _check_inputs(student: Any, teacher: Any, sentences: Sequence[str],
                  config: EmbeddingDistillationConfig) -> Tuple[List[str], EmbeddingDistillationConfig]:
    """Validate everything that needs no model; return (sentences, config with checked dev data)."""
    config.validate()
    sentences = check_sentences(sentences)
    dev_sentences = (check_sentences(config.dev_sentences, "dev_sentences")
                     if config.dev_sentences is not None else None)
    dev_sts = [StsPair(*p) for p in config.dev_sts] if config.dev_sts is not None else None
    if dev_sts is not None and len(dev_sts) < 2:
        raise ValueError(f"dev_sts needs at least 2 pairs, got {len(dev_sts)}.")
    if config.output_dir is not None:
        inputs = [m if isinstance(m, (str, os.PathLike)) else model_source(m) for m in (student, teacher)]
        check_embeddings_output(config.output_dir, config.overwrite, inputs)
    elif isinstance(student, (str, os.PathLike)):
        raise ValueError(f"student is a path ({student}); pass output_dir too, or the trained student would be lost.")
    return sentences, dataclasses.replace(config, dev_sts=dev_sts, dev_sentences=dev_sentences)


def distil_embeddings_from(
    student: Union[SentenceTransformer, PathLike],
    teacher: Union[SentenceTransformer, PathLike],
    sentences: Sequence[str],
    config: Optional[EmbeddingDistillationConfig] = None,
    **overrides: Any,
) -> Dict[str, Any]:
    """Train ``student`` in place to reproduce ``teacher``'s embeddings of ``sentences``; return metrics.

    Args:
        student: SentenceTransformer (or folder) to train, e.g. ``truncate_layers(teacher, 3)``; any tokenizer,
            width at most the teacher's (narrower: the teacher is PCA-projected to its width).
        teacher: SentenceTransformer (or folder); its embeddings are cached under ``config.cache_dir``.
        sentences: unlabeled training sentences.
        config: an :class:`EmbeddingDistillationConfig`; ``overrides`` (e.g. ``epochs=2``) replace its fields.

    Returns:
        dict with ``steps``, ``epoch_losses``, ``dev`` history, ``best`` dev result, ``teacher_dev``,
        ``teacher_projection`` (or None), ``cache`` info and ``seconds``.
    """
    start = time.perf_counter()
    config = dataclasses.replace(config or EmbeddingDistillationConfig(), **overrides)
    sentences, config = _check_inputs(student, teacher, sentences, config)
    student, teacher = _as_model(student, "student"), _as_model(teacher, "teacher")
    _check_models(student, teacher, min(len(sentences), config.pca_sample_size))
    embeddings, cache_info = teacher_embeddings(teacher, sentences, config.cache_dir, config.teacher_batch_size,
                                                config.show_progress_bar, config.use_cache)
    projection = None
    if student.get_sentence_embedding_dimension() < embeddings.shape[1]:
        projection = _fit_teacher_projection(embeddings, student.get_sentence_embedding_dimension(),
                                             config.pca_sample_size, config.seed)
    components = None if projection is None else projection["components"]
    evaluator, teacher_dev = _dev_setup(teacher, config, components)
    result = _train(student, sentences, _Targets(embeddings, components), evaluator, config, cache_info)
    metrics = {
        "sentences": len(sentences), "loss": config.loss, "epochs": config.epochs, "steps": result.global_step,
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
        "freeze_word_embeddings": config.freeze_word_embeddings, "epoch_losses": result.epoch_losses,
        "dev_metric": evaluator.primary_metric if evaluator.active else None, "dev": result.history,
        "best": result.best, "teacher_dev": teacher_dev,
        "teacher_projection": None if projection is None else projection["info"],
        "cache": {k: cache_info[k] for k in ("hit", "path", "teacher", "sentences", "count")},
        "seconds": round(time.perf_counter() - start, 1),
    }
    if config.output_dir is not None:
        from haystack_distill.embeddings.model_io import save_sentence_transformer

        save_sentence_transformer(student, config.output_dir, config.overwrite,
                                  extra_json={"distillation_metrics.json": metrics}, inputs=[model_source(teacher)])
    return metrics


def _dev_setup(teacher: SentenceTransformer, config: EmbeddingDistillationConfig,
               components: Optional[np.ndarray]) -> Tuple[_DevEvaluator, Optional[Dict[str, float]]]:
    """Build the dev evaluator and score the (projected) teacher on the same dev data."""
    from sentence_transformers import SentenceTransformer

    dev_sts = list(config.dev_sts) if config.dev_sts else None
    dev_sentences = list(config.dev_sentences) if config.dev_sentences else None
    batch_size = config.teacher_batch_size
    dev_targets = None
    if dev_sentences:
        emb, _ = teacher_embeddings(teacher, dev_sentences, config.cache_dir, batch_size, False, config.use_cache)
        dev_targets = _Targets(emb, components)[np.arange(len(dev_sentences))]
    teacher_dev = None
    if dev_sts:
        scored = teacher if components is None else SentenceTransformer(
            modules=[*teacher, dense_projection(components)], device=str(teacher.device))
        teacher_dev = {"sts_spearman": evaluate_sts(scored, dev_sts, batch_size=batch_size)}
        logger.info("teacher%s dev STS Spearman %.4f", "" if components is None else " (PCA-projected)",
                    teacher_dev["sts_spearman"])
    return _DevEvaluator(dev_sts, dev_targets, dev_sentences, batch_size), teacher_dev


def _train(student: SentenceTransformer, sentences: List[str], targets: _Targets, evaluator: _DevEvaluator,
           config: EmbeddingDistillationConfig, cache_info: Dict[str, Any]) -> TrainResult:
    """Run :func:`haystack_distill.training.train` on row indices; the loss tokenizes and encodes each batch."""
    loss_of = EMBEDDING_LOSSES[config.loss]
    device = student.device

    def loss_fn(batch: Dict[str, Tensor]) -> Tensor:
        index = batch["row"].cpu().numpy()
        features = {k: v.to(device) for k, v in student.tokenize([sentences[i] for i in index]).items()}
        return loss_of(student(features)["sentence_embedding"], targets[index].to(device))

    run_fields = {"stage": "embedding-distillation", "teacher": cache_info["teacher"],
                  "student_weights": fingerprint_module(student, exclude=("pooler.",)),  # its start; unused pooler
                  "sentences": cache_info["sentences"], "loss": config.loss,
                  "freeze_word_embeddings": config.freeze_word_embeddings}
    train_config = config.train_config(str(device), run_fields)
    with torch.random.fork_rng(devices=[]), _frozen_word_embeddings(student, config.freeze_word_embeddings):
        return train(student, {"row": torch.arange(len(sentences))}, loss_fn, train_config,
                     evaluator=evaluator if evaluator.active else None)
