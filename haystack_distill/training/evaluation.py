"""Evaluation during training: the :class:`Evaluator` protocol, :class:`CallbackEvaluator` for a plain
``eval_fn``, and the tracker behind ``keep_best`` and early stopping by patience."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from torch import Tensor, nn

from .config import TrainConfig

logger = logging.getLogger(__name__)


class Evaluator(Protocol):
    """What the loop evaluates with (like sentence-transformers' ``SentenceEvaluator``).

    ``evaluator(model)`` returns metrics; ``primary_metric`` names the one early stopping and ``keep_best``
    compare, ``greater_is_better`` its direction.
    """

    primary_metric: str
    greater_is_better: bool

    def __call__(self, model: nn.Module) -> Dict[str, float]: ...


class CallbackEvaluator:
    """An :class:`Evaluator` from a zero-argument ``eval_fn`` and a metric name (or a callable on the metrics).

    Example:
        >>> ev = CallbackEvaluator(lambda: {"f1": 0.5}, "F1")
        >>> ev(None), ev.primary_metric, ev.greater_is_better, ev.value({"f1": 0.5})
        ({'f1': 0.5}, 'f1', True, 0.5)
    """

    def __init__(self, eval_fn: Callable[[], Dict[str, float]], metric: Any = "f1",
                 greater_is_better: bool = True) -> None:
        self.eval_fn = eval_fn
        self.metric = metric
        self.primary_metric = getattr(metric, "__name__", "metric") if callable(metric) else str(metric).lower()
        self.greater_is_better = greater_is_better

    def __call__(self, model: Any) -> Dict[str, float]:
        return self.eval_fn()

    def value(self, metrics: Dict[str, float]) -> float:
        """The primary metric's value (a callable metric is applied to the metrics)."""
        return float(self.metric(metrics)) if callable(self.metric) else _lookup(self.primary_metric, metrics)


def _lookup(key: str, metrics: Dict[str, float]) -> float:
    if key not in metrics:
        raise ValueError(f"early_stopping metric {key!r} is not computed; choose from {sorted(metrics)}.")
    return float(metrics[key])


def metric_value(evaluator: Evaluator, metrics: Dict[str, float]) -> float:
    """The evaluator's primary metric in ``metrics`` (through its ``value(metrics)`` if it has one)."""
    value = getattr(evaluator, "value", None)
    return float(value(metrics)) if callable(value) else _lookup(evaluator.primary_metric, metrics)


class _Tracker:
    """Evaluation history, the best result (its weights with ``keep_best``) and early stopping by patience."""

    def __init__(self, evaluator: Evaluator, keep_best: bool, patience: Optional[int], min_delta: float) -> None:
        self.evaluator, self.keep_best, self.patience, self.min_delta = evaluator, keep_best, patience, min_delta
        self.history: List[Dict[str, float]] = []
        self.best: Optional[Dict[str, float]] = None
        self.best_value: Optional[float] = None
        self.best_state: Optional[Dict[str, Tensor]] = None
        self.bad_rounds = 0

    def improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.evaluator.greater_is_better:
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, step: int, model: nn.Module) -> Tuple[Dict[str, float], bool]:
        """Evaluate at ``step``; return (metrics, whether training should stop)."""
        metrics = self.evaluator(model)
        logger.info("step %d: %s", step, metrics)
        self.history.append({"step": step, **metrics})
        if not (self.keep_best or self.patience is not None):
            return metrics, False
        value = metric_value(self.evaluator, metrics)
        if self.improved(value):
            self.best, self.best_value, self.bad_rounds = self.history[-1], value, 0
            if self.keep_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return metrics, False
        self.bad_rounds += 1
        return metrics, self.patience is not None and self.bad_rounds > self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
            logger.info("kept the best model (%s=%.4f)", self.evaluator.primary_metric, self.best_value)


def _tracker(config: TrainConfig, evaluator: Optional[Evaluator], eval_fn: Optional[Callable[[], Dict[str, float]]],
             early_stopping: Any) -> Optional[_Tracker]:
    """The tracker for ``evaluator``, or for the older ``eval_fn`` + Haystack-style ``early_stopping`` (metric,
    mode, patience, min_delta): then the best model is kept only with ``early_stopping``."""
    if evaluator is not None:
        return _Tracker(evaluator, config.keep_best, config.patience, config.min_delta)
    if eval_fn is None:
        return None
    if early_stopping is None:
        return _Tracker(CallbackEvaluator(eval_fn), False, None, 0.0)
    wrapped = CallbackEvaluator(eval_fn, getattr(early_stopping, "metric", "f1"),
                                getattr(early_stopping, "mode", "max") == "max")
    return _Tracker(wrapped, True, getattr(early_stopping, "patience", 0), getattr(early_stopping, "min_delta", 0.0))
