""":func:`distil_general`: general distillation of an encoder folder on a plain-text file, end to end."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..fingerprint import fingerprint_file, fingerprint_module
from ..layer_match import LayerMatchLoss
from ..layers import count_layers, resolve_layer_mapping
from ..tokenizers import check_vocab_fits
from ..training import TrainConfig, config_fields, train
from .card import general_card
from .checkpoints import checkpoint_entry, remove_own_checkpoints
from .config import GeneralDistillationConfig
from .data import MIN_WINDOWS, read_texts, text_windows
from .loss import general_weights
from .sentence import copy_sentence_modules, sentence_modules
from .student import build_student, check_positions, load_encoder

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
UNUSED = ("pooler.",)  # weights the layer-matching loss never reads (transformers may re-initialise them on load)


def _width(model: Any) -> int:
    """The hidden size of a transformers model."""
    return int(model.config.hidden_size)


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

    from ..io import atomic_dir
    from ..model_card import write_model_card
    from ..safety import check_finite, check_output_dir, check_own_folder, write_manifest

    config = GeneralDistillationConfig(**{**asdict(config or GeneralDistillationConfig()), **overrides}).validate()
    output = check_output_dir(output, inputs=[teacher] + ([config.student] if config.student else []))
    checkpoints = output.with_name(f"{output.name}.checkpoints")
    check_own_folder(checkpoints, checkpoint_entry, "move them away or choose another --output.")
    check_positions(config.max_seq_len, {"teacher": teacher, "student": config.student})
    modules = sentence_modules(teacher)
    lines = read_texts(texts, config.min_words)
    if not lines:
        raise ValueError(f"{texts} has no line of >= {config.min_words} words; general distillation needs at least "
                         f"{MIN_WINDOWS} text windows (thousands are usual): pass a larger text file.")
    teacher_model = load_encoder(teacher, "teacher")
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
