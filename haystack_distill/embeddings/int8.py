"""The int8 layer under :mod:`.quantization`: dynamic qint8 quantization of ``nn.Linear`` layers and the spec
saved beside a quantized model. A leaf module (torch imported only when called), so :mod:`.model_io`
can name the spec file and re-apply a saved quantization on load without importing :mod:`.quantization`,
which saves through :mod:`.model_io`.

Example:
    >>> import torch
    >>> q = quantize_module(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    >>> type(q[0]).__name__, is_quantized(q)
    ('Linear', True)
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: Written beside the float32 weights of a quantized model; :func:`apply_saved_quantization` reads it back.
QUANTIZATION_FILE = "haystack_distill_quantization.json"
QUANTIZATION_SPEC: Dict[str, Any] = {"method": "dynamic", "dtype": "qint8", "modules": ["torch.nn.Linear"]}
SCHEMES = ("per_channel", "per_tensor")


def is_quantized(model: nn.Module) -> bool:
    """True if any module of ``model`` is a dynamically quantized Linear."""
    from torch.ao.nn.quantized import dynamic

    return any(isinstance(m, dynamic.Linear) for m in model.modules())


def quantize_module(module: nn.Module, inplace: bool = False, scheme: str = "per_channel") -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` of the ``nn.Linear`` layers to qint8 (on CPU).

    ``scheme`` is ``"per_channel"`` (one weight scale per output row) or ``"per_tensor"``.
    """
    import torch
    from torch.ao import quantization as tq

    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}: use one of {', '.join(SCHEMES)}.")
    if not inplace:
        module = copy.deepcopy(module)
    module.to("cpu").eval()
    qconfig = tq.per_channel_dynamic_qconfig if scheme == "per_channel" else tq.default_dynamic_qconfig
    with warnings.catch_warnings():  # torch 2.10+ points eager-mode users to torchao, which is not a dependency
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        return tq.quantize_dynamic(module, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)


def apply_saved_quantization(model: nn.Module, spec: Dict[str, Any]) -> nn.Module:
    """Quantize a freshly loaded float model in place as described by a saved quantization ``spec``."""
    wanted = {k: spec.get(k) for k in QUANTIZATION_SPEC}
    if wanted != QUANTIZATION_SPEC:
        raise ValueError(f"{QUANTIZATION_FILE} asks for {wanted}; this version supports only {QUANTIZATION_SPEC}.")
    return quantize_module(model, inplace=True, scheme=spec.get("scheme", "per_tensor"))
