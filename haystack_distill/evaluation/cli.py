"""haystack-distill evaluate-reader: EM/F1, questions/s and size of readers on a SQuAD file, as one table.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["evaluate-reader", "--reader", "teacher=models/t", "models/s", "--squad", "dev.json"])
    >>> reader_paths(args.reader)
    {'teacher': 'models/t', 'models/s': 'models/s'}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

from ..cli import positive_int
from ..cli_options import (
    add_device,
    add_json,
    add_output,
    add_overwrite,
    add_quiet,
    add_reader_windows,
    print_result,
    status,
)


def reader_paths(specs: List[str]) -> Dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (named by itself) -> ``{name: path}``, in order; a repeated name is an error.
    A spec that exists as a path is a path, even with ``=`` in it."""
    readers: Dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep and not Path(spec).expanduser().exists() else (spec, spec)
        if not name or not path:
            raise ValueError(f"--reader {spec!r}: give PATH or NAME=PATH.")
        if name in readers:
            raise ValueError(f"--reader: the name {name!r} is given twice; name each reader with NAME=PATH.")
        readers[name] = path
    return readers


def check_inputs(args: argparse.Namespace, readers: Dict[str, str]) -> None:
    """Fail on a missing reader folder, a bad SQuAD file or an --output that is a folder, an input or an existing
    file (without --overwrite), before loading a model."""
    from ..preflight import check_model_path, check_output_file
    from ..squad import validate_squad_file

    for path in readers.values():
        check_model_path("--reader", path)
    validate_squad_file(args.squad)
    if args.output:
        check_output_file("--output", args.output, {"--squad": args.squad}, args.overwrite)


def _handler(args: argparse.Namespace) -> int:
    readers = reader_paths(args.reader)
    check_inputs(args, readers)
    from ..io import atomic_write_json
    from ..reader.cli import reader_device_kwargs
    from .reader import benchmark_reader, evaluation_progress, format_table

    kwargs = dict(max_seq_len=args.max_seq_len, doc_stride=args.doc_stride, max_query_length=args.max_query_length,
                  **reader_device_kwargs(args.device, loading=True))
    with evaluation_progress(not args.quiet):
        rows = benchmark_reader(readers, args.squad, max_questions=args.max_questions, repeats=args.repeats,
                                batch_size=args.batch_size, reader_kwargs=kwargs,
                                speed_questions=args.speed_questions,
                                status=lambda message: status(message, args.quiet))
    print_result(rows, args.json, table=format_table(rows))
    if args.output:
        atomic_write_json(args.output, rows)
        if not args.json:
            print(f"rows written to {args.output}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``evaluate-reader`` sub-command."""
    p = subparsers.add_parser(
        "evaluate-reader",
        help="EM/F1, questions/s and size of one or more readers on a SQuAD file (the benchmark's table)",
        description="Scores each reader's best span with the official SQuAD EM/F1; speed is the median of "
                    "--repeats timed runs; the first reader is the baseline of the relative columns.")
    p.add_argument("--reader", required=True, nargs="+", metavar="[NAME=]PATH",
                   help="saved reader folders (Haystack, transformers or ONNX export); the first is the baseline")
    p.add_argument("--squad", required=True, help="SQuAD-format file to evaluate on, e.g. dev-v1.1.json")
    p.add_argument("--max-questions", type=positive_int, help="evaluate on the first N questions (default: all)")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed runs; questions/s is their median")
    p.add_argument("--speed-questions", type=positive_int,
                   help="time the repeats on only the first N questions, after one scoring pass (default: time "
                        "the scoring runs)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="questions per predict_batch call")
    add_reader_windows(p)
    add_device(p, default="cpu", old_switches=True,
               help="where the readers run (cpu keeps speeds comparable across machines): auto (a GPU when there is "
                    "one), cpu, cuda, cuda:N or mps")
    add_output(p, "also write the rows as JSON to FILE (atomically)", required=False, metavar="FILE")
    add_overwrite(p, "an existing --output file")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_handler)
