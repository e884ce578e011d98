"""Haystack 1.x adapter: distil the sentence-transformers model held by an ``EmbeddingRetriever``.

The only module of :mod:`haystack_distill.embeddings` that imports Haystack. Usage mirrors
``FARMReader.distil_prediction_layer_from(teacher_model, ...)``: the student is the retriever itself.

Example (student keeps 3 of the teacher's layers; re-embed the documents afterwards)::

    retriever = DistillableEmbeddingRetriever(embedding_model=teacher_path, use_gpu=False)
    retriever.truncate_layers(3)
    retriever.distil_embeddings_from(teacher_path, sentences, dev_sts=read_sts("sts-dev.csv"))
    retriever.save("student")                          # a normal sentence-transformers folder
    document_store.update_embeddings(retriever)       # stored vectors came from the old model
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Sequence, Union

from haystack.nodes import EmbeddingRetriever
from sentence_transformers import SentenceTransformer

from haystack_distill.embeddings.distil import distil_embeddings_from
from haystack_distill.embeddings.model_io import load_sentence_transformer
from haystack_distill.embeddings.truncate import Keep, truncate_layers

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Teacher = Union[EmbeddingRetriever, SentenceTransformer, PathLike]


def retriever_model(retriever: EmbeddingRetriever) -> SentenceTransformer:
    """The SentenceTransformer inside ``retriever``; TypeError naming the format if it holds another kind of model."""
    encoder = getattr(retriever, "embedding_encoder", None)
    model = getattr(encoder, "embedding_model", None)
    model_format = getattr(retriever, "model_format", None)
    if model_format != "sentence_transformers" or not isinstance(model, SentenceTransformer):
        raise TypeError(
            f"{type(retriever).__name__} uses model_format={model_format!r} ({type(encoder).__name__}); "
            "only sentence-transformers retrievers can be distilled here. Save the model as a sentence-transformers "
            "folder (with config_sentence_transformers.json) or pass model_format='sentence_transformers'."
        )
    return model


def _teacher_model(teacher: Teacher) -> SentenceTransformer:
    if isinstance(teacher, EmbeddingRetriever):
        return retriever_model(teacher)
    if isinstance(teacher, SentenceTransformer):
        return teacher
    return load_sentence_transformer(teacher)


def _warn_stale_store(retriever: EmbeddingRetriever) -> None:
    if getattr(retriever, "document_store", None) is not None:
        logger.warning("the retriever's model changed: documents already in %s were embedded by the old model; "
                       "run document_store.update_embeddings(retriever)", type(retriever.document_store).__name__)


def distil_retriever_from(
    student: EmbeddingRetriever, teacher_model: Teacher, sentences: Sequence[str], **kwargs: Any
) -> Dict[str, Any]:
    """Distil ``teacher_model`` (retriever, SentenceTransformer or folder) into ``student``'s model, in place.

    Keyword arguments are those of :func:`haystack_distill.embeddings.distil.distil_embeddings_from`.
    Returns its metrics.
    """
    metrics = distil_embeddings_from(retriever_model(student), _teacher_model(teacher_model), sentences, **kwargs)
    _warn_stale_store(student)
    return metrics


def truncate_retriever_layers(retriever: EmbeddingRetriever, keep: Keep) -> EmbeddingRetriever:
    """Replace the retriever's model by a copy keeping only ``keep`` layers (indices or an evenly spread count)."""
    retriever.embedding_encoder.embedding_model = truncate_layers(retriever_model(retriever), keep)
    _warn_stale_store(retriever)
    return retriever


class EmbeddingRetrieverDistillationMixin:
    """Adds ``truncate_layers`` and ``distil_embeddings_from`` to an ``EmbeddingRetriever`` subclass."""

    def truncate_layers(self, keep: Keep) -> None:
        """Keep only some transformer layers of this retriever's model (see :func:`truncate_layers`)."""
        truncate_retriever_layers(self, keep)

    def distil_embeddings_from(self, teacher_model: Teacher, sentences: Sequence[str], **kwargs: Any) -> Dict[str, Any]:
        """Train this retriever's model to reproduce ``teacher_model``'s embeddings of ``sentences``."""
        return distil_retriever_from(self, teacher_model, sentences, **kwargs)


class DistillableEmbeddingRetriever(EmbeddingRetrieverDistillationMixin, EmbeddingRetriever):
    """A Haystack 1.x ``EmbeddingRetriever`` that can be layer-truncated and distilled in place."""
