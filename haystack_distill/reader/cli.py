"""``haystack-distill distil-reader``: prediction-layer distillation of a Haystack reader from the terminal."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def _handler(args: argparse.Namespace) -> int:
    from . import DistillableFARMReader

    kw = dict(use_gpu=not args.cpu, max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
              max_query_length=args.max_query_length, progress_bar=False)
    for flag, name in (("--teacher", args.teacher), ("--student", args.student)):
        check_model_path(flag, name)
    teacher = DistillableFARMReader(args.teacher, **kw)
    student = DistillableFARMReader(args.student, **kw)
    metrics = student.distil_prediction_layer_from(
        teacher, data_dir=args.data_dir, train_filename=args.train_filename, dev_filename=args.dev_filename,
        batch_size=args.batch_size, n_epochs=args.epochs, learning_rate=args.learning_rate, save_dir=args.save_dir,
        distillation_loss=args.loss, distillation_loss_weight=args.weight, temperature=args.temperature,
        caching=args.caching, seed=args.seed, resume=args.resume, checkpoint_every=args.checkpoint_every,
        teacher_top_k=args.teacher_top_k, hard_loss_padding=args.hard_loss_padding,
        unlabeled_filename=args.unlabeled_filename, pseudo_labels=args.pseudo_labels,
        pseudo_label_threshold=args.pseudo_label_threshold)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def _transfer_handler(args: argparse.Namespace) -> int:
    from .transfer import make_transfer

    report = make_transfer(args.questions, args.documents, args.output, top_k=args.top_k, overwrite=args.overwrite)
    print(f"wrote {report.output}: {report.questions} questions, {report.paragraphs} paragraphs, "
          f"{report.pairs} question-context pairs (pass it as --unlabeled-filename)")
    return 0


def add_unlabeled(parser: Any, pseudo_labels: bool = True) -> None:
    """``--unlabeled-filename`` (and the pseudo-label flags): the unlabelled-data settings of the reader stages."""
    parser.add_argument("--unlabeled-filename", metavar="FILE",
                        help="SQuAD file in --data-dir of questions without labels (make-transfer's output); "
                             "they learn only from the teacher, their answers are ignored")
    if pseudo_labels:
        parser.add_argument("--pseudo-labels", action="store_true",
                            help="also train unlabelled questions on the teacher's best span when it is confident")
        parser.add_argument("--pseudo-label-threshold", type=float, default=0.5,
                            help="the teacher's span probability needed for a pseudo-label")


def check_model_path(flag: str, name: str) -> None:
    """A missing local folder is named as such, not as a failed download from the hub."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if not Path(name).expanduser().exists() and (offline or looks_local):
        raise FileNotFoundError(f"{flag} {name}: no such folder. Pass the folder of a saved reader (Haystack or "
                                "transformers format)" + (", or unset HF_HUB_OFFLINE to download a hub model."
                                                          if offline else "."))


def add_hard_loss_padding(parser: Any) -> None:
    """``--hard-loss-padding``: the names and default of ``PredictionLayerConfig.hard_loss_padding``
    (reader/config.py; tests compare them). ``max_seq_len``, the old name of ``slices``, is still accepted (the
    config warns and runs it as ``slices``) but not listed."""
    parser.add_argument("--hard-loss-padding", default="padded", choices=["padded", "slices", "batch", "max_seq_len"],
                        metavar="{padded,slices,batch}",
                        help="padded: batches computed at max_seq_len, Haystack's exact loss; slices: faster steps "
                             "on length-sorted slices, the padding's share of the loss estimated; batch: slices, "
                             "the positions each slice holds; max_seq_len: the old name of slices (deprecated)")


def register(subparsers: Any) -> None:
    """Add the ``distil-reader`` sub-command."""
    p = subparsers.add_parser("distil-reader", help="prediction-layer KD of a FARMReader (teacher -> student)")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher reader (Haystack or transformers folder)")
    p.add_argument("--student", required=True, help="student model folder (same tokenizer as the teacher)")
    p.add_argument("--data-dir", required=True, help="folder of the SQuAD files")
    p.add_argument("--train-filename", required=True, help="SQuAD training file in --data-dir")
    p.add_argument("--dev-filename", help="SQuAD dev file in --data-dir: EM/F1 during and after training")
    p.add_argument("--save-dir", required=True, help="output folder (new, empty or a previous output)")
    p.add_argument("--batch-size", type=int, default=10, help="features per step")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training file")
    p.add_argument("--learning-rate", type=float, default=3e-5, help="AdamW peak learning rate")
    p.add_argument("--loss", default="kl_div", choices=["kl_div", "mse", "soft_ce"], help="KD loss on start/end")
    p.add_argument("--weight", type=float, default=0.5, help="distillation_loss_weight in [0, 1]")
    p.add_argument("--temperature", type=float, default=1.0, help="KD temperature")
    p.add_argument("--max-seq-len", type=int, default=256, help="tokens per feature")
    p.add_argument("--doc-stride", type=int, default=128, help="overlap of a long context's windows")
    p.add_argument("--max-query-length", type=int, default=64, help="question tokens kept")
    p.add_argument("--caching", action="store_true", help="keep teacher logits on disk for later runs")
    p.add_argument("--teacher-top-k", type=int, help="cache only the teacher's k most likely start/end positions")
    add_hard_loss_padding(p)
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (none if unset)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest checkpoint")
    p.add_argument("--seed", type=int, default=42, help="training seed")
    add_unlabeled(p)
    p.add_argument("--cpu", action="store_true", help="never use a GPU")
    p.set_defaults(func=_handler)
    t = subparsers.add_parser("make-transfer", help="unlabelled transfer data: your questions with the contexts BM25 "
                                                    "finds in your documents")
    t.add_argument("--questions", required=True, help="text file, one question per line (or a JSON list)")
    t.add_argument("--documents", required=True,
                   help="a .txt file or folder of them (paragraphs split by blank lines), or a SQuAD .json file")
    t.add_argument("--output", required=True, help="the SQuAD file to write (refused if it exists)")
    t.add_argument("--top-k", type=int, default=3, help="contexts retrieved per question")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    t.set_defaults(func=_transfer_handler)
