"""A reader stage's data: SQuAD files, the training ``SquadProcessor``, tokenized features, batching, KD masks."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..distributed import is_main_process
from ..fingerprint import fingerprint_file
from ..squad import iter_paragraphs, load_squad, unlabeled_paragraphs, validate_squad_file
from ..tokenizers import tokenizer_fingerprint
from .config import UnlabeledFiles

logger = logging.getLogger(__name__)

FEATURE_TENSORS = ("input_ids", "padding_mask", "segment_ids", "labels", "span_mask", "id", "passage_start_t",
                   "seq_2_start_t")
SEQUENCE_FEATURES = ("input_ids", "padding_mask", "segment_ids", "span_mask")


@dataclass(frozen=True)
class SequenceSettings:
    """How contexts are cut into features."""

    max_seq_len: int
    doc_stride: int
    max_query_length: int

    @classmethod
    def of(cls, reader: Any, max_seq_len: Optional[int], doc_stride: Optional[int],
           max_query_length: Optional[int]) -> SequenceSettings:
        """Explicit values, else the reader's own (Haystack's rule); checked by :func:`check_windows`."""
        settings = cls(max_seq_len or reader.max_seq_len, doc_stride or reader.doc_stride,
                       max_query_length or reader.max_query_length)
        check_windows(settings.max_seq_len, settings.doc_stride, settings.max_query_length)
        return settings


def check_windows(max_seq_len: int, doc_stride: int, max_query_length: int) -> None:
    """Haystack cuts contexts into windows only when ``doc_stride < max_seq_len - max_query_length`` (else it
    fails with a bare AssertionError mid-run); raise a ValueError naming the values and a fix instead.

    Example:
        >>> check_windows(256, 128, 64)
        >>> try:
        ...     check_windows(128, 128, 64)
        ... except ValueError as err:
        ...     print(str(err)[:60])
        doc_stride=128 must be smaller than max_seq_len - max_query_
    """
    room = max_seq_len - max_query_length
    if doc_stride >= room:
        raise ValueError(f"doc_stride={doc_stride} must be smaller than max_seq_len - max_query_length = "
                         f"{max_seq_len} - {max_query_length} = {room}, or the windows of a long context leave gaps; "
                         f"pass a doc_stride of at most {room - 1} (e.g. {max(1, room // 2)}), or a larger "
                         "max_seq_len.")


@dataclass(frozen=True)
class StageInputs:
    """A stage's validated files, its output folder and its sequence settings."""

    train: Path
    dev: Optional[Path]
    test: Optional[Path]
    save: Path
    settings: SequenceSettings
    unlabeled: Tuple[Path, ...] = ()  # the unlabelled files, in the order given


@dataclass
class StageData:
    """Training paragraphs (the labelled ones first, then the unlabelled ones), held-out dev paragraphs and the
    training features (``[N, ...]`` tensors; ``labeled`` is 1 for rows of a labelled paragraph, 0 otherwise)."""

    train: List[Dict[str, Any]]
    dev: List[Dict[str, Any]]
    features: Dict[str, Any]

    def counts(self) -> Dict[str, int]:
        """Labelled and unlabelled training features, for the run record."""
        labeled = int(self.features["labeled"].sum())
        return {"labeled_features": labeled, "unlabeled_features": len(self.features["labeled"]) - labeled}


def data_path(data_dir: Optional[str], filename: Optional[str], unlabeled: bool = False) -> Optional[Path]:
    """``data_dir / filename`` (or ``filename`` alone), validated as SQuAD (``unlabeled``: as questions whose
    answers are ignored); None when ``filename`` is None."""
    if not filename:
        return None
    path = Path(data_dir) / filename if data_dir else Path(filename)
    if unlabeled:
        unlabeled_paragraphs(path)
    else:
        validate_squad_file(path)
    return path


def unlabeled_names(filenames: UnlabeledFiles) -> List[str]:
    """``unlabeled_filename`` as a list of names: None or "" is none, one name is one file."""
    if not filenames:
        return []
    return [filenames] if isinstance(filenames, (str, Path)) else [str(name) for name in filenames]


def unlabeled_paths(data_dir: Optional[str], filenames: UnlabeledFiles) -> Tuple[Path, ...]:
    """The validated unlabelled files (``data_dir / name`` each); one named twice is refused, as it would count
    its questions twice."""
    names = unlabeled_names(filenames)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"unlabeled_filename names {repeated[0]!r} more than once; pass each file once.")
    return tuple(path for path in (data_path(data_dir, name, unlabeled=True) for name in names) if path)


def unlabeled_fingerprint(paths: Sequence[Path]) -> str:
    """The unlabelled files' content, in order (one file: its own fingerprint, as before several were taken)."""
    return "+".join(fingerprint_file(path) for path in paths)


def read_unlabeled(paths: Sequence[Path]) -> List[Dict[str, Any]]:
    """The unlabelled files' paragraphs without answers, in order; warns how many answers each dropped."""
    out: List[Dict[str, Any]] = []
    for path in paths:
        paragraphs, dropped = unlabeled_paragraphs(path)
        if dropped:
            logger.warning("%s: ignored the answers of %d questions; unlabelled questions learn only from the "
                           "teacher (pass the file as train_filename to train on its answers).", path, dropped)
        out += paragraphs
    return out


def read_paragraphs(path: Path) -> List[Dict[str, Any]]:
    """All paragraphs of a SQuAD file."""
    return list(iter_paragraphs(load_squad(path)))


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


def build_processor(reader: Any, max_seq_len: int, doc_stride: int, max_query_length: int, data_dir: Any = None):
    """A training ``SquadProcessor`` on the reader's tokenizer (as Haystack's own ``train`` builds it)."""
    from haystack.modeling.data_handler.processor import SquadProcessor

    return SquadProcessor(
        tokenizer=reader.inferencer.processor.tokenizer, max_seq_len=max_seq_len,
        label_list=["start_token", "end_token"], metric="squad", train_filename=None, dev_filename=None,
        dev_split=0, test_filename=None,
        data_dir=Path(data_dir) if data_dir else None, doc_stride=doc_stride, max_query_length=max_query_length,
    )


def featurize(processor: Any, paragraphs: List[Dict[str, Any]], chunk: int = 256) -> Dict[str, Tensor]:
    """Tokenize paragraphs into training features with the processor (student tokenizer), in chunks."""
    from tqdm.auto import tqdm

    parts: Dict[str, List[Tensor]] = {name: [] for name in FEATURE_TENSORS}
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
                    ) -> Dict[str, Tensor]:
    """:func:`featurize`, stored as safetensors under ``cache_path/features`` when ``caching`` (keyed by the
    tokenizer, sequence settings and the paragraphs themselves); a stored file is reused only if it matches the
    checksum written beside it, else the features are computed again (with a warning)."""
    if not caching:
        return featurize(processor, paragraphs)
    from safetensors.torch import load_file, save_file

    from ..fingerprint import fingerprint_value
    from ..io import atomic_write_text, usual_permissions
    from ..teacher_cache import cache_key

    key = {"tokenizer": tokenizer_fingerprint(processor.tokenizer), "max_seq_len": processor.max_seq_len,
           "doc_stride": processor.doc_stride, "max_query_length": processor.max_query_length,
           "data": fingerprint_value(paragraphs, "sha256")}
    path = Path(cache_path) / "features" / f"{cache_key(key)}.safetensors"
    checksum = path.with_suffix(".checksum")  # the file's fingerprint, written after it
    if path.is_file():
        if checksum.is_file() and checksum.read_text().strip() == fingerprint_file(path):
            logger.info("reusing tokenized features from %s", path)
            return load_file(str(path))
        logger.warning("the tokenized-features cache %s is damaged or unverified; tokenizing again", path)
    features = featurize(processor, paragraphs)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))
        usual_permissions(tmp).replace(path)  # save_file writes 0600
        atomic_write_text(checksum, fingerprint_file(path))
    return features


def training_data(student: Any, inputs: StageInputs, config: Any) -> StageData:
    """Paragraphs and features: dev from ``inputs.dev`` or a seeded ``config.dev_split`` of the training file;
    the unlabelled paragraphs (answers removed) after the labelled ones; features from ``config.processor`` or a
    processor on the student's tokenizer (cached with ``config.caching``), flagged ``labeled`` by paragraph."""
    paragraphs = read_paragraphs(inputs.train)
    train, dev = (paragraphs, read_paragraphs(inputs.dev)) if inputs.dev else \
        split_paragraphs(paragraphs, config.dev_split, config.seed)
    unlabeled = read_unlabeled(inputs.unlabeled)
    settings = inputs.settings
    processor = config.processor or build_processor(student, settings.max_seq_len, settings.doc_stride,
                                                    settings.max_query_length, config.data_dir)
    features = cached_features(processor, train + unlabeled, config.caching, config.cache_path)
    features["labeled"] = (features["id"][:, 0] < len(train)).long()  # id = (paragraph, question, window)
    return StageData(train + unlabeled, dev, features)


def batching(group_by_length: bool, extra_sequence_keys: Sequence[str] = (), cut: bool = True) -> Dict[str, Any]:
    """TrainConfig fields for batches computed in length-sorted slices cut to their longest row (``[N, S, ...]``
    features only), and with ``group_by_length`` drawn from one length bucket; ``cut=False``: whole batches at
    the features' full width (``max_seq_len``), as Haystack computes them."""
    if not cut:
        return {"length_key": None, "sequence_keys": (), "group_by_length": False}
    return {"length_key": "padding_mask", "sequence_keys": SEQUENCE_FEATURES + tuple(extra_sequence_keys),
            "group_by_length": group_by_length}


def kd_valid_mask(batch: Dict[str, Tensor], kd_mask: str) -> Optional[Tensor]:
    """Positions allowed in the KD softmax: ``span`` (context + no-answer), ``padding`` (all real tokens), ``none``."""
    if kd_mask == "span":
        return batch["span_mask"].bool()
    if kd_mask == "padding":
        return batch["padding_mask"].bool()
    return None
