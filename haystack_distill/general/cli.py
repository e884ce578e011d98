"""haystack-distill distil-general: general distillation of an encoder on plain text from the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List

from ..cli_options import (
    add_device,
    add_json,
    add_learning_rate,
    add_output,
    add_overwrite,
    add_quiet,
    print_result,
    status,
)
from ..defaults import ATTENTION_WEIGHT


def _keep(value: str) -> List[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--keep takes comma-separated layer indices like 0,2,5, got {value!r}") \
            from err


def check_inputs(args: argparse.Namespace) -> None:
    """Pre-flight: the teacher (and student) folders, the text file and --output, before any model loads.

    An earlier output is retrained only with --overwrite (or continued with --resume), as in distil-embeddings;
    an interrupted run, which leaves no output yet, resumes from its checkpoints without either."""
    from ..preflight import check_input_file, check_model_folder, check_output_folder

    check_model_folder("--teacher", args.teacher)
    check_model_folder("--student", args.student)
    check_input_file("--texts", args.texts)
    check_output_folder("--output", args.output, {"--teacher": args.teacher, "--student": args.student,
                                                  "--texts": args.texts}, args.overwrite, args.resume)
    output = Path(args.output).expanduser()
    checkpoints = output.with_name(f"{output.name}.checkpoints")
    if args.resume and not args.overwrite and output.is_dir() and not any(checkpoints.glob("step-*")):
        raise FileNotFoundError(f"--resume: no checkpoint in {checkpoints} to continue; --output {args.output} is a "
                                "finished run. Pass --overwrite to retrain it, or choose a new --output.")


def _device(name: str) -> str:
    """The torch device of --device (auto: CUDA when present)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _handler(args: argparse.Namespace) -> int:
    check_inputs(args)
    from .config import GeneralDistillationConfig
    from .distil import distil_general

    config = GeneralDistillationConfig(
        layers=args.layers, keep=args.keep, student=args.student, epochs=args.epochs, max_seq_len=args.max_seq_len,
        batch_size=args.batch_size, learning_rate=args.learning_rate, attention_weight=args.attention_weight,
        seed=args.seed, resume=not args.restart, show_progress=not args.quiet,
        device=_device(args.device))
    with status(f"general distillation of {args.teacher} on {args.texts}: loading the teacher", args.quiet):
        result = distil_general(args.teacher, args.texts, args.output, config)  # errors: one line, cli.run_command
    print_result(result, args.json)
    return 0


def register(subparsers: Any) -> None:
    """Add the distil-general sub-command."""
    p = subparsers.add_parser("distil-general",
                              help="general distillation (TinyBERT step 1): a shallower encoder learns the "
                                   "teacher's hidden states and attention on plain text")
    p.add_argument("--teacher", required=True, help="encoder folder to learn from (transformers format)")
    p.add_argument("--texts", required=True, help="plain-text file, one paragraph per line")
    add_output(p, "folder for the student (transformers format); an earlier output only with --overwrite or "
                  "--resume", aliases=("--output-dir", "--save-dir"))
    add_overwrite(p, "an earlier output in --output (retrain from the start)")
    p.add_argument("--layers", type=int, help="student depth; the kept teacher layers are spread, first and last kept")
    p.add_argument("--keep", type=_keep, help="teacher layers the student starts from, e.g. 0,2,5")
    p.add_argument("--student", help="start from this encoder folder instead of a cut of the teacher")
    p.add_argument("--epochs", type=int, default=3, help="passes over the text windows")
    p.add_argument("--max-seq-len", type=int, default=128, help="tokens per window; longer lines become windows")
    p.add_argument("--batch-size", type=int, default=32, help="windows per step")
    add_learning_rate(p, 1e-4)
    p.add_argument("--attention-weight", type=float, default=ATTENTION_WEIGHT,
                   help="weight of the attention-score MSE (0: off); its values are ~80x the hidden-state MSE")
    p.add_argument("--seed", type=int, default=42, help="training seed")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run of an existing --output from its checkpoints (a run that "
                        "left no output yet resumes without it)")
    p.add_argument("--restart", action="store_true", help="ignore checkpoints of an interrupted run")
    add_device(p, default="cpu")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_handler)
