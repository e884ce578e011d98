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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a feature not installed in this checkout
            if err.name and name.startswith(err.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
