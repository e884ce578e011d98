"""Embedding distillation: a student SentenceTransformer learns to reproduce a teacher's sentence embeddings.

The recipe of sentence-transformers' ``model_distillation*.py`` (Reimers & Gurevych): teacher embeddings of
unlabeled sentences are computed once (cached on disk, float16, see :mod:`.cache`), then the student
regresses them with MSE (or 1 - cosine). Only raw text reaches the teacher, so student and teacher may use
different tokenizers. When the student is narrower than the teacher, PCA fit on the teacher embeddings
projects the teacher down to the student's width (sentence-transformers appends this projection to the
teacher as a bias-free Dense layer); the student then learns the teacher's PCA space.

Example:
    >>> # student = truncate_layers(teacher, 3)
    >>> # metrics = distil_embeddings_from(student, teacher, read_sentences("sentences.txt"),
    >>> #                                  dev_sts=read_sts("sts-dev.csv"), output_dir="student")
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from haystack_distill.embeddings.cache import teacher_embeddings
from haystack_distill.embeddings.model_io import check_embeddings_output, model_source
from haystack_distill.embeddings.pca import check_pca_dim, dense_projection, fit_pca
from haystack_distill.embeddings.sentences import check_sentences
from haystack_distill.embeddings.sts import StsPair, evaluate_sts
from haystack_distill.losses import LOSSES, embedding_mse
from haystack_distill.safety import check_finite_grad, check_finite_loss

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
EMBEDDING_LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = LOSSES["embedding"]  # the shared registry


def _as_model(model: Union[SentenceTransformer, PathLike], role: str) -> SentenceTransformer:
    if isinstance(model, (str, os.PathLike)):
        from haystack_distill.embeddings.model_io import load_sentence_transformer

        logger.info("loading %s from %s", role, model)
        return load_sentence_transformer(model)
    return model


def _check_settings(loss: str, epochs: int, batch_size: int, learning_rate: float, warmup_ratio: float,
                    evaluation_steps: int) -> None:
    if loss not in EMBEDDING_LOSSES:
        raise ValueError(f"loss={loss!r} is not supported; use one of {', '.join(EMBEDDING_LOSSES)}.")
    if epochs < 1 or batch_size < 1 or evaluation_steps < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, evaluation_steps >= 0; got {epochs}, {batch_size}, "
                         f"{evaluation_steps}.")
    if not learning_rate > 0 or not 0 <= warmup_ratio < 1:
        raise ValueError(f"need learning_rate > 0 and 0 <= warmup_ratio < 1; got {learning_rate}, {warmup_ratio}.")


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


def _optimizer(student: SentenceTransformer, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in student.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


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
    info = {"method": "pca", "from": int(embeddings.shape[1]), "to": dim, "fit_on": len(rows),
            "explained_variance": float(pca.explained_variance_ratio.sum())}
    logger.info("teacher projected %d -> %d by PCA on %d embeddings (%.1f%% variance kept)", info["from"], dim,
                len(rows), 100 * info["explained_variance"])
    return {"components": pca.components.astype(np.float32), "info": info}


class _DevEvaluator:
    """Scores the student on dev STS pairs (Spearman, higher is better) or dev sentences (MSE, lower is better)."""

    def __init__(self, dev_sts: Optional[List[StsPair]], dev_targets: Optional[Tensor],
                 dev_sentences: Optional[List[str]], batch_size: int) -> None:
        self.dev_sts, self.dev_targets, self.dev_sentences = dev_sts, dev_targets, dev_sentences
        self.batch_size = batch_size
        self.metric = "sts_spearman" if dev_sts else ("mse" if dev_sentences else None)

    def __call__(self, student: SentenceTransformer, step: int) -> Dict[str, float]:
        student.eval()
        result: Dict[str, float] = {"step": step}
        if self.dev_sts:
            result["sts_spearman"] = evaluate_sts(student, self.dev_sts, batch_size=self.batch_size)
        if self.dev_sentences:
            emb = student.encode(self.dev_sentences, batch_size=self.batch_size, convert_to_tensor=True).cpu().float()
            result["mse"] = float(embedding_mse(emb, self.dev_targets))
        student.train()
        logger.info("dev evaluation at step %d: %s", step, {k: round(v, 5) for k, v in result.items()})
        return result

    def better(self, new: Dict[str, float], best: Optional[Dict[str, float]]) -> bool:
        if best is None:
            return True
        if self.metric == "sts_spearman":
            return new[self.metric] > best[self.metric]
        return new[self.metric] < best[self.metric]


def distil_embeddings_from(
    student: Union[SentenceTransformer, PathLike],
    teacher: Union[SentenceTransformer, PathLike],
    sentences: Sequence[str],
    *,
    loss: str = "mse",
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    dev_sts: Optional[Sequence[StsPair]] = None,
    dev_sentences: Optional[Sequence[str]] = None,
    evaluation_steps: int = 0,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    teacher_batch_size: int = 128,
    pca_sample_size: int = 20000,
    freeze_word_embeddings: bool = False,
    output_dir: Optional[PathLike] = None,
    overwrite: bool = False,
    seed: int = 42,
    show_progress_bar: bool = True,
) -> Dict[str, Any]:
    """Train ``student`` in place to reproduce ``teacher``'s embeddings of ``sentences``; return metrics.

    Args:
        student: SentenceTransformer (or folder) to train, e.g. ``truncate_layers(teacher, 3)``; any tokenizer,
            width at most the teacher's (narrower: the teacher is PCA-projected to its width).
        teacher: SentenceTransformer (or folder); its embeddings are cached under ``cache_dir``.
        sentences: unlabeled training sentences.
        loss: ``"mse"`` (sentence-transformers' MSELoss) or ``"cosine"`` (mean 1 - cosine).
        dev_sts: STS pairs scored after every ``evaluation_steps`` steps (0: every epoch) and before training;
            the best checkpoint by Spearman is kept. Without it, ``dev_sentences`` (MSE to the teacher) decides.
        cache_dir: teacher-embedding cache folder (default ``~/.cache/haystack_distill/teacher_embeddings``).
        pca_sample_size: at most this many teacher embeddings fit the PCA projection.
        freeze_word_embeddings: keep the student's token-embedding matrix fixed during training (on a CPU this
            saves most of the optimizer time of small students, whose parameters are mostly that matrix).
        output_dir: save the trained student there (atomically; an existing folder needs ``overwrite``),
            with ``distillation_metrics.json``.

    Returns:
        dict with ``steps``, ``epoch_losses``, ``dev`` history, ``best`` dev result, ``teacher_dev``,
        ``teacher_projection`` (or None), ``cache`` info and ``seconds``.
    """
    start = time.perf_counter()
    _check_settings(loss, epochs, batch_size, learning_rate, warmup_ratio, evaluation_steps)
    sentences = check_sentences(sentences)
    dev_sentences = check_sentences(dev_sentences, "dev_sentences") if dev_sentences is not None else None
    dev_sts = [StsPair(*p) for p in dev_sts] if dev_sts is not None else None
    if dev_sts is not None and len(dev_sts) < 2:
        raise ValueError(f"dev_sts needs at least 2 pairs, got {len(dev_sts)}.")
    if output_dir is not None:
        check_embeddings_output(output_dir, overwrite, [m if isinstance(m, (str, os.PathLike)) else model_source(m)
                                                         for m in (student, teacher)])
    elif isinstance(student, (str, os.PathLike)):
        raise ValueError(f"student is a path ({student}); pass output_dir too, or the trained student would be lost.")
    student, teacher = _as_model(student, "student"), _as_model(teacher, "teacher")
    _check_models(student, teacher, min(len(sentences), pca_sample_size))

    embeddings, cache_info = teacher_embeddings(teacher, sentences, cache_dir, teacher_batch_size,
                                                show_progress_bar, use_cache)
    d_student = student.get_sentence_embedding_dimension()
    projection = None
    if d_student < embeddings.shape[1]:
        projection = _fit_teacher_projection(embeddings, d_student, pca_sample_size, seed)
    components = None if projection is None else projection["components"]
    targets = _Targets(embeddings, components)
    evaluator, teacher_dev = _dev_setup(teacher, dev_sts, dev_sentences, components, cache_dir, teacher_batch_size,
                                        use_cache)

    with _frozen_word_embeddings(student, freeze_word_embeddings):
        history, best, steps, epoch_losses = _train(
            student, sentences, targets, EMBEDDING_LOSSES[loss], evaluator,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_ratio=warmup_ratio,
            weight_decay=weight_decay, max_grad_norm=max_grad_norm, evaluation_steps=evaluation_steps, seed=seed,
            show_progress_bar=show_progress_bar,
        )
    metrics = {
        "sentences": len(sentences), "loss": loss, "epochs": epochs, "steps": steps, "batch_size": batch_size,
        "learning_rate": learning_rate, "freeze_word_embeddings": freeze_word_embeddings,
        "epoch_losses": epoch_losses, "dev_metric": evaluator.metric,
        "dev": history, "best": best, "teacher_dev": teacher_dev,
        "teacher_projection": None if projection is None else projection["info"],
        "cache": {k: cache_info[k] for k in ("hit", "path", "teacher", "sentences", "count")},
        "seconds": round(time.perf_counter() - start, 1),
    }
    if output_dir is not None:
        from haystack_distill.embeddings.model_io import save_sentence_transformer

        save_sentence_transformer(student, output_dir, overwrite, extra_json={"distillation_metrics.json": metrics},
                                  inputs=[model_source(teacher)])
    return metrics


def _dev_setup(teacher: SentenceTransformer, dev_sts: Optional[List[StsPair]], dev_sentences: Optional[List[str]],
               components: Optional[np.ndarray], cache_dir: Optional[PathLike], batch_size: int,
               use_cache: bool) -> tuple:
    """Build the dev evaluator and score the (projected) teacher on the same dev data."""
    from sentence_transformers import SentenceTransformer

    dev_targets = None
    if dev_sentences:
        emb, _ = teacher_embeddings(teacher, dev_sentences, cache_dir, batch_size, False, use_cache)
        dev_targets = _Targets(emb, components)[np.arange(len(dev_sentences))]
    teacher_dev = None
    if dev_sts:
        scored = teacher if components is None else SentenceTransformer(
            modules=[*teacher, dense_projection(components)], device=str(teacher.device))
        teacher_dev = {"sts_spearman": evaluate_sts(scored, dev_sts, batch_size=batch_size)}
        logger.info("teacher%s dev STS Spearman %.4f", "" if components is None else " (PCA-projected)",
                    teacher_dev["sts_spearman"])
    return _DevEvaluator(dev_sts, dev_targets, dev_sentences, batch_size), teacher_dev


def _train(student: SentenceTransformer, sentences: List[str], targets: _Targets,
           loss_fn: Callable[[Tensor, Tensor], Tensor], evaluator: _DevEvaluator, *, epochs: int, batch_size: int,
           learning_rate: float, warmup_ratio: float, weight_decay: float, max_grad_norm: float,
           evaluation_steps: int, seed: int, show_progress_bar: bool) -> tuple:
    """The training loop; returns (dev history, best dev result, steps, mean loss per epoch)."""
    from transformers import get_linear_schedule_with_warmup

    device = student.device
    total = epochs * math.ceil(len(sentences) / batch_size)
    optimizer = _optimizer(student, learning_rate, weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total), total)
    history: List[Dict[str, float]] = []
    best: Optional[Dict[str, float]] = None
    best_state: Optional[Dict[str, Tensor]] = None

    def evaluate(step: int) -> None:
        nonlocal best, best_state
        if evaluator.metric is None or (history and history[-1]["step"] == step):
            return
        result = evaluator(student, step)
        history.append(result)
        if evaluator.better(result, best):
            best = result
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}

    epoch_losses: List[float] = []
    step, last_finite = 0, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        evaluate(0)
        student.train()
        with tqdm(total=total, desc="distil embeddings", disable=not show_progress_bar) as bar:
            for _ in range(epochs):
                losses = []
                for batch in torch.randperm(len(sentences), generator=generator).split(batch_size):
                    index = batch.numpy()
                    features = student.tokenize([sentences[i] for i in index])
                    features = {k: v.to(device) for k, v in features.items()}
                    loss = loss_fn(student(features)["sentence_embedding"], targets[index].to(device))
                    optimizer.zero_grad()
                    check_finite_loss(float(loss.detach()), step + 1, losses[-1] if losses else last_finite)
                    loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad],
                                                          max_grad_norm)
                    check_finite_grad(float(norm), step + 1, float(loss.detach()))
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    losses.append(loss.detach().item())
                    last_finite = losses[-1]
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3g}")
                    if evaluation_steps and step % evaluation_steps == 0:
                        evaluate(step)
                epoch_losses.append(float(np.mean(losses)))
                evaluate(step)
    if best_state is not None:
        student.load_state_dict(best_state)
        logger.info("kept the best checkpoint: step %d (%s=%.5f)", best["step"], evaluator.metric,
                    best[evaluator.metric])
    student.eval()
    return history, best, step, epoch_losses
