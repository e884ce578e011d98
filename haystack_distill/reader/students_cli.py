"""``haystack-distill make-student``: the recommended student reader, chosen layers of a base encoder (fresh QA head)
or of a reader (its head), through :func:`haystack_distill.reader.students.make_student`.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["make-student", "--from", "base", "--keep", "0,2,5", "--output", "s"])
    >>> args.source, args.layers, args.keep
    ('base', None, [0, 2, 5])
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

from ..cli import positive_int
from ..cli_options import add_json, add_output, add_overwrite, add_quiet, print_result, status


def layer_list(text: str) -> List[int]:
    """argparse type: comma-separated 0-based layer indices like ``0,2,5``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices like 0,2,5, got {text!r}") from err


def summary(result: Dict[str, Any]) -> str:
    """One line saying what was built, e.g. ``models/s: layers [0, 2, 4] of 6 of base (encoder), QA head fresh``."""
    return (f"{result['output']}: layers {result['keep']} of {result['source_layers']} of {result['source']} "
            f"({result['source_kind']}), QA head {result['qa_head']}")


def _handler(args: argparse.Namespace) -> int:
    from .students import make_student

    with status(f"building a student from {args.source}", args.quiet):
        result = make_student(args.source, args.layers, args.output, keep=args.keep, seed=args.seed,
                              overwrite=args.overwrite)  # errors: one line, via cli.run_command
    print_result(result, args.json, table=summary(result))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``make-student`` sub-command."""
    p = subparsers.add_parser(
        "make-student", help="build a student reader from chosen layers of an encoder (fresh QA head) or a reader",
        description="Keep some layers of a base encoder (a new, seeded QA head is added) or of a reader (its QA head "
                    "is kept) and save the result as a reader folder that FARMReader loads.")
    p.add_argument("--from", dest="source", required=True, metavar="ENCODER_OR_READER",
                   help="encoder folder (transformers or sentence-transformers, config.json at its top) or reader "
                        "folder (FARMReader.save or a transformers QA checkpoint)")
    p.add_argument("--layers", type=positive_int, metavar="N",
                   help="student depth: every (n/N)-th layer from the first (6 layers -> 3 keeps 0,2,4)")
    p.add_argument("--keep", type=layer_list, metavar="I,J,...", help="these layers instead (0-based), e.g. 0,2,5")
    add_output(p, "new folder for the student reader", aliases=("--save-dir",))
    add_overwrite(p, "an existing --output folder written by this tool")
    p.add_argument("--seed", type=int, default=42, help="seed of the fresh QA head")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_handler)
