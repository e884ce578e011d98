"""The model card (``README.md``) of a general-distillation output."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Union

from .config import GeneralDistillationConfig

PathLike = Union[str, Path]

RUN_ONLY = ("device", "checkpoint_every", "resume", "show_progress", "layer_mapping")  # not the recipe


def general_card(teacher: PathLike, texts: PathLike, name: str, config: GeneralDistillationConfig,
                 layers: Dict[str, Any], scores: Dict[str, Any], sentence: bool) -> Any:
    """The model card of a general-distillation output: teacher, text file, settings (``layers``: the kept
    teacher layers and the resolved layer mapping) and the last loss terms; a sentence-transformers folder when
    ``sentence``."""
    from ..model_card import CardInfo, base_model_of, numbers, settings

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
