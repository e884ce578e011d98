"""Size, speed and quality of a classifier, so teacher and students compare in one table.

:func:`benchmark_classifier` measures a Hugging Face sequence- (or token-) classification model on a labelled
dataset: serialized size in MB, parameter count, single-batch latency (warm-up runs, then timed repeats; mean
and standard deviation), batched throughput, and accuracy / precision / recall / F1 / ROC-AUC. The size is the
length of ``torch.save(model.state_dict())`` written to memory, so no temporary file is created or left behind;
it also works for dynamically quantized models. No Haystack import.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([0, 1, 1, 0]), np.array([[.9, .1], [.2, .8], [.6, .4], [.7, .3]]))
    >>> m["accuracy"], m["precision"], m["recall"], round(m["f1"], 4), m["roc_auc"]
    (0.75, 1.0, 0.5, 0.6667, 1.0)
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .size import model_size

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
Device = Union[str, torch.device, None]


# ------------------------------------------------------------------------------------------------ metrics


def _roc_auc(labels: np.ndarray, probs: np.ndarray, positive_label: int) -> float:
    from sklearn.metrics import roc_auc_score

    n_classes = probs.shape[1]
    try:
        if n_classes == 2:
            return float(roc_auc_score(labels == positive_label, probs[:, positive_label]))
        return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=list(range(n_classes))))
    except ValueError as err:  # a class absent from the labels: ROC-AUC is undefined
        logger.warning("ROC-AUC is undefined on this data (%s); reporting NaN.", err)
        return math.nan


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, average: Optional[str] = None, positive_label: int = 1
) -> Dict[str, float]:
    """Accuracy, precision, recall, F1 (binary for 2 classes, else ``average``) and ROC-AUC (one-vs-rest).

    Args:
        labels: ``[N]`` integer gold labels.
        probs: ``[N, C]`` class probabilities.
        average: scikit-learn averaging; ``None`` means ``"binary"`` for two classes, ``"macro"`` otherwise.
        positive_label: the positive class for binary precision/recall/F1/ROC-AUC.
    """
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.asarray(labels).astype(np.int64)
    preds = probs.argmax(axis=-1)
    n_classes = probs.shape[1]
    average = average or ("binary" if n_classes == 2 else "macro")
    class_ids = None if average == "binary" else list(range(n_classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, average=average, pos_label=positive_label, labels=class_ids, zero_division=0
    )
    return {
        "accuracy": float((preds == labels).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": _roc_auc(labels, probs, positive_label),
    }


# ------------------------------------------------------------------------------------------------- inputs


def _rows(dataset: Any, start: int, stop: int) -> List[Dict[str, Any]]:
    if hasattr(dataset, "column_names"):  # datasets.Dataset slices are columnar
        block = dataset[start:stop]
        return [dict(zip(block, values)) for values in zip(*block.values())]
    return [dataset[i] for i in range(start, stop)]


def _label_key(row: Dict[str, Any], label_column: Optional[str]) -> str:
    candidates = [label_column] if label_column else ["label", "labels"]
    for key in candidates:
        if key in row:
            return key
    raise ValueError(f"dataset rows have no label column {' or '.join(map(repr, candidates))}; got {sorted(row)}.")


def _check_columns(row: Dict[str, Any], text_column: str, text_pair_column: Optional[str]) -> None:
    if "input_ids" in row:
        return
    missing = [c for c in (text_column, text_pair_column) if c and c not in row]
    if missing:
        raise ValueError(
            f"dataset rows lack column(s) {missing} (have {sorted(row)}); set text_column=/text_pair_column= or "
            "pass pre-tokenized rows with input_ids."
        )


def _pad_labels(labels: List[Any], length: int) -> Tensor:
    out = torch.full((len(labels), length), IGNORE_INDEX, dtype=torch.long)
    for i, seq in enumerate(labels):
        seq = list(seq)[:length]
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def _encode(
    tokenizer: Any, rows: List[Dict[str, Any]], label_key: str, text_column: str, text_pair_column: Optional[str],
    max_length: int,
) -> Tuple[Dict[str, Tensor], Tensor]:
    """Tokenized (or padded pre-tokenized) model inputs and labels for ``rows``."""
    if "input_ids" in rows[0]:
        features = [{k: row[k] for k in _INPUT_KEYS if k in row} for row in rows]
        inputs = dict(tokenizer.pad(features, return_tensors="pt"))
    else:
        texts = [row[text_column] for row in rows]
        pairs = [row[text_pair_column] for row in rows] if text_pair_column else None
        inputs = dict(tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt"))
    raw = [row[label_key] for row in rows]
    if np.ndim(raw[0]) == 0:
        return inputs, torch.tensor(raw, dtype=torch.long)
    return inputs, _pad_labels(raw, inputs["input_ids"].shape[1])


def _batches(dataset: Any, batch_size: int, **encode_kwargs: Any) -> Iterator[Tuple[Dict[str, Tensor], Tensor]]:
    for start in range(0, len(dataset), batch_size):
        rows = _rows(dataset, start, min(start + batch_size, len(dataset)))
        yield _encode(rows=rows, **encode_kwargs)


# ------------------------------------------------------------------------------------------------ running


def _forward_filter(model: nn.Module) -> Optional[set]:
    params = inspect.signature(model.forward).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _logits(model: nn.Module, inputs: Dict[str, Tensor], accepted: Optional[set], device: torch.device) -> Tensor:
    feed = {k: v.to(device) for k, v in inputs.items() if accepted is None or k in accepted}
    out = model(**feed)
    return out["logits"] if isinstance(out, dict) else out[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_device(model: nn.Module) -> torch.device:
    first: Optional[Tensor] = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    return first.device if first is not None else torch.device("cpu")


def _predict(
    model: nn.Module, batches: Iterator[Tuple[Dict[str, Tensor], Tensor]], device: torch.device, total: int
) -> Tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and labels over all scored items (tokens labelled -100 dropped), and seconds spent."""
    accepted = _forward_filter(model)
    all_probs, all_labels, seconds = [], [], 0.0
    for inputs, labels in tqdm(batches, total=total, desc="benchmark", leave=False):
        _sync(device)
        start = time.perf_counter()
        logits = _logits(model, inputs, accepted, device)
        _sync(device)
        seconds += time.perf_counter() - start
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        if probs.dim() == 3:  # token classification: keep labelled positions only
            keep = labels.ne(IGNORE_INDEX)
            probs, labels = probs[keep], labels[keep]
        all_probs.append(probs.numpy())
        all_labels.append(labels.numpy())
    return np.concatenate(all_probs).astype(np.float64), np.concatenate(all_labels), seconds


def _latency_ms(
    model: nn.Module, inputs: Dict[str, Tensor], device: torch.device, warmup: int, repeats: int
) -> Tuple[float, float]:
    accepted = _forward_filter(model)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    for _ in range(warmup):
        _logits(model, inputs, accepted, device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        _logits(model, inputs, accepted, device)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.mean(times)), float(np.std(times, ddof=1)) if repeats > 1 else 0.0


def _check_arguments(dataset: Any, batch_size: int, warmup: int, repeats: int, latency_batch_size: int) -> None:
    if len(dataset) == 0:
        raise ValueError("dataset is empty; benchmark_classifier needs labelled rows.")
    for name, value, low in (("batch_size", batch_size, 1), ("warmup", warmup, 0), ("repeats", repeats, 1),
                             ("latency_batch_size", latency_batch_size, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def benchmark_classifier(
    model: nn.Module,
    tokenizer: Any,
    dataset: Any,
    *,
    text_column: str = "text",
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = None,
    batch_size: int = 32,
    max_length: int = 128,
    device: Device = None,
    warmup: int = 5,
    repeats: int = 20,
    latency_batch_size: int = 1,
    average: Optional[str] = None,
    positive_label: int = 1,
) -> Dict[str, float]:
    """Benchmark a classifier on a labelled dataset; one flat dict per model, ready for a table.

    Args:
        model: a Hugging Face ``*ForSequenceClassification`` (or ``*ForTokenClassification``) model, possibly
            quantized; any module returning ``logits`` works.
        tokenizer: its tokenizer (used to tokenize text, or to pad pre-tokenized rows).
        dataset: a ``datasets.Dataset``, a list of dicts or a map-style torch dataset of dicts. Rows hold either
            text (``text_column`` and optionally ``text_pair_column``) or ``input_ids`` (+ ``attention_mask``,
            ``token_type_ids``), and an integer label (or, for token classification, a list with -100 on
            positions to skip) under ``label_column`` (default ``"label"``, else ``"labels"``).
        batch_size: rows per forward pass for the quality metrics and throughput.
        max_length: truncation length when tokenizing text.
        device: where to run; default the model's current device. The model is moved there for the
            benchmark and moved back (and its train/eval mode restored) afterwards.
        warmup: untimed forward passes before latency timing.
        repeats: timed forward passes of one batch of ``latency_batch_size`` rows (the first rows).
        latency_batch_size: rows per latency measurement (1 = one request).
        average: precision/recall/F1 averaging (``None``: binary for 2 classes, macro otherwise).
        positive_label: positive class id for binary metrics.

    Returns:
        ``size_mb`` (in MiB, 2**20 bytes), ``parameters``, ``latency_ms_mean``, ``latency_ms_std``,
        ``throughput_per_s`` (rows/s in batches), ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc`` (NaN
        if a class is absent) and ``examples``. Token classification scores every labelled token.

    Example:
        >>> import tempfile, os
        >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
        >>> d = tempfile.mkdtemp(); vocab = os.path.join(d, "vocab.txt")
        >>> _ = open(vocab, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]))
        >>> tok = BertTokenizerFast(vocab_file=vocab)
        >>> model = BertForSequenceClassification(BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1,
        ...                                       num_attention_heads=2, intermediate_size=16))
        >>> rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
        >>> result = benchmark_classifier(model, tok, rows, warmup=1, repeats=2)
        >>> sorted(result)[:4], result["examples"]
        (['accuracy', 'examples', 'f1', 'latency_ms_mean'], 2)
    """
    _check_arguments(dataset, batch_size, warmup, repeats, latency_batch_size)
    first = _rows(dataset, 0, 1)[0]
    _check_columns(first, text_column, text_pair_column)
    encode = {"tokenizer": tokenizer, "label_key": _label_key(first, label_column), "text_column": text_column,
              "text_pair_column": text_pair_column, "max_length": max_length}
    original_device, was_training = _model_device(model), model.training
    target = torch.device(device) if device is not None else original_device
    model.to(target).eval()
    try:
        with torch.inference_mode():
            probs, labels, seconds = _predict(
                model, _batches(dataset, batch_size, **encode), target, math.ceil(len(dataset) / batch_size)
            )
            latency_inputs, _ = _encode(rows=_rows(dataset, 0, min(latency_batch_size, len(dataset))), **encode)
            mean_ms, std_ms = _latency_ms(model, latency_inputs, target, warmup, repeats)
        size = model_size(model)  # torch.save(state_dict), 2**20 bytes per MB
        result: Dict[str, Any] = {
            "size_mb": size.mb,
            "parameters": size.parameters,
            "latency_ms_mean": mean_ms,
            "latency_ms_std": std_ms,
            "throughput_per_s": len(dataset) / seconds if seconds > 0 else math.inf,
        }
        result.update(classification_metrics(labels, probs, average, positive_label))
        result["examples"] = len(dataset)
        return result
    finally:
        model.to(original_device)
        model.train(was_training)
