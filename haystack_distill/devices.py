"""Where training and teacher passes run: the one device rule of the package."""

from __future__ import annotations

import os
from typing import Any, Optional

import torch


def resolve_device(device: Optional[Any] = None, use_gpu: Optional[bool] = None) -> torch.device:
    """CPU when ``use_gpu`` is False; else ``device`` if given; else CUDA when present (``cuda:LOCAL_RANK`` under
    torchrun); else CPU.

    Example:
        >>> resolve_device("cpu"), resolve_device("cuda:1", use_gpu=False)
        (device(type='cpu'), device(type='cpu'))
    """
    if use_gpu is False:
        return torch.device("cpu")
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")
