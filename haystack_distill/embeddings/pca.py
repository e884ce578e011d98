"""PCA heads: fewer dimensions per stored vector, as a bias-free Dense layer appended to the model.

Like sentence-transformers' ``dimensionality_reduction.py``, the Dense weight is the matrix of the top
principal components and there is no bias (the mean is not subtracted), so the head is a plain rotation
+ truncation of the embedding space.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 4)) * [5.0, 1.0, 0.1, 0.01]
    >>> pca = fit_pca(x, 2)
    >>> pca.components.shape, bool(pca.explained_variance_ratio.sum() > 0.99)
    ((2, 4), True)
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from haystack_distill.embeddings.sentences import check_sentences

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


@dataclass
class PCAResult:
    """Top principal ``components`` (``[dim, d]``, unit rows), data ``mean`` and ``explained_variance_ratio``."""

    components: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray


def check_pca_dim(dim: int, embedding_dim: int, n_samples: int) -> None:
    """Raise a ValueError unless ``1 <= dim <= min(embedding_dim, n_samples)``."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"PCA dim must be a positive integer, got {dim!r}.")
    if dim > embedding_dim:
        raise ValueError(f"PCA dim {dim} is larger than the embedding size {embedding_dim}; PCA can only reduce, "
                         f"choose dim <= {embedding_dim}.")
    if dim > n_samples:
        raise ValueError(f"PCA dim {dim} is larger than the number of sentences ({n_samples}); PCA needs at least "
                         f"as many samples as components (ideally many more): pass more sentences or a smaller dim.")


def fit_pca(embeddings: np.ndarray, dim: int) -> PCAResult:
    """Fit PCA by SVD of the centred ``[n, d]`` matrix (float64) and keep the top ``dim`` components."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a [n, d] matrix, got shape {x.shape}.")
    check_pca_dim(dim, x.shape[1], x.shape[0])
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = singular**2
    ratio = variance[:dim] / max(float(variance.sum()), np.finfo(np.float64).tiny)
    return PCAResult(components=vt[:dim].copy(), mean=mean, explained_variance_ratio=ratio)


def dense_projection(components: np.ndarray):
    """A sentence-transformers ``models.Dense`` (identity activation, no bias) whose weight is ``components``."""
    import torch
    from sentence_transformers import models

    out_dim, in_dim = components.shape
    dense = models.Dense(in_features=in_dim, out_features=out_dim, bias=False,
                         activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.as_tensor(components, dtype=torch.float32))
    return dense


def with_projection(model: SentenceTransformer, components: np.ndarray, normalize: bool) -> SentenceTransformer:
    """A new SentenceTransformer: copies of ``model``'s modules, a Dense PCA head, and a Normalize if asked."""
    from sentence_transformers import SentenceTransformer, models

    modules = [copy.deepcopy(module) for module in model]
    if normalize and isinstance(modules[-1], models.Normalize):
        modules.pop()  # re-added after the head
    modules.append(dense_projection(components))
    if normalize:
        modules.append(models.Normalize())
    return SentenceTransformer(modules=modules, device=str(model.device))


def reduce_dimensions(
    model: SentenceTransformer,
    sentences: Sequence[str],
    dim: int,
    normalize: bool | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> SentenceTransformer:
    """A copy of ``model`` whose embeddings have ``dim`` dimensions: PCA fit on ``sentences``, bias-free Dense head.

    Args:
        model: any SentenceTransformer; it is not modified.
        sentences: sample to fit PCA on (at least ``dim``; sentence-transformers used 20k).
        dim: output size, ``1 <= dim <= min(embedding size, len(sentences))``; checked before encoding.
        normalize: append ``Normalize`` after the head; default: if ``model`` ended with one, so that
            unit-length outputs stay unit-length (cosine scores are the same either way).

    Example:
        >>> small = reduce_dimensions(model, sentences, 128)  # doctest: +SKIP
        >>> small.get_sentence_embedding_dimension()  # doctest: +SKIP
        128
    """
    from sentence_transformers import models

    sentences = check_sentences(sentences)
    check_pca_dim(dim, model.get_sentence_embedding_dimension(), len(sentences))
    if normalize is None:
        normalize = isinstance(list(model)[-1], models.Normalize)
    embeddings = model.encode(sentences, batch_size=batch_size, show_progress_bar=show_progress_bar,
                              convert_to_numpy=True)
    pca = fit_pca(embeddings, dim)
    logger.info("PCA %d -> %d keeps %.1f%% of the variance", embeddings.shape[1], dim,
                100 * float(pca.explained_variance_ratio.sum()))
    return with_projection(model, pca.components, normalize)
