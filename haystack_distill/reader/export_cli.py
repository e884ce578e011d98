"""``haystack-distill export-reader``: a reader folder -> a plain transformers or ONNX (optionally int8) folder."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional


def _handler(args: argparse.Namespace) -> int:
    from .export import ExportError, check_export_args, export_reader

    try:
        check_export_args(args.reader, args.output, args.format)  # bad input fails before torch/Haystack load
        if args.int8 and args.format != "onnx":
            raise ExportError("--int8 needs --format onnx (torch's dynamic int8 is not a savable checkpoint).")
        output = export_reader(args.reader, args.output, fmt=args.format, int8=args.int8, opset=args.opset)
    except (ExportError, FileNotFoundError, OSError) as err:
        if args.debug:
            raise
        print(f"export-reader: error: {err}", file=sys.stderr)
        return 2
    files = {p.name: p.stat().st_size for p in sorted(output.iterdir()) if p.is_file()}
    print(json.dumps({"output": str(output), "format": args.format, "int8": args.int8,
                      "mb": round(sum(files.values()) / 2**20, 2), "files": files}, indent=2))
    return 0


def register(subparsers: Any, parents: Optional[list] = None) -> None:
    """Add the ``export-reader`` sub-command."""
    p = subparsers.add_parser("export-reader", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                              help="export a reader folder as a plain transformers QA checkpoint or an ONNX model "
                                   "(--int8: dynamic int8 weights) for transformers, onnxruntime or Haystack 2.x")
    p.add_argument("--reader", required=True, help="saved reader folder (Haystack format or transformers QA)")
    p.add_argument("--output", required=True, help="new folder to write; an existing non-empty one is refused")
    p.add_argument("--format", default="onnx", help="transformers | onnx")
    p.add_argument("--int8", action="store_true", help="ONNX only: int8 weights, embeddings included")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--debug", action="store_true", help="show tracebacks for bad input")
    p.set_defaults(func=_handler)
