"""Model cards: the ``README.md`` with Hugging Face metadata that every output folder of ours gets. No Haystack import.

A card starts with the metadata header the Hub reads (``base_model`` where known, ``pipeline_tag``,
``library_name``, ``tags``), then says what the folder holds: the teacher, the student's starting weights, the data
files, the recipe, the scores the run measured and how to load it. A local ``README.md`` also keeps
sentence-transformers from asking the Hub for one when a folder is loaded by a relative path.

Example:
    >>> card = CardInfo("reader-3l", "question-answering", teacher="deepset/roberta-base-squad2",
    ...                 data={"train": "squad/train.json"}, settings={"temperature": 2.0}, scores={"f1": 71.23456})
    >>> text = render(card)
    >>> text.splitlines()[1:6]
    ['library_name: transformers', 'pipeline_tag: question-answering', 'tags:', '- knowledge-distillation', \
'- haystack-distill']
    >>> "| f1 | 71.23 |" in text
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

PathLike = Union[str, Path]
README = "README.md"
TAGS = ("knowledge-distillation", "haystack-distill")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
DIGEST = re.compile(r"[0-9a-f]{16,}")  # fingerprints in run records: they identify a run, they say nothing to a reader

USAGE = {
    "reader": ('from haystack.nodes import FARMReader          # Haystack 1.x\n'
               'reader = FARMReader("{name}", use_gpu=False)\n\n'
               'from transformers import pipeline               # plain transformers, same weights\n'
               'qa = pipeline("question-answering", model="{name}")'),
    "haystack-reader": 'from haystack.nodes import FARMReader\nreader = FARMReader("{name}", use_gpu=False)',
    "onnx-reader": ('from haystack.nodes import FARMReader          # runs model.onnx in onnxruntime\n'
                    'reader = FARMReader("{name}", use_gpu=False)'),
    "sentence-transformers": ('from sentence_transformers import SentenceTransformer\n'
                              'model = SentenceTransformer("{name}")\n'
                              'embeddings = model.encode(["A first sentence.", "A second one."])'),
    "int8-sentence-transformers": ('from haystack_distill.embeddings import load_sentence_transformer\n'
                                   'model = load_sentence_transformer("{name}")  # re-applies the int8 weights\n'
                                   'embeddings = model.encode(["A first sentence.", "A second one."])'),
    "encoder": ('from transformers import AutoModel, AutoTokenizer\n'
                'model, tokenizer = AutoModel.from_pretrained("{name}"), AutoTokenizer.from_pretrained("{name}")'),
    "fill-mask": ('from transformers import pipeline\n'
                  'fill = pipeline("fill-mask", model="{name}")\n'
                  'fill("Paris is the [MASK] of France.")'),
}


@dataclass
class CardInfo:
    """What a card says. ``name`` titles it and fills the usage snippet (``usage``: a key of :data:`USAGE`)."""

    name: str
    pipeline_tag: str
    library_name: Optional[str] = "transformers"
    description: str = ""
    base_model: Optional[str] = None
    teacher: Optional[str] = None
    start: Optional[str] = None  # the student's starting weights
    data: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    usage: str = ""
    notes: Sequence[str] = ()


def hub_id(name: Optional[PathLike]) -> Optional[str]:
    """``name`` if it reads as a Hub model id (``owner/model`` or ``model``) and is no local path, else None.

    Example:
        >>> hub_id("deepset/roberta-base-squad2"), hub_id("/models/student"), hub_id("./student")
        ('deepset/roberta-base-squad2', None, None)
    """
    if name is None:
        return None
    text = str(name)
    if Path(text).expanduser().exists() or not HUB_ID.fullmatch(text):
        return None
    return text


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """The YAML header of a card (a ``README.md`` or the folder holding it); ``{}`` when there is none."""
    import yaml

    path = Path(path)
    path = path / README if path.is_dir() else path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"---\n(.*?\n)---\n", text, re.DOTALL)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def base_model_of(source: Optional[PathLike]) -> Optional[str]:
    """The Hub id a model derives from: ``source`` itself when it is a Hub id, else the ``base_model`` of our card
    in the local folder ``source`` (so a chain of our folders keeps naming the Hub model it started from). Another
    tool's card is not followed: its ``base_model`` is that model's parent, not the model."""
    if source is None:
        return None
    if Path(str(source)).expanduser().exists():
        meta = read_metadata(Path(str(source)).expanduser())
        base = meta.get("base_model") if TAGS[1] in (meta.get("tags") or []) else None
        return str(base[0] if isinstance(base, list) and base else base) if base else None
    return hub_id(source)


def flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dicts as ``outer.inner`` keys.

    Example:
        >>> flatten({"best": {"step": 3, "sts": 0.8}, "loss": 0.1})
        {'best.step': 3, 'best.sts': 0.8, 'loss': 0.1}
    """
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(values: Mapping[str, Any]) -> Dict[str, Any]:
    """The numeric entries (booleans left out) of ``values``, flattened: the scores a run measured."""
    return {k: v for k, v in flatten(values).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def settings(values: Mapping[str, Any], skip: Sequence[str] = ()) -> Dict[str, Any]:
    """``values`` flattened without ``skip``ped keys, empty values and fingerprints (long hex digests)."""
    return {k: v for k, v in flatten(values).items()
            if k not in skip and v not in (None, "", [], "None") and not (isinstance(v, str) and DIGEST.fullmatch(v))}


def metadata(card: CardInfo) -> Dict[str, Any]:
    """The card's YAML header as a dict, in the Hub's field names."""
    meta: Dict[str, Any] = {}
    if card.base_model:
        meta["base_model"] = card.base_model
    if card.library_name:
        meta["library_name"] = card.library_name
    meta["pipeline_tag"] = card.pipeline_tag
    meta["tags"] = list(dict.fromkeys([*TAGS, *card.tags]))
    return meta


def cell(value: Any) -> str:
    """A value as one Markdown table cell: floats to 4 significant digits, lists comma-joined.

    Example:
        >>> cell(0.123456), cell([0, 2, 4]), cell("a|b")
        ('0.1235', '0, 2, 4', 'a\\\\|b')
    """
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(cell(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Mapping[str, Any], header: str) -> List[str]:
    """A two-column Markdown table (``header`` names the first column)."""
    return [f"| {header} | value |", "|---|---|", *(f"| {cell(k)} | {cell(v)} |" for k, v in rows.items())]


def _origin(card: CardInfo) -> List[str]:
    lines = [f"- Teacher: `{card.teacher}`"] if card.teacher else []
    lines += [f"- Started from: `{card.start}`"] if card.start else []
    lines += [f"- Data ({role}): `{path}`" for role, path in card.data.items() if path]
    return lines


def render(card: CardInfo) -> str:
    """The whole ``README.md``: YAML header, title, origin, recipe, scores, usage and notes."""
    import yaml

    lines = ["---", yaml.safe_dump(metadata(card), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {card.name}", ""]
    lines += [card.description, ""] if card.description else []
    origin = _origin(card)
    lines += ["## Origin", "", *origin, ""] if origin else []
    lines += ["## Recipe", "", *table(card.settings, "setting"), ""] if card.settings else []
    if card.scores:
        lines += ["## Scores", "", "Measured by the run that wrote this folder.", "", *table(card.scores, "metric"), ""]
    if card.usage:
        lines += ["## Use", "", "```python", USAGE.get(card.usage, card.usage).format(name=card.name), "```", ""]
    lines += [*(line for note in card.notes for line in (note, "")), f"Written by haystack-distill {_version()}.", ""]
    return "\n".join(lines)


def write_model_card(folder: PathLike, card: CardInfo) -> Path:
    """Write ``render(card)`` to ``folder/README.md`` (atomically) and return its path."""
    from .io import atomic_write_text

    return atomic_write_text(Path(folder) / README, render(card))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("haystack-distill")
    except PackageNotFoundError:
        return "(not installed)"
