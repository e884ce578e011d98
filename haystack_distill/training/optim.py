"""The one optimizer of every stage: AdamW over the trainable parameters, weight decay off for biases and
LayerNorm, linear warmup then linear decay."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from .config import TrainConfig

NamedParams = List[Tuple[str, nn.Parameter]]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


def trainable_parameters(modules: Sequence[nn.Module]) -> NamedParams:
    """Named parameters that require grad, de-duplicated (tied weights appear once)."""
    seen: set = set()
    named: NamedParams = []
    for idx, module in enumerate(modules):
        for name, param in module.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                named.append((f"{idx}.{name}", param))
    return named


def decay_groups(named: NamedParams, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` for weights, none for biases and LayerNorm (empty groups dropped)."""
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def linear_schedule(warmup: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor of a step: linear warmup over ``warmup`` steps, then linear decay to 0 at ``total_steps``.

    Example:
        >>> [round(linear_schedule(2, 6)(s), 2) for s in range(6)]
        [0.33, 0.67, 1.0, 0.75, 0.5, 0.25]
    """

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return schedule


def build_optimizer(named: NamedParams, config: TrainConfig,
                    total_steps: int) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay off for biases and LayerNorm, and linear warmup then linear decay (the one
    optimizer of every stage; the HF Trainer adapter builds its groups with :func:`decay_groups` too)."""
    optimizer = torch.optim.AdamW(decay_groups(named, config.weight_decay), lr=config.learning_rate)
    warmup = int(config.warmup_proportion * total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))
