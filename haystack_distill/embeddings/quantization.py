"""Dynamic int8 quantization of a SentenceTransformer's Linear layers, for CPU inference.

Weights of every ``nn.Linear`` become int8 with one scale per output channel (per-tensor on request);
activations are quantized on the fly. Per-channel scales are the default because they keep more STS-B
accuracy than one scale per tensor (see benchmarks/results/embeddings.md).

Saving: a quantized model is stored as its float32 folder plus ``haystack_distill_quantization.json``;
:func:`haystack_distill.embeddings.model_io.load_sentence_transformer` re-applies the (deterministic)
quantization on load, so the reloaded model gives the same embeddings, and the folder still loads as a
plain float32 model in any sentence-transformers install. The disk size is therefore that of the float32
model; the int8 size in memory is what :func:`haystack_distill.embeddings.measure.model_size_mb` reports.

Limits: torch 2.13 warns that eager-mode dynamic quantization and quantized tensors are deprecated in
favour of torchao (not a dependency here); they work in the pinned torch. ONNX export is not offered:
sentence-transformers 3.0 has no ONNX backend and neither ``onnx`` nor ``onnxruntime`` is installed here.

Example:
    >>> import torch
    >>> q = quantize_module(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    >>> type(q[0]).__name__
    'Linear'
    >>> is_quantized(q)
    True
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from haystack_distill.embeddings.int8 import (  # noqa: F401 (re-exported)
    QUANTIZATION_FILE,
    QUANTIZATION_SPEC,
    SCHEMES,
    apply_saved_quantization,
    is_quantized,
    quantize_module,
)
from haystack_distill.embeddings.model_io import save_sentence_transformer

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def quantize(
    model: SentenceTransformer,
    output_dir: Optional[PathLike] = None,
    overwrite: bool = False,
    scheme: str = "per_channel",
) -> SentenceTransformer:
    """A dynamically int8-quantized copy of ``model`` for CPU inference; ``model`` is left untouched.

    Args:
        model: a float SentenceTransformer (on any device; the copy lives on the CPU).
        output_dir: if given, save so that ``load_sentence_transformer(output_dir)`` returns the quantized
            model (see the module docstring for the format). An existing folder is refused unless ``overwrite``.
        scheme: ``"per_channel"`` (default) or ``"per_tensor"`` weight scales.

    Example:
        >>> fast = quantize(model, "minilm-int8")  # doctest: +SKIP
        >>> reloaded = load_sentence_transformer("minilm-int8")  # doctest: +SKIP
    """
    if is_quantized(model):
        raise ValueError("the model is already quantized; pass the float model (quantizing twice is not supported).")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}: use one of {', '.join(SCHEMES)}.")
    if output_dir is not None:
        spec = {**QUANTIZATION_SPEC, "scheme": scheme, "torch": torch.__version__}
        save_sentence_transformer(model, output_dir, overwrite=overwrite, extra_json={QUANTIZATION_FILE: spec})
    quantized = quantize_module(model, scheme=scheme)
    logger.info("quantized %d Linear layers to int8", sum(isinstance(m, nn.Linear) for m in model.modules()))
    return quantized
