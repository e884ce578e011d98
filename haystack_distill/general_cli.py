"""``haystack-distill distil-general``: general distillation of an encoder on plain text from the terminal."""

from __future__ import annotations

import argparse
import json
from typing import Any, List


def _keep(value: str) -> List[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--keep takes comma-separated layer indices like 0,2,5, got {value!r}") \
            from err


def _handler(args: argparse.Namespace) -> int:
    from .general import GeneralDistillationConfig, distil_general

    config = GeneralDistillationConfig(
        layers=args.layers, keep=args.keep, student=args.student, epochs=args.epochs, max_seq_len=args.max_seq_len,
        batch_size=args.batch_size, learning_rate=args.learning_rate, attention_weight=args.attention_weight,
        seed=args.seed, resume=not args.restart, show_progress=not args.quiet)
    result = distil_general(args.teacher, args.texts, args.output, config)  # errors: one line, via cli.run_command
    print(json.dumps(result, indent=2, default=str))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``distil-general`` sub-command."""
    d = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser("distil-general", formatter_class=d,
                              help="general distillation (TinyBERT step 1): a shallower encoder learns the "
                                   "teacher's hidden states and attention on plain text")
    p.add_argument("--teacher", required=True, help="encoder folder to learn from (transformers format)")
    p.add_argument("--texts", required=True, help="plain-text file, one paragraph per line")
    p.add_argument("--output", required=True, help="new folder for the student (transformers format)")
    p.add_argument("--layers", type=int, help="student depth; the kept teacher layers are spread, first and last kept")
    p.add_argument("--keep", type=_keep, help="teacher layers the student starts from, e.g. 0,2,5")
    p.add_argument("--student", help="start from this encoder folder instead of a cut of the teacher")
    p.add_argument("--epochs", type=int, default=3, help="passes over the text windows")
    p.add_argument("--max-seq-len", type=int, default=128, help="tokens per window; longer lines become windows")
    p.add_argument("--batch-size", type=int, default=32, help="windows per step")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW peak learning rate")
    p.add_argument("--attention-weight", type=float, default=0.01,
                   help="weight of the attention-score MSE (0: off); its values are ~80x the hidden-state MSE")
    p.add_argument("--seed", type=int, default=42, help="training seed")
    p.add_argument("--restart", action="store_true", help="ignore checkpoints of an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_handler)
