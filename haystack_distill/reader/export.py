"""Deploy a reader: plain transformers checkpoints, ONNX (fp32 or int8) folders, and torch dynamic int8.

- :func:`transformers_qa_model`: the Haystack model as an ``AutoModelForQuestionAnswering`` with equal logits
  (the head's confidence temperature is folded into ``qa_outputs``); the live reader is not changed.
- :func:`share_weights`: a Haystack save whose ``language_model.bin`` is also the transformers checkpoint (one copy
  of the weights): ``FARMReader(dir)`` and ``AutoModelForQuestionAnswering.from_pretrained(dir)`` both load it.
- :func:`write_transformers_checkpoint`: ``config.json`` + ``model.safetensors`` (+ tokenizer) into a new folder.
- :func:`export_reader`: a reader folder -> a new transformers or ONNX folder; ONNX folders (``--int8``: dynamic
  int8 weights, embeddings included) run in ``FARMReader(dir)`` (Haystack's ONNX path) and in onnxruntime alone
  through :class:`haystack_distill.reader.onnx_answer.OnnxReader` (Haystack's answers, no torch).
- :func:`torch_int8_reader`: torch's dynamic int8 (``nn.Linear``) of a loaded reader, for speed comparisons.

Example (with your own reader folder):
    >>> from haystack_distill.reader.export import export_reader                       # doctest: +SKIP
    >>> export_reader("models/student", "models/student-int8", fmt="onnx", int8=True)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from ..io import atomic_dir
from ..model_card import write_model_card
from ..tokenizers import max_positions
from .onnx_answer import onnx_session  # noqa: F401  (here before onnx_answer existed)

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
FORMATS = ("transformers", "onnx")
ONNX_FILE = "model.onnx"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUTS = ("start_logits", "end_logits")
OPSET = 17
MIN_OPSET = 10  # the encoders' dynamic Slice needs opset 10; torch's exporter fails below it
HAYSTACK_MAX_SEQ_LEN = 256  # FARMReader's default window length
WEIGHTS_FILE = "language_model.bin"
INDEX_FILE = "pytorch_model.bin.index.json"  # transformers' sharded-checkpoint index, here with one shard


class ExportError(ValueError):
    """Bad input for an export (not a reader folder, unknown format, existing output); the message names the fix."""


def transformers_qa_model(adaptive_model: Any) -> Any:
    """A new ``AutoModelForQuestionAnswering`` (CPU, fp32, eval) whose start/end logits equal the Haystack model's.

    Copies the encoder and the span head; the head's ``temperature_for_confidence`` divides ``qa_outputs`` so the
    logits match ``adaptive_model.forward`` exactly. ``adaptive_model`` itself is left unchanged.
    """
    from transformers import AutoModelForQuestionAnswering

    encoder = adaptive_model.language_model.model
    head = adaptive_model.prediction_heads[0]
    if getattr(head, "model_type", None) != "span_classification" or len(head.layer_dims) != 2:
        raise ExportError(f"the reader's head is {type(head).__name__} {head.layer_dims}; only a single-layer "
                          "span (question answering) head converts to a transformers QA model.")
    config = copy.deepcopy(encoder.config)
    config.architectures = None
    try:
        model = AutoModelForQuestionAnswering.from_config(config, trust_remote_code=False)
    except ValueError as err:
        raise ExportError(f"transformers has no question-answering class for {config.model_type!r}: {err}") from err
    if not isinstance(getattr(model, "qa_outputs", None), torch.nn.Linear):
        raise ExportError(f"{type(model).__name__} has no linear qa_outputs head to take the reader's span head.")
    state = {k: v.detach().cpu().float() for k, v in encoder.state_dict().items()}
    missing, unexpected = getattr(model, model.base_model_prefix).load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]  # QA models have no pooler
    if missing or unexpected:
        raise ExportError(f"the encoder's weights do not fit {type(model).__name__} (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); export supports encoders transformers has a QA class for.")
    linear = head.feed_forward.feed_forward[0]
    temperature = float(head.temperature_for_confidence.detach()) if hasattr(head, "temperature_for_confidence") \
        else 1.0
    with torch.no_grad():
        model.qa_outputs.weight.copy_(linear.weight.detach().cpu().float() / temperature)
        model.qa_outputs.bias.copy_(linear.bias.detach().cpu().float() / temperature)
    return model.eval()


def share_weights(adaptive_model: Any, folder: PathLike) -> Path:
    """Make ``folder/language_model.bin`` (written by ``FARMReader.save``) the one weights file of both loaders.

    It is rewritten as the transformers QA model's state dict (``bert.*`` and ``qa_outputs.*``, from
    :func:`transformers_qa_model`) plus the encoder weights only Haystack has (the pooler). ``config.json`` and
    ``pytorch_model.bin.index.json`` (every transformers weight -> ``language_model.bin``) let
    ``AutoModelForQuestionAnswering.from_pretrained(folder)`` read it; Haystack reads the same file with
    ``<Model>.from_pretrained("language_model.bin")``, which drops the base-model prefix and the QA head, and its
    head from ``prediction_head_0.bin`` as before. Returns the weights file; :class:`ExportError` for an encoder
    transformers has no QA class for (then ``folder`` is left as Haystack saved it).
    """
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise ExportError(f"{folder} holds no {WEIGHTS_FILE}; call share_weights after FARMReader.save(folder).")
    model = transformers_qa_model(adaptive_model)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    encoder = adaptive_model.language_model.model
    extra = {f"{model.base_model_prefix}.{name}": tensor.detach().cpu().float()
             for name, tensor in encoder.state_dict().items() if f"{model.base_model_prefix}.{name}" not in state}
    torch.save({**state, **extra}, folder / WEIGHTS_FILE)
    model.config.architectures = [type(model).__name__]
    model.config.torch_dtype = torch.float32
    model.config.save_pretrained(folder)
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": dict.fromkeys(sorted(state), WEIGHTS_FILE)}  # the pooler stays out: no warning
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return folder / WEIGHTS_FILE


def write_transformers_checkpoint(adaptive_model: Any, tokenizer: Any, directory: PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer into ``directory`` (a plain transformers
    folder; for a Haystack save use :func:`share_weights`, which adds no second copy of the weights).

    Example:
        >>> write_transformers_checkpoint(reader.inferencer.model, reader.inferencer.processor.tokenizer,
        ...                               "models/student")                             # doctest: +SKIP
    """
    directory = Path(directory)
    transformers_qa_model(adaptive_model).save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def export_transformers(reader: Any, directory: PathLike) -> Path:
    """Write a plain transformers QA checkpoint of a loaded reader into a new folder, atomically.

    Example:
        >>> export_transformers(reader, "models/student-hf")                             # doctest: +SKIP
    """
    with atomic_dir(Path(directory)) as tmp:
        write_transformers_checkpoint(reader.inferencer.model, reader.inferencer.processor.tokenizer, tmp)
    return Path(directory)


def is_reader_dir(path: PathLike) -> bool:
    """True for a Haystack reader save (``language_model.bin``), a transformers QA checkpoint or an ONNX export."""
    path = Path(path)
    if (path / "language_model.bin").is_file() or (path / ONNX_FILE).is_file():
        return True
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (ValueError, AttributeError):
        return False
    return any(a.endswith("ForQuestionAnswering") for a in architectures)


def max_opset() -> int:
    """The newest ONNX opset torch's exporter writes (23 for torch 2.13)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # a torch without that module: the versions known to export these encoders
        return 20
    return int(ONNX_MAX_OPSET)


def reader_config(reader_dir: PathLike) -> Tuple[str, Dict[str, Any]]:
    """``(file name, contents)`` of the encoder config a reader folder loads with (Haystack's
    ``language_model_config.json``, else ``config.json``); ``("", {})`` when neither is readable."""
    for name in ("language_model_config.json", "config.json"):
        try:
            config = json.loads((Path(reader_dir) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(config, dict):
            return name, config
    return "", {}


def check_export_args(reader_dir: PathLike, output: PathLike, fmt: str, opset: int = OPSET,
                      max_seq_len: int = HAYSTACK_MAX_SEQ_LEN, replace: bool = False) -> None:
    """Raise :class:`ExportError` (one line, naming the fix) before any model work: the format and opset, the
    reader folder (its weights files whole and tensors only, its positions enough for ``max_seq_len``) and an
    output that is new (``replace``: the caller checked it is an earlier export) and outside the reader folder."""
    from ..preflight import check_not_an_input, check_weight_files

    reader_dir, output = Path(reader_dir), Path(output)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if fmt == "onnx" and not MIN_OPSET <= opset <= max_opset():
        raise ExportError(f"--opset {opset} is not one the ONNX exporter can write for these encoders; pass an opset "
                          f"from {MIN_OPSET} to {max_opset()} (default {OPSET}).")
    if not reader_dir.is_dir():
        raise ExportError(f"{reader_dir} is not a folder; pass a saved reader folder (FARMReader.save or ours).")
    if (reader_dir / ONNX_FILE).is_file():
        raise ExportError(f"{reader_dir} is already an ONNX export; export from the reader folder it came from.")
    if not is_reader_dir(reader_dir):
        raise ExportError(f"{reader_dir} is not a reader folder (no language_model.bin, no transformers QA "
                          "config.json); pass a folder saved by FARMReader.save or a distillation run.")
    if not replace and output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"{output} already exists; choose a new output folder (export never overwrites).")
    check_not_an_input("--output", output, {"--reader": reader_dir})
    check_weight_files("--reader", reader_dir)
    name, config = reader_config(reader_dir)
    limit = max_positions(config)
    if limit is not None and max_seq_len > limit:
        raise ExportError(f"--max-seq-len {max_seq_len} is longer than the reader can read: its {name} has "
                          f"max_position_embeddings={config['max_position_embeddings']} ({limit} tokens); pass "
                          f"--max-seq-len {limit} or less (and --doc-stride, --max-query-length below it).")
    if fmt == "onnx":
        require_onnx()


def require_onnx() -> None:
    """Raise :class:`ExportError` naming the extra when onnx or onnxruntime is not installed."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"{' and '.join(missing)} not installed; run: pip install 'haystack-distill[onnx]'.")


def _example_inputs(tokenizer: Any, max_len: int = 64) -> Dict[str, torch.Tensor]:
    """Two padded question/context pairs: batch 2 and a non-trivial length (at most ``max_len``) for tracing."""
    batch = tokenizer(["who founded it?", "where?"], ["it was founded in paris in 1999 by a baker.", "in paris."],
                      padding=True, truncation="only_second", max_length=max_len, return_tensors="pt")
    if "token_type_ids" not in batch:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    return {name: batch[name] for name in ONNX_INPUTS}


class _QAOutputs(torch.nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> (start_logits, end_logits)`` for tracing."""

    def __init__(self, model: Any, token_types: bool) -> None:
        super().__init__()
        self.model, self.token_types = model, token_types

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: D102
        kwargs = {"token_type_ids": token_type_ids} if self.token_types else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs, return_dict=True)
        return out.start_logits, out.end_logits


def export_onnx_model(model: Any, tokenizer: Any, path: PathLike, opset: int = OPSET, max_len: int = 64) -> Path:
    """Trace a transformers QA model to ONNX: inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
    (int64, dynamic batch and sequence; the last only when the tokenizer emits it), outputs ``start_logits``,
    ``end_logits``. ``max_len``: the longest example input traced (at most the model's positions)."""
    import warnings

    token_types = "token_type_ids" in tokenizer.model_input_names
    inputs = _example_inputs(tokenizer, max_len)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*ONNX_INPUTS, *ONNX_OUTPUTS)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_QAOutputs(model.eval(), token_types), tuple(inputs.values()), str(path), dynamo=False,
                          input_names=list(ONNX_INPUTS), output_names=list(ONNX_OUTPUTS), dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True)
    return Path(path)


def quantize_onnx(source: PathLike, target: PathLike) -> Path:
    """Dynamic int8 weights (signed, one scale per output channel) for MatMul, Gather (the embedding matrices) and
    attention; the activations are quantized at run time. Per-channel scales keep a row with small weights from
    being rounded by the largest weight of its matrix (per-tensor int8 cost a 3-layer reader several times more
    F1; BENCHMARKS.md). Deterministic: the scales come from the weights alone."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gather", "Attention", "EmbedLayerNormalization"])
    return Path(target)


def write_haystack_onnx_configs(reader: Any, directory: Path, opset: int, token_types: bool) -> None:
    """Haystack 1.x's ONNX reader files (``FARMReader(dir)`` loads ``model.onnx`` with them)."""
    reader.inferencer.processor.save(directory)
    reader.inferencer.model.prediction_heads[0].save_config(directory, 0)
    config = {"task_type": "question_answering", "onnx_opset_version": opset,
              # Haystack feeds token_type_ids only to "Bert"; "Roberta" means input_ids + attention_mask
              "language_model_class": "Bert" if token_types else "Roberta",
              "language": reader.inferencer.model.language_model.language}
    (directory / "onnx_model_config.json").write_text(json.dumps(config, indent=2) + "\n")


def export_reader(reader: PathLike, output: PathLike, fmt: str = "onnx", int8: bool = False,
                  opset: int = OPSET, max_seq_len: int = HAYSTACK_MAX_SEQ_LEN, doc_stride: int = 128,
                  max_query_length: int = 64, replace: bool = False) -> Path:
    """Export a reader folder to a new ``output`` folder: ``fmt="transformers"`` (plain QA checkpoint) or
    ``"onnx"`` (``model.onnx`` + ``config.json`` + tokenizer + Haystack's ONNX configs), int8 weights with
    ``int8=True`` (ONNX only). ``max_seq_len``, ``doc_stride``, ``max_query_length``: the windows written into
    Haystack's configs (FARMReader's defaults). Refuses an existing non-empty ``output`` unless ``replace`` (an
    earlier export, swapped out in one rename); raises :class:`ExportError` on bad input.

    A model with one token type (``type_vocab_size=1``) gets no ``token_type_ids`` input and a tokenizer that
    emits none: every token is type 0, the only type it can embed.

    Example:
        >>> export_reader("models/student", "models/student-onnx-int8", fmt="onnx", int8=True)  # doctest: +SKIP
    """
    check_export_args(reader, output, fmt, opset, max_seq_len, replace)
    if int8 and fmt != "onnx":
        raise ExportError("--int8 needs --format onnx (torch's dynamic int8 is not a savable checkpoint).")
    loaded = load_reader(reader, max_seq_len=max_seq_len, doc_stride=doc_stride, max_query_length=max_query_length)
    tokenizer = loaded.inferencer.processor.tokenizer
    if getattr(loaded.inferencer.model.language_model.model.config, "type_vocab_size", 2) == 1:
        _drop_token_types(tokenizer)
    with atomic_dir(Path(output)) as tmp:
        if fmt == "transformers":
            write_transformers_checkpoint(loaded.inferencer.model, tokenizer, tmp)
        else:
            write_onnx_folder(loaded, tmp, int8, opset)
        write_model_card(tmp, export_card(Path(reader), Path(output).name, fmt, int8, opset))
    logger.info("exported %s to %s (%s%s)", reader, output, fmt, " int8" if int8 else "")
    return Path(output)


def _drop_token_types(tokenizer: Any) -> None:
    """Make ``tokenizer`` (and the one it saves) emit no ``token_type_ids``: for an encoder with one token type,
    which would fail on Haystack's and the tokenizer's type 1 for the context."""
    if "token_type_ids" in tokenizer.model_input_names:
        names = [name for name in tokenizer.model_input_names if name != "token_type_ids"]
        tokenizer.model_input_names = names
        tokenizer.init_kwargs["model_input_names"] = names
        logger.info("the reader's encoder has one token type (type_vocab_size=1): exported without token_type_ids")


def export_card(source: Path, name: str, fmt: str, int8: bool, opset: int = OPSET) -> Any:
    """The model card of an export of the reader folder ``source``: its origin, recipe and scores (from the
    source's run record, when it has one) and the export settings."""
    from ..model_card import base_model_of, numbers, settings
    from .output import RUN_MARKER, reader_card

    record_file = source / RUN_MARKER
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    card = reader_card(record, name, transformers=True)
    kind = "ONNX" + (" with int8 weights" if int8 else "") if fmt == "onnx" else "a plain transformers checkpoint"
    card.description = f"An extractive question-answering reader: `{source}` exported by haystack-distill as {kind}."
    card.base_model = base_model_of(source) or card.base_model
    card.settings = {**settings({"export_format": fmt, "int8": int8, "opset": opset if fmt == "onnx" else None}),
                     **card.settings}
    if fmt == "onnx":
        card.library_name, card.usage, card.tags = "onnx", "onnx-reader", (*card.tags, "onnx")
    if numbers(record.get("metrics") or {}):
        card.notes = ["The scores are the source folder's (PyTorch, fp32); this export was not evaluated."]
    return card


def write_onnx_folder(reader: Any, folder: Path, int8: bool, opset: int = OPSET) -> None:
    """``model.onnx`` (int8 weights with ``int8``), ``config.json``, tokenizer and Haystack's ONNX configs."""
    tokenizer = reader.inferencer.processor.tokenizer
    model = transformers_qa_model(reader.inferencer.model)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_haystack_onnx_configs(reader, folder, opset, "token_type_ids" in tokenizer.model_input_names)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = export_onnx_model(model, tokenizer, Path(scratch) / ONNX_FILE, opset,
                                 min(64, reader.inferencer.processor.max_seq_len))
        if int8:
            quantize_onnx(fp32, folder / ONNX_FILE)
        else:
            shutil.copyfile(fp32, folder / ONNX_FILE)


def load_reader(path: PathLike, **kwargs: Any) -> Any:
    """``FARMReader(path)`` on CPU without progress bars (Haystack, transformers QA or ONNX folder)."""
    from haystack.nodes import FARMReader

    return FARMReader(str(path), **{"use_gpu": False, "progress_bar": False, "num_processes": 0, **kwargs})


def torch_int8_reader(reader: Any) -> Any:
    """A copy of ``reader`` whose ``nn.Linear`` layers run torch's dynamic int8 (CPU); the original is kept.

    Example:
        >>> fast = torch_int8_reader(load_reader("models/student"))                      # doctest: +SKIP
    """
    quantized = copy.copy(reader)
    quantized.inferencer = copy.copy(reader.inferencer)
    model = copy.deepcopy(reader.inferencer.model).cpu().eval()
    quantized.inferencer.model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return quantized


def is_torch_quantized(model: Any) -> bool:
    """True when ``model`` holds torch.ao dynamic int8 ``Linear`` layers."""
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
