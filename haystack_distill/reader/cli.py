"""haystack-distill distil-reader (prediction-layer distillation of a Haystack reader) and make-transfer, plus the
flags, input checks and model loading that distil-tinybert shares with distil-reader."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Type

from ..cli_options import (
    add_device,
    add_json,
    add_learning_rate,
    add_output,
    add_overwrite,
    add_quiet,
    add_reader_windows,
    print_result,
    status,
)
from ..preflight import check_data_files, check_input_file, check_model_path, check_output_file, check_output_folder

__all__ = ["check_model_path", "check_reader_inputs", "load_readers", "register"]


# ------------------------------------------------------------------------------------------ shared with tinybert
def check_reader_inputs(args: argparse.Namespace, parts: Sequence[str] = ()) -> None:
    """Pre-flight of the reader stages: the models, the SQuAD files and --output (``parts``: the sub-folders a run
    writes), before any model loads."""
    from .output import LEGACY_OUTPUT, RUN_MARKER

    check_model_path("--teacher", args.teacher)
    check_model_path("--student", args.student)
    files = {"--train-filename": args.train_filename, "--dev-filename": args.dev_filename,
             "--augmented-train-filename": getattr(args, "augmented_train_filename", None)}
    check_data_files(args.data_dir, files)
    for name in args.unlabeled_filename or []:
        check_data_files(args.data_dir, {"--unlabeled-filename": name})
    check_output_folder("--output", args.output, {"--teacher": args.teacher, "--student": args.student},
                        args.overwrite, args.resume, marker=RUN_MARKER, legacy=LEGACY_OUTPUT, parts=parts)


def check_stage_settings(args: argparse.Namespace, stages: Dict[str, Dict[str, Any]]) -> None:
    """Validate each stage's settings (``{"intermediate"|"prediction": keyword arguments}``) as the stage will,
    so a bad value (temperature 0, a weight above 1) is reported before the models load."""
    import warnings

    from .config import IntermediateLayerConfig, PredictionLayerConfig, ReaderStageConfig

    classes: Dict[str, Type[ReaderStageConfig]] = {"intermediate": IntermediateLayerConfig,
                                                   "prediction": PredictionLayerConfig}
    with warnings.catch_warnings():  # an old value's FutureWarning is shown once, by the stage itself
        warnings.simplefilter("ignore", FutureWarning)
        for name, kwargs in stages.items():
            fields = dict(kwargs, data_dir=args.data_dir, train_filename=args.train_filename,
                          unlabeled_filename=args.unlabeled_filename)
            classes[name].from_arguments(fields).validate()


def reader_device_kwargs(device: str, loading: bool = False) -> Dict[str, Any]:
    """``use_gpu``/``devices`` of --device for a reader stage, or for ``FARMReader(...)`` with ``loading``.

    Example:
        >>> reader_device_kwargs("cpu"), reader_device_kwargs("auto"), reader_device_kwargs("cuda:1")
        ({'use_gpu': False}, {}, {'devices': ['cuda:1']})
    """
    if device == "cpu":
        return {"use_gpu": False}
    if device == "auto":
        return {"use_gpu": True} if loading else {}
    return {"use_gpu": True, "devices": [device]} if loading else {"devices": [device]}


def load_readers(args: argparse.Namespace) -> Tuple[Any, Any]:
    """The teacher and the student as DistillableFARMReader, each announced by a status line."""
    from . import DistillableFARMReader

    kw = dict(max_seq_len=args.max_seq_len, doc_stride=args.doc_stride, max_query_length=args.max_query_length,
              progress_bar=False, **reader_device_kwargs(args.device, loading=True))
    with status(f"loading the teacher reader {args.teacher}", args.quiet):
        teacher = DistillableFARMReader(args.teacher, **kw)
    with status(f"loading the student reader {args.student}", args.quiet):
        student = DistillableFARMReader(args.student, **kw)
    return teacher, student


def add_reader_data(p: Any, output_help: str) -> None:
    """--teacher, --student, --data-dir, --train-filename, --dev-filename and --output (old: --save-dir)."""
    p.add_argument("--teacher", required=True, help="fine-tuned teacher reader (Haystack or transformers folder)")
    p.add_argument("--student", required=True, help="student model folder (same tokenizer as the teacher)")
    p.add_argument("--data-dir", required=True, help="folder of the SQuAD files")
    p.add_argument("--train-filename", required=True, help="SQuAD training file in --data-dir")
    p.add_argument("--dev-filename", help="SQuAD dev file in --data-dir: EM/F1 during and after training")
    add_output(p, output_help, aliases=("--save-dir", "--save_dir"))
    add_overwrite(p, "an earlier output in --output (a folder holding files we did not write is never replaced)")


def add_reader_run(p: Any) -> None:
    """--max-seq-len, --doc-stride, --max-query-length, --seed, --device (old: --cpu), --quiet, --json."""
    add_reader_windows(p)
    p.add_argument("--seed", type=int, default=42, help="training seed")
    add_device(p, old_switches=True)
    add_quiet(p)
    add_json(p)


def add_unlabeled(parser: Any, pseudo_labels: bool = True) -> None:
    """--unlabeled-filename (and the pseudo-label flags): the unlabelled-data settings of the reader stages."""
    parser.add_argument("--unlabeled-filename", metavar="FILE", nargs="+",
                        help="SQuAD file(s) in --data-dir of questions without labels (make-transfer's output, "
                             "augmented copies); they learn only from the teacher, their answers are ignored")
    if pseudo_labels:
        parser.add_argument("--pseudo-labels", action="store_true",
                            help="also train unlabelled questions on the teacher's best span when it is confident")
        parser.add_argument("--pseudo-label-threshold", type=float, default=0.5,
                            help="the teacher's span probability needed for a pseudo-label")


def add_hard_loss_padding(parser: Any) -> None:
    """--hard-loss-padding: the names and default of PredictionLayerConfig.hard_loss_padding (reader/config.py;
    tests compare them). max_seq_len, the old name of slices, is still accepted (the config warns and runs it as
    slices) but not listed."""
    parser.add_argument("--hard-loss-padding", default="padded", choices=["padded", "slices", "batch", "max_seq_len"],
                        metavar="{padded,slices,batch}",
                        help="padded: batches computed at max_seq_len, Haystack's exact loss; slices: faster steps "
                             "on length-sorted slices, the padding's share of the loss estimated; batch: slices, "
                             "the positions each slice holds; max_seq_len: the old name of slices (deprecated)")


# ---------------------------------------------------------------------------------------------- distil-reader
def prediction_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """Keyword arguments of distil_prediction_layer_from from the distil-reader flags (the teacher aside)."""
    return dict(data_dir=args.data_dir, train_filename=args.train_filename, dev_filename=args.dev_filename,
                batch_size=args.batch_size, n_epochs=args.epochs, learning_rate=args.learning_rate,
                save_dir=args.output, distillation_loss=args.loss, distillation_loss_weight=args.weight,
                temperature=args.temperature, caching=args.caching, seed=args.seed, resume=args.resume,
                checkpoint_every=args.checkpoint_every, checkpoint_root_dir=Path(args.checkpoint_dir),
                teacher_top_k=args.teacher_top_k,
                hard_loss_padding=args.hard_loss_padding, unlabeled_filename=args.unlabeled_filename,
                pseudo_labels=args.pseudo_labels, pseudo_label_threshold=args.pseudo_label_threshold,
                show_progress=not args.quiet, **reader_device_kwargs(args.device))


def _handler(args: argparse.Namespace) -> int:
    check_reader_inputs(args)
    kwargs = prediction_kwargs(args)
    check_stage_settings(args, {"prediction": kwargs})
    from ..evaluation.reader import evaluation_progress

    teacher, student = load_readers(args)
    with evaluation_progress(not args.quiet):
        metrics = student.distil_prediction_layer_from(teacher, **kwargs)
    print_result(metrics, args.json)
    return 0


def _register_distil_reader(subparsers: Any) -> None:
    p = subparsers.add_parser("distil-reader", help="prediction-layer KD of a FARMReader (teacher -> student)",
                              description="The student learns the teacher's start/end distributions beside the "
                                          "labels (Haystack's distil_prediction_layer_from, faster and resumable).")
    add_reader_data(p, "folder for the student (new, empty, or an earlier output with --overwrite)")
    p.add_argument("--batch-size", type=int, default=10, help="features per step")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training file")
    add_learning_rate(p, 3e-5)
    p.add_argument("--loss", default="kl_div", choices=["kl_div", "mse", "soft_ce"], help="KD loss on start/end")
    p.add_argument("--weight", type=float, default=0.5, help="distillation_loss_weight in [0, 1]")
    p.add_argument("--temperature", type=float, default=1.0, help="KD temperature")
    p.add_argument("--caching", action="store_true", help="keep teacher logits on disk for later runs")
    p.add_argument("--teacher-top-k", type=int, help="cache only the teacher's k most likely start/end positions")
    add_hard_loss_padding(p)
    p.add_argument("--checkpoint-dir", default="model_checkpoints",
                   help="checkpoints go to its prediction_layer sub-folder; one folder per run")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (none if unset)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest checkpoint")
    add_unlabeled(p)
    add_reader_run(p)
    p.set_defaults(func=_handler)


# ---------------------------------------------------------------------------------------------- make-transfer
def _transfer_handler(args: argparse.Namespace) -> int:
    check_input_file("--questions", args.questions)
    from pathlib import Path

    if not Path(args.documents).expanduser().exists():
        raise FileNotFoundError(f"--documents {args.documents}: no such file or folder.")
    check_output_file("--output", args.output, {"--questions": args.questions, "--documents": args.documents},
                      args.overwrite)
    from .transfer import make_transfer

    with status(f"retrieving {args.top_k} contexts per question from {args.documents}", args.quiet):
        report = make_transfer(args.questions, args.documents, args.output, top_k=args.top_k,
                               overwrite=args.overwrite)
    result = {"output": str(report.output), "questions": report.questions, "paragraphs": report.paragraphs,
              "question-context pairs": report.pairs}
    print_result(result, args.json)
    if not args.json and not args.quiet:
        print(f"pass {report.output} to distil-reader or distil-tinybert as --unlabeled-filename")
    return 0


def _register_make_transfer(subparsers: Any) -> None:
    t = subparsers.add_parser("make-transfer", help="unlabelled transfer data: your questions with the contexts BM25 "
                                                    "finds in your documents")
    t.add_argument("--questions", required=True, help="text file, one question per line (or a JSON list)")
    t.add_argument("--documents", required=True,
                   help="a .txt file or folder of them (paragraphs split by blank lines), or a SQuAD .json file")
    add_output(t, "the SQuAD file to write")
    add_overwrite(t, "an existing --output file")
    t.add_argument("--top-k", type=int, default=3, help="contexts retrieved per question")
    add_quiet(t)
    add_json(t)
    t.set_defaults(func=_transfer_handler)


def register(subparsers: Any) -> None:
    """Add the distil-reader and make-transfer sub-commands."""
    _register_distil_reader(subparsers)
    _register_make_transfer(subparsers)
