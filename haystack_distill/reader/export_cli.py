"""haystack-distill export-reader: a reader folder -> a plain transformers or ONNX (optionally int8) folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional

from ..cli_options import add_json, add_output, add_overwrite, add_quiet, add_reader_windows, print_result, status


def is_export(folder: Path) -> bool:
    """True for a folder export-reader wrote: model.onnx, or a transformers checkpoint without Haystack's files."""
    if (folder / "model.onnx").is_file():
        return True
    return (folder / "config.json").is_file() and not (folder / "language_model.bin").is_file() and any(
        folder.glob("*.safetensors"))


def check_export_inputs(args: argparse.Namespace) -> None:
    """Pre-flight: the reader folder (its weights and positions), --format/--opset/--int8 and --output (an
    earlier export only with --overwrite, never inside the reader folder)."""
    from .export import ExportError, check_export_args

    output = Path(args.output).expanduser()
    existing = output.is_file() or (output.is_dir() and any(output.iterdir()))
    if existing and not args.overwrite:
        raise FileExistsError(f"--output {args.output} already exists; pass --overwrite to replace an earlier "
                              "export, or choose a new folder.")
    if existing and not is_export(output):
        raise ExportError(f"--output {args.output} is not an earlier export (no model.onnx or transformers "
                          "checkpoint); --overwrite replaces only an export. Choose another --output.")
    check_export_args(args.reader, output, args.format, args.opset, args.max_seq_len, replace=existing)
    if args.int8 and args.format != "onnx":
        raise ExportError("--int8 needs --format onnx (torch's dynamic int8 is not a savable checkpoint).")


def _handler(args: argparse.Namespace) -> int:
    check_export_inputs(args)  # bad input fails before torch/Haystack load
    from .export import export_reader

    what = f"{args.format}{' int8' if args.int8 else ''}"
    with status(f"exporting {args.reader} to {args.output} ({what})", args.quiet):
        existing = Path(args.output).expanduser()
        output = export_reader(args.reader, existing, fmt=args.format, int8=args.int8, opset=args.opset,
                               max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
                               max_query_length=args.max_query_length,
                               replace=args.overwrite and existing.is_dir() and any(existing.iterdir()))
    from ..evaluation.size import model_size

    files: Dict[str, int] = {p.name: p.stat().st_size for p in sorted(output.iterdir()) if p.is_file()}
    print_result({"output": str(output), "format": args.format, "int8": args.int8,
                  "mb": round(model_size(output).mb, 2), "files": files}, args.json)
    return 0


def register(subparsers: Any, parents: Optional[list] = None) -> None:
    """Add the export-reader sub-command."""
    p = subparsers.add_parser("export-reader",
                              help="export a reader folder as a plain transformers QA checkpoint or an ONNX model "
                                   "(--int8: dynamic int8 weights) for transformers, onnxruntime or Haystack 2.x")
    p.add_argument("--reader", required=True, help="saved reader folder (Haystack format or transformers QA)")
    add_output(p, "new folder to write (an existing one only with --overwrite)")
    add_overwrite(p, "an earlier export in --output (never another kind of folder)")
    p.add_argument("--format", default="onnx", help="onnx or transformers")
    p.add_argument("--int8", action="store_true", help="ONNX only: int8 weights, embeddings included")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (10 up to the newest your torch writes)")
    add_reader_windows(p)  # the windows written into Haystack's configs; --max-seq-len at most the model's positions
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_handler)
