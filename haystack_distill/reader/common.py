"""Pieces every reader stage shares: argument checks, devices, features, teacher outputs, saving, evaluation."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..io import atomic_dir, atomic_write_json
from ..losses import validate_distillation_loss
from ..safety import check_finite, check_output_dir, write_manifest
from ..squad import iter_paragraphs, load_squad, validate_squad_file
from ..teacher_cache import cached_outputs, fingerprint_file, fingerprint_module
from ..tokenizers import check_tokenizer_compatibility, check_vocab_fits, tokenizer_fingerprint
from ..training import barrier, is_main_process, world

logger = logging.getLogger(__name__)

RUN_MARKER = "distillation.json"
# what Haystack's reader.save and our older versions (before the manifest) wrote: such a folder stays replaceable
LEGACY_OUTPUT = (RUN_MARKER, "projections.safetensors", "language_model.bin", "language_model_config.json",
                 "prediction_head_*", "processor_config.json", "vocab.*", "merges.txt", "tokenizer*.json",
                 "special_tokens_map.json", "added_tokens.json", "*.model", "config.json", "model.safetensors")
KD_MASKS = ("span", "padding", "none")
UNUSED_WEIGHTS = (".pooler.",)  # never used by a QA head; random on each load when the folder has none
FEATURE_TENSORS = ("input_ids", "padding_mask", "segment_ids", "labels", "span_mask", "id", "passage_start_t",
                   "seq_2_start_t")


def validate_hyperparameters(temperature: float, weight: float, loss: Any, batch_size: int, n_epochs: int,
                             grad_acc_steps: int, kd_mask: str = "span", learning_rate: float = 1.0) -> None:
    """Raise ValueError naming the argument, before any data or model work."""
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < float("inf")):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r} (readers usually train "
                         "with 1e-5 to 1e-4).")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}; Haystack's guide suggests 1 to 5.")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation_loss_weight must be in [0, 1], got {weight!r}.")
    validate_distillation_loss(loss)
    for name, value in (("batch_size", batch_size), ("n_epochs", n_epochs), ("grad_acc_steps", grad_acc_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if kd_mask not in KD_MASKS:
        raise ValueError(f"kd_mask={kd_mask!r}: use one of {KD_MASKS} ('span' = context tokens + no-answer).")


def data_path(data_dir: Optional[str], filename: Optional[str]) -> Optional[Path]:
    """``data_dir / filename`` (or ``filename`` alone), validated as SQuAD; None when ``filename`` is None."""
    if not filename:
        return None
    path = Path(data_dir) / filename if data_dir else Path(filename)
    validate_squad_file(path)
    return path


class StageInputs(NamedTuple):
    """Validated files, output folder and sequence settings of one distillation stage."""

    train: Path
    dev: Optional[Path]
    test: Optional[Path]
    save: Path
    settings: Tuple[int, int, int]  # max_seq_len, doc_stride, max_query_length


def stage_inputs(student: Any, data_dir: Optional[str], train_filename: str, dev_filename: Optional[str],
                 test_filename: Optional[str], save_dir: Optional[str], save_suffix: str, max_seq_len: Optional[int],
                 doc_stride: Optional[int], max_query_length: Optional[int], teacher: Any = None) -> StageInputs:
    """Check the data files and ``save_dir`` (before any model work) and resolve the sequence settings."""
    train = data_path(data_dir, train_filename)
    dev, test = data_path(data_dir, dev_filename), data_path(data_dir, test_filename)
    save = check_save_dir(Path(save_dir) if save_dir else default_save_dir(student, save_suffix),
                          [r for r in (teacher, student) if r is not None])
    return StageInputs(train, dev, test, save, sequence_settings(student, max_seq_len, doc_stride, max_query_length))


def default_save_dir(reader: Any, suffix: str = "") -> Path:
    """Haystack's default: ``./saved_models/<language model name><suffix>``."""
    return Path(f"./saved_models/{reader.inferencer.model.language_model.name}{suffix}")


def load_path(reader: Any) -> Optional[str]:
    """The folder (or hub name) a FARMReader was loaded from."""
    return getattr(reader, "model_name_or_path", None)


def check_save_dir(save_dir: Path, readers: Sequence[Any] = ()) -> Path:
    """Refuse a ``save_dir`` that is (or is inside, or contains) the folder one of ``readers`` was loaded from, or
    that holds files we did not write; a new/empty folder or a previous output of ours is fine."""
    inputs = [Path(p) for p in map(load_path, readers) if p]
    return check_output_dir(save_dir, inputs, marker=RUN_MARKER, legacy=LEGACY_OUTPUT)


def check_pair(teacher: Any, student: Any, max_seq_len: int) -> None:
    """Tokenizers identical and the teacher able to read ``max_seq_len`` positions; no forward pass."""
    if teacher is None:
        raise ValueError("teacher_model is required: pass a FARMReader holding the fine-tuned teacher.")
    check_tokenizer_compatibility(teacher.inferencer.processor.tokenizer, student.inferencer.processor.tokenizer)
    for role, reader in (("teacher", teacher), ("student", student)):
        check_reader_vocab(reader, role)
        limit = getattr(reader.inferencer.model.language_model.model.config, "max_position_embeddings", None)
        if limit is not None and limit < max_seq_len:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the {role}'s max_position_embeddings={limit}.")


def check_reader_vocab(reader: Any, role: str) -> None:
    """The reader's tokenizer emits only ids its embedding matrix has (both sizes named otherwise)."""
    check_vocab_fits(reader.inferencer.processor.tokenizer, reader.inferencer.model.language_model.model, role)


def resolve_device(use_gpu: Optional[bool], devices: Optional[Sequence[Any]]) -> torch.device:
    """``devices[0]`` if given, else CUDA when allowed and present (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    import os

    if use_gpu is False:
        return torch.device("cpu")
    if devices:
        return torch.device(devices[0])
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def build_processor(reader: Any, max_seq_len: int, doc_stride: int, max_query_length: int, data_dir: Any = None):
    """A training ``SquadProcessor`` on the reader's tokenizer (as Haystack's own ``train`` builds it)."""
    from haystack.modeling.data_handler.processor import SquadProcessor

    return SquadProcessor(
        tokenizer=reader.inferencer.processor.tokenizer, max_seq_len=max_seq_len,
        label_list=["start_token", "end_token"], metric="squad", train_filename=None, dev_filename=None,
        dev_split=0, test_filename=None,
        data_dir=Path(data_dir) if data_dir else None, doc_stride=doc_stride, max_query_length=max_query_length,
    )


def featurize(processor: Any, paragraphs: List[Dict[str, Any]], chunk: int = 256) -> Dict[str, torch.Tensor]:
    """Tokenize paragraphs into training features with the processor (student tokenizer), in chunks."""
    from tqdm.auto import tqdm

    parts: Dict[str, List[torch.Tensor]] = {name: [] for name in FEATURE_TENSORS}
    for start in tqdm(range(0, len(paragraphs), chunk), desc="features", disable=len(paragraphs) <= chunk):
        dicts = paragraphs[start : start + chunk]
        dataset, names, _ = processor.dataset_from_dicts(dicts, indices=list(range(start, start + len(dicts))))
        if dataset is None:
            continue
        for name, tensor in zip(names, dataset.tensors):
            if name in parts:
                parts[name].append(tensor.long())
    if not parts["input_ids"]:
        raise ValueError("the training file produced no features (no question could be tokenized with its answer); "
                         "check max_seq_len, max_query_length and the answers.")
    return {name: torch.cat(tensors) for name, tensors in parts.items()}


def cached_features(processor: Any, paragraphs: List[Dict[str, Any]], caching: bool, cache_path: Path,
                    ) -> Dict[str, torch.Tensor]:
    """:func:`featurize`, stored as safetensors under ``cache_path/features`` when ``caching`` (keyed by the
    tokenizer, sequence settings and the paragraphs themselves)."""
    if not caching:
        return featurize(processor, paragraphs)
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    from ..teacher_cache import cache_key

    key = {"tokenizer": tokenizer_fingerprint(processor.tokenizer), "max_seq_len": processor.max_seq_len,
           "doc_stride": processor.doc_stride, "max_query_length": processor.max_query_length,
           "data": hashlib.sha256(json.dumps(paragraphs, sort_keys=True).encode()).hexdigest()}
    path = Path(cache_path) / "features" / f"{cache_key(key)}.safetensors"
    if path.is_file():
        logger.info("reusing tokenized features from %s", path)
        return load_file(str(path))
    features = featurize(processor, paragraphs)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))
        tmp.replace(path)
    return features


def split_paragraphs(paragraphs: List[Dict[str, Any]], dev_split: float, seed: int) -> Tuple[list, list]:
    """Hold out ``dev_split`` of the paragraphs (seeded) for evaluation."""
    if not 0 <= dev_split < 1:
        raise ValueError(f"dev_split must be in [0, 1), got {dev_split!r}.")
    if dev_split == 0:
        return paragraphs, []
    order = list(range(len(paragraphs)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, int(round(dev_split * len(paragraphs))))
    dev = set(order[:n_dev])
    return [p for i, p in enumerate(paragraphs) if i not in dev], [p for i, p in enumerate(paragraphs) if i in dev]


def read_paragraphs(path: Path) -> List[Dict[str, Any]]:
    """All paragraphs of a SQuAD file."""
    return list(iter_paragraphs(load_squad(path)))


def teacher_key(teacher: Any, student: Any, train_path: Path, max_seq_len: int, doc_stride: int,
                max_query_length: int, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything that changes the teacher's outputs for these features: the weights that produce its logits and
    hidden states (not the pooler, which QA never uses and Haystack re-initialises on each load of a plain
    transformers folder), the tokenizers, the training file's content and the sequence settings."""
    return {
        "teacher_weights": fingerprint_module(teacher.inferencer.model, exclude=UNUSED_WEIGHTS),
        "teacher_tokenizer": tokenizer_fingerprint(teacher.inferencer.processor.tokenizer),
        "student_tokenizer": tokenizer_fingerprint(student.inferencer.processor.tokenizer),
        "train_file": fingerprint_file(train_path),
        "max_seq_len": max_seq_len, "doc_stride": doc_stride, "max_query_length": max_query_length,
        **(extra or {}),
    }


def cached_outputs_all_ranks(cache_dir: Path, key: Dict[str, Any], n_rows: int, row_shape: Tuple[int, ...],
                             produce: Callable) -> np.ndarray:
    """:func:`cached_outputs`; under torchrun rank 0 computes into the shared folder first, the others then read it."""
    if world()[1] > 1:
        if is_main_process():
            cached_outputs(cache_dir, key, n_rows, row_shape, produce)
        barrier()
    return cached_outputs(cache_dir, key, n_rows, row_shape, produce)


def sequence_settings(reader: Any, max_seq_len: Optional[int], doc_stride: Optional[int],
                      max_query_length: Optional[int]) -> Tuple[int, int, int]:
    """Explicit values, else the reader's own (Haystack's rule)."""
    return (max_seq_len or reader.max_seq_len, doc_stride or reader.doc_stride,
            max_query_length or reader.max_query_length)


def training_data(student: Any, train_path: Path, dev_path: Optional[Path], dev_split: float, seed: int,
                  processor: Any, settings: Tuple[int, int, int], data_dir: Any, caching: bool,
                  cache_path: Path) -> Tuple[list, list, Dict[str, torch.Tensor]]:
    """(train paragraphs, dev paragraphs, training features): dev from ``dev_path`` or a seeded ``dev_split``."""
    paragraphs = read_paragraphs(train_path)
    train_paras, dev_paras = (paragraphs, read_paragraphs(dev_path)) if dev_path else \
        split_paragraphs(paragraphs, dev_split, seed)
    processor = processor or build_processor(student, *settings, data_dir)
    return train_paras, dev_paras, cached_features(processor, train_paras, caching, cache_path)


def teacher_span_logits(teacher: Any, features: Dict[str, torch.Tensor], batch_size: int, device: torch.device,
                        cache_dir: Path, key: Dict[str, Any], use_amp: bool = False,
                        top_k: Optional[Tuple[int, float, Callable]] = None) -> np.ndarray:
    """Teacher start/end logits for the training features: fp16, on disk, memory-mapped.

    Dense ``[N, S, 2]``, or with ``top_k=(k, temperature, valid_mask_fn)`` the packed ``[N, 2, 2k + 1]`` rows of
    :func:`haystack_distill.sparse_logits.encode_top_k` (``valid_mask_fn(batch)`` gives the KD positions).
    """
    from tqdm.auto import tqdm

    from ..sparse_logits import EMPTY, encode_top_k, packed_width

    model = teacher.inferencer.model
    n_rows, seq_len = features["input_ids"].shape
    row_shape = (seq_len, 2) if top_k is None else (2, packed_width(top_k[0]))
    if top_k is not None:
        key = {**key, "top_k": top_k[0], "top_k_temperature": top_k[1], "top_k_mask": getattr(top_k[2], "mask", "")}

    amp = use_amp and device.type == "cuda"

    def forward(rows: torch.Tensor) -> torch.Tensor:
        """Logits of ``rows`` computed on their longest real length; positions past it get EMPTY (padding)."""
        longest = int(features["padding_mask"][rows].sum(1).max())
        inputs = {n: features[n][rows, :longest].to(device) for n in ("input_ids", "segment_ids", "padding_mask")}
        with torch.inference_mode(), torch.autocast("cuda", enabled=amp):
            logits = model.forward(**inputs)[0].float().cpu()
        full = torch.full((len(rows), seq_len, 2), EMPTY)
        full[:, :longest] = logits
        if top_k is None:
            return full
        k, temperature, valid_mask_fn = top_k
        return encode_top_k(full, valid_mask_fn({n: features[n][rows] for n in ("span_mask", "padding_mask")}), k,
                            temperature)

    def produce():
        """Row-order blocks; inside a block, batches of similar length so little padding is computed."""
        model.to(device).eval()
        lengths = features["padding_mask"].sum(1)
        block = batch_size * 32
        bar = tqdm(total=-(-n_rows // batch_size), desc="teacher pass")
        for first in range(0, n_rows, block):
            rows = torch.arange(first, min(first + block, n_rows))
            rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
            out = torch.empty((len(rows), *row_shape))
            for b in range(0, len(rows), batch_size):
                out[rows[b : b + batch_size] - first] = forward(rows[b : b + batch_size])
                bar.update(1)
            yield out.numpy()
        bar.close()

    started = time.perf_counter()
    out = cached_outputs_all_ranks(cache_dir, key, n_rows, row_shape, produce)
    logger.info("teacher logits ready in %.1f s (%.1f MB fp16 on disk)", time.perf_counter() - started,
                out.nbytes / 2**20)
    return out


SEQUENCE_FEATURES = ("input_ids", "padding_mask", "segment_ids", "span_mask")


def batching(group_by_length: bool, extra_sequence_keys: Sequence[str] = (), cut: bool = True) -> Dict[str, Any]:
    """TrainConfig fields for batches computed in length-sorted slices cut to their longest row (``[N, S, ...]``
    features only), and with ``group_by_length`` drawn from one length bucket; ``cut=False``: whole batches at
    the features' full width (``max_seq_len``), as Haystack computes them."""
    if not cut:
        return {"length_key": None, "sequence_keys": (), "group_by_length": False}
    return {"length_key": "padding_mask", "sequence_keys": SEQUENCE_FEATURES + tuple(extra_sequence_keys),
            "group_by_length": group_by_length}


def freeze_confidence_temperature(model: Any) -> None:
    """Keep the QA head's calibration scalar out of training (Haystack trains it by accident)."""
    for name, param in model.named_parameters():
        if name.endswith("temperature_for_confidence"):
            param.requires_grad_(False)


def make_eval_fn(reader: Any, paragraphs: List[Dict[str, Any]]) -> Optional[Callable[[], Dict[str, float]]]:
    """EM/F1 of the reader (its current model) on held-out paragraphs, or None without any."""
    if not paragraphs:
        return None
    from ..evaluation.reader import evaluate_reader

    def evaluate() -> Dict[str, float]:
        scores = evaluate_reader(reader, paragraphs)
        return {"em": scores["em"], "f1": scores["f1"]}

    return evaluate


def save_reader(reader: Any, save_dir: Path, record: Dict[str, Any],
                extra: Optional[Callable[[Path], None]] = None) -> None:
    """Save in Haystack's format (``FARMReader(save_dir)`` reloads it) plus a run record, atomically, rank 0 only.

    A model with NaN/inf weights is refused; ``extra(folder)`` writes more files (e.g. projections) before the
    manifest that marks all of them as ours, so a later run may replace the folder.
    """
    if not is_main_process():
        return
    check_finite(reader.inferencer.model, "the student")
    with atomic_dir(save_dir) as tmp:
        reader.save(tmp)
        plain_transformers_copy(reader, tmp)
        atomic_write_json(tmp / RUN_MARKER, record)
        if extra is not None:
            extra(tmp)
        write_manifest(tmp, "haystack-distill reader")
    logger.info("saved the student to %s", save_dir)


def plain_transformers_copy(reader: Any, folder: Path) -> None:
    """Add ``config.json`` + ``model.safetensors`` beside Haystack's files, so ``folder`` also loads with
    ``AutoModelForQuestionAnswering.from_pretrained`` (see :mod:`haystack_distill.reader.export`)."""
    from .export import ExportError, write_transformers_checkpoint

    try:
        write_transformers_checkpoint(reader.inferencer.model, None, folder)
    except ExportError as err:  # an exotic encoder: the Haystack save is still complete
        logger.warning("no plain transformers copy in %s: %s", folder, err)
