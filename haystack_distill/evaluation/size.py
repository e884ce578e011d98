"""Model size: parameter count and bytes of a torch module, a weights file or a saved model folder. No Haystack
import.

:attr:`ModelSize.mb` is bytes / 2**20, what the reader and classification tables call MB; the embedding tables
count 10**6 bytes (:func:`haystack_distill.embeddings.measure.model_size_mb`).

Example:
    >>> import torch
    >>> size = model_size(torch.nn.Linear(256, 256))  # serialized: the float32 values plus pickle overhead
    >>> size.parameters, round(size.mb, 3)
    (65792, 0.253)
    >>> round(model_size(torch.nn.Linear(256, 256), serialized=False).mb, 3)  # the parameter tensors only
    0.251
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

#: Weights files that copy another one in the same folder (a plain transformers copy beside Haystack's).
DUPLICATE_WEIGHTS = {"model.safetensors": "language_model.bin"}


@dataclass(frozen=True)
class ModelSize:
    """A parameter count (None for a file or folder that does not list its tensors) and a size in bytes."""

    parameters: Optional[int]
    nbytes: int

    @property
    def mb(self) -> float:
        """The size in MB of 2**20 bytes."""
        return self.nbytes / 2**20

    def as_row(self) -> Dict[str, Optional[float]]:
        """``{"parameters": ..., "mb": ...}``, the size columns of a benchmark row."""
        return {"parameters": self.parameters, "mb": self.mb}


def model_size(source: Union[nn.Module, str, os.PathLike], serialized: bool = True) -> ModelSize:
    """Size of a module, a weights file or a saved model folder.

    A module counts its parameters plus the packed weights of torch's dynamic int8 ``Linear`` layers (which are
    not parameters); its bytes are those of ``torch.save(state_dict)`` if ``serialized``, else those of its
    parameter tensors. A file is its size on disk; an ``.onnx`` file counts its initializers' elements as
    parameters. A folder is every file in it, a duplicate weights copy (:data:`DUPLICATE_WEIGHTS`) counted once.
    """
    if isinstance(source, nn.Module):
        return _module_size(source, serialized)
    path = Path(source)
    if path.is_dir():
        return ModelSize(None, _folder_bytes(path))
    return ModelSize(_onnx_parameters(path) if path.suffix == ".onnx" else None, path.stat().st_size)


def _module_size(module: nn.Module, serialized: bool) -> ModelSize:
    params = sum(p.numel() for p in module.parameters())
    for layer in module.modules():
        if isinstance(layer, torch.ao.nn.quantized.dynamic.Linear):  # weight() and bias() are not parameters
            params += layer.weight().numel() + (layer.bias().numel() if layer.bias() is not None else 0)
    if not serialized:
        return ModelSize(params, sum(p.numel() * p.element_size() for p in module.parameters()))
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return ModelSize(params, buffer.getbuffer().nbytes)


def _folder_bytes(folder: Path) -> int:
    files = [f for f in folder.rglob("*") if f.is_file()]
    skip = {folder / copy for copy, original in DUPLICATE_WEIGHTS.items() if (folder / original).is_file()}
    return sum(f.stat().st_size for f in files if f not in skip)


def _onnx_parameters(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(int(torch.Size(t.dims).numel()) for t in graph.initializer)
