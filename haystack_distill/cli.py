"""``haystack-distill`` command line: one sub-command per feature, registered by its own module.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)`` which adds its parsers and sets
``func`` to a handler taking the parsed ``argparse.Namespace`` and returning an exit code. Heavy imports
(torch, Haystack) happen inside the handlers, so ``haystack-distill --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

COMMAND_MODULES = (
    "haystack_distill.demo",
    "haystack_distill.reader.cli",
    "haystack_distill.reader.export_cli",
    "haystack_distill.general_cli",
    "haystack_distill.embeddings.cli",
    "augment.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="haystack-distill", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks for errors")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a feature not installed in this checkout
            if err.name and name.startswith(err.name):
                continue
            raise
        module.register(subparsers)
    for sub in subparsers.choices.values():  # --debug also after the sub-command
        if "--debug" not in sub._option_string_actions:
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error")
    return parser


#: Bad input (arguments, files, models, folders, checkpoints): one line on stderr and exit code 2.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (Hugging Face's messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run the sub-command; errors print one line (exit 2 for bad input, 1 for a diverged run) unless
    ``--debug``/``--verbose`` asks for the traceback."""
    from .safety import DivergenceError

    try:
        return int(args.func(args) or 0)
    except (DivergenceError, *USER_ERRORS) as err:
        if args.verbose or getattr(args, "debug", False):
            raise
        print(f"haystack-distill {args.command}: error: {one_line(err)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1 if isinstance(err, DivergenceError) else 2


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
