"""haystack-distill distil-embeddings and haystack-distill eval-sts.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["eval-sts", "--model", "m", "--sts", "sts-test.csv"])
    >>> args.model, args.sts
    (['m'], 'sts-test.csv')
"""

from __future__ import annotations

import argparse
import logging
import random
from typing import Any, Dict, List

from haystack_distill.cli_options import (
    add_device,
    add_json,
    add_learning_rate,
    add_output,
    add_overwrite,
    add_quiet,
    print_result,
    status,
    torch_device,
)

logger = logging.getLogger(__name__)


def _int_list(text: str) -> List[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices like 0,2,5, got {text!r}") from err


def register(subparsers: Any) -> None:
    """Add the ``distil-embeddings`` and ``eval-sts`` sub-commands."""
    p = subparsers.add_parser(
        "distil-embeddings", help="distil a sentence-transformers model into a smaller student",
        description="Train a student to reproduce a teacher's sentence embeddings (MSE on cached teacher outputs).")
    p.add_argument("--teacher", required=True, help="sentence-transformers folder of the teacher")
    student = p.add_mutually_exclusive_group(required=True)
    student.add_argument("--layers", type=int, help="student = teacher keeping N layers spread evenly")
    student.add_argument("--keep", type=_int_list, help="student = teacher keeping these layers, e.g. 0,2,5")
    student.add_argument("--student", help="an existing sentence-transformers folder to train (any tokenizer)")
    p.add_argument("--sentences", required=True, nargs="+", help="UTF-8 text file(s), one sentence per line")
    p.add_argument("--max-sentences", type=int, help="train on a random sample of this many sentences")
    add_output(p, "folder for the student (must not exist unless --overwrite)", aliases=("--output-dir",))
    add_overwrite(p, "an earlier output in --output (a folder holding files we did not write is never replaced)")
    p.add_argument("--dev-sts", help="STS-B format file; the checkpoint with the best dev Spearman is kept")
    p.add_argument("--evaluation-steps", type=int, default=0, help="evaluate every N steps (0: every epoch)")
    p.add_argument("--loss", choices=("mse", "cosine"), default="mse", help="student-vs-teacher embedding loss")
    p.add_argument("--epochs", type=int, default=1, help="passes over the sentences")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per step")
    add_learning_rate(p, 1e-4)
    p.add_argument("--freeze-word-embeddings", action="store_true",
                   help="keep the token-embedding matrix fixed (much less optimizer work on a CPU)")
    p.add_argument("--pca-dim", type=int, help="then append a PCA head reducing embeddings to this size")
    p.add_argument("--cache-dir", help="teacher-embedding cache (default ~/.cache/haystack_distill)")
    p.add_argument("--seed", type=int, default=42, help="seed of sampling and training")
    add_device(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=distil_command)

    e = subparsers.add_parser("eval-sts", help="STS Spearman (cosine vs gold) of sentence-transformers models",
                              description="Spearman correlation x100 between cosine similarity and gold scores.")
    e.add_argument("--model", required=True, action="append", help="model folder (repeat to compare)")
    e.add_argument("--sts", required=True, help="STS-B format file, e.g. ../shared/data/stsbenchmark/sts-test.csv")
    e.add_argument("--batch-size", type=int, default=64, help="sentences per encoding batch")
    add_device(e)
    add_quiet(e)
    add_json(e)
    e.set_defaults(func=eval_sts_command)


def _read_training_sentences(args: argparse.Namespace) -> List[str]:
    from haystack_distill.embeddings.sentences import dedupe, read_sentences

    sentences = dedupe(s for path in args.sentences for s in read_sentences(path))
    if args.max_sentences is not None:
        if args.max_sentences < 1:
            raise ValueError(f"--max-sentences must be >= 1, got {args.max_sentences}.")
        if args.max_sentences < len(sentences):
            sentences = random.Random(args.seed).sample(sentences, args.max_sentences)
    return sentences


def check_distil_inputs(args: argparse.Namespace) -> None:
    """Pre-flight of distil-embeddings: --output, the model folders and the sentence files, before any model loads."""
    from haystack_distill.embeddings.model_io import check_embeddings_output, check_sentence_transformer_path
    from haystack_distill.preflight import check_input_file, check_not_an_input

    check_not_an_input("--output", args.output, {"--teacher": args.teacher, "--student": args.student})
    check_embeddings_output(args.output, args.overwrite, [args.teacher, args.student])
    for path in args.sentences:
        check_input_file("--sentences", path)
    check_input_file("--dev-sts", args.dev_sts)
    check_sentence_transformer_path(args.teacher)
    if args.student:
        check_sentence_transformer_path(args.student)


def _load(path: str, role: str, args: argparse.Namespace) -> Any:
    from haystack_distill.embeddings.model_io import load_sentence_transformer

    with status(f"loading the {role} {path}", args.quiet):
        return load_sentence_transformer(path, device=torch_device(args.device))


def distil_command(args: argparse.Namespace) -> int:
    """Handler of distil-embeddings; returns an exit code (bad input: an error, printed by cli.run_command)."""
    check_distil_inputs(args)
    from haystack_distill.embeddings.pca import check_pca_dim

    sentences = _read_training_sentences(args)
    dev = None
    if args.dev_sts:
        from haystack_distill.embeddings.sts import read_sts

        dev = read_sts(args.dev_sts)
    from haystack_distill.embeddings.distil import distil_embeddings_from
    from haystack_distill.embeddings.model_io import save_sentence_transformer
    from haystack_distill.embeddings.truncate import truncate_layers

    teacher = _load(args.teacher, "teacher", args)
    if args.pca_dim is not None:
        check_pca_dim(args.pca_dim, teacher.get_sentence_embedding_dimension(), len(sentences))
    student = (_load(args.student, "student", args) if args.student
               else truncate_layers(teacher, args.keep if args.keep is not None else args.layers))
    metrics: Dict[str, Any] = distil_embeddings_from(
        student, teacher, sentences, loss=args.loss, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, dev_sts=dev, evaluation_steps=args.evaluation_steps,
        cache_dir=args.cache_dir, freeze_word_embeddings=args.freeze_word_embeddings, seed=args.seed,
        show_progress_bar=not args.quiet)
    metrics["teacher_path"] = str(args.teacher)
    metrics["sentences_files"] = [str(path) for path in args.sentences]
    if args.pca_dim is not None:
        from haystack_distill.embeddings.pca import reduce_dimensions

        sample = random.Random(args.seed).sample(sentences, min(len(sentences), 20000))
        student = reduce_dimensions(student, sample, args.pca_dim)
        metrics["pca_dim"] = args.pca_dim
    save_sentence_transformer(student, args.output, args.overwrite, extra_json={"distillation_metrics.json": metrics},
                              inputs=[args.teacher])
    if args.json:
        print_result({"output": str(args.output), **metrics}, as_json=True)
    else:
        _print_summary(metrics, args.output)
    return 0


def _print_summary(metrics: Dict[str, Any], output: str) -> None:
    best, teacher_dev = metrics.get("best"), metrics.get("teacher_dev")
    print(f"student saved to {output}")
    print(f"  sentences {metrics['sentences']}, steps {metrics['steps']}, {metrics['seconds']} s, "
          f"teacher cache {'reused' if metrics['cache']['hit'] else 'computed'}")
    print(f"  mean loss per epoch: {', '.join(f'{x:.4g}' for x in metrics['epoch_losses'])}")
    if best and "sts_spearman" in best:
        line = f"  dev STS Spearman x100: student {100 * best['sts_spearman']:.2f} (step {best['step']})"
        if teacher_dev:
            line += f", teacher {100 * teacher_dev['sts_spearman']:.2f}"
        print(line)


def eval_sts_command(args: argparse.Namespace) -> int:
    """Handler of eval-sts: one row per model (a table, or JSON with --json); returns an exit code."""
    from haystack_distill.embeddings.model_io import check_sentence_transformer_path
    from haystack_distill.embeddings.sts import read_sts

    pairs = read_sts(args.sts)
    for path in args.model:
        check_sentence_transformer_path(path)
    from haystack_distill.embeddings.sts import evaluate_sts

    rows = []
    for path in args.model:
        model = _load(path, "model", args)
        with status(f"scoring {path} on {len(pairs)} pairs", args.quiet):
            score = evaluate_sts(model, pairs, batch_size=args.batch_size)
        rows.append({"model": path, "dim": model.get_sentence_embedding_dimension(), "spearman_x100": 100 * score})
    print_result(rows, args.json, table=_sts_table(rows, len(pairs), args.sts))
    return 0


def _sts_table(rows: List[Dict[str, Any]], pairs: int, sts: str) -> str:
    width = max(len("model"), *(len(r["model"]) for r in rows))
    lines = [f"{'model':<{width}}  {'dim':>5}  {'Spearman x100':>13}  (cosine vs gold, {pairs} pairs of {sts})"]
    lines += [f"{r['model']:<{width}}  {r['dim']:>5}  {r['spearman_x100']:>13.2f}" for r in rows]
    return "\n".join(lines)
