"""haystack-distill distil-tinybert: TinyBERT's task distillation of a reader (intermediate layers, then the
prediction layer) from the terminal, through DistillationMixin.distil_tinybert_from."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Union

from ..cli import fraction, positive_float, positive_int
from ..cli_options import print_result
from ..defaults import ATTENTION_WEIGHT
from .cli import (
    add_hard_loss_padding,
    add_reader_data,
    add_reader_run,
    add_unlabeled,
    check_reader_inputs,
    check_stage_settings,
    load_readers,
    reader_device_kwargs,
)
from .presets import TINYBERT_INTERMEDIATE, TINYBERT_PREDICTION

STAGE_FOLDERS = ("stage1_intermediate", "stage2_prediction")


# the stage defaults the presets leave to the stage methods' signatures, then the presets (tests compare them)
STAGE1: Dict[str, Any] = {"attention_weight": ATTENTION_WEIGHT, **TINYBERT_INTERMEDIATE}
STAGE2: Dict[str, Any] = {"n_epochs": 2, **TINYBERT_PREDICTION}


def layer_mapping(text: str) -> Union[str, Dict[int, int]]:
    """argparse type: ``uniform``, ``last`` or ``student:teacher`` pairs like ``0:1,1:3`` (0-based layers)."""
    if text in ("uniform", "last"):
        return text
    try:
        pairs = (part.split(":") for part in text.split(",") if part.strip())
        return {int(s): int(t) for s, t in pairs}
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected uniform, last or student:teacher pairs like 0:1,1:3, got {text!r}"
                                         ) from err


def check_inputs(args: argparse.Namespace) -> None:
    """Fail on a missing model, folder or file and on an unsafe --output before any model is loaded."""
    check_reader_inputs(args, parts=STAGE_FOLDERS[1:] if args.no_intermediate else STAGE_FOLDERS)


def stage_kwargs(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """Keyword arguments of the two stages (``intermediate`` and ``prediction``) from the flags."""
    shared = dict(temperature=args.temperature, caching=args.caching, seed=args.seed, resume=args.resume,
                  checkpoint_every=args.checkpoint_every, checkpoint_root_dir=Path(args.checkpoint_root_dir),
                  show_progress=not args.quiet, **reader_device_kwargs(args.device))
    intermediate = dict(shared, batch_size=args.intermediate_batch_size, n_epochs=args.intermediate_epochs,
                        learning_rate=args.intermediate_learning_rate, distillation_loss=args.intermediate_loss,
                        distillation_loss_weight=args.intermediate_kd_weight, layer_mapping=args.layer_mapping,
                        embedding_weight=args.embedding_weight, hidden_weight=args.hidden_weight,
                        attention_weight=args.attention_weight, attention_loss=args.attention_loss)
    prediction = dict(shared, batch_size=args.prediction_batch_size, n_epochs=args.prediction_epochs,
                      learning_rate=args.prediction_learning_rate, distillation_loss=args.loss,
                      distillation_loss_weight=args.weight, teacher_top_k=args.teacher_top_k,
                      hard_loss_padding=args.hard_loss_padding, evaluate_every=args.evaluate_every,
                      pseudo_labels=args.pseudo_labels, pseudo_label_threshold=args.pseudo_label_threshold)
    return {"intermediate": intermediate, "prediction": prediction}


def _handler(args: argparse.Namespace) -> int:
    check_inputs(args)
    stages = stage_kwargs(args)
    check_stage_settings(args, {"prediction": stages["prediction"]} if args.no_intermediate else stages)
    from ..evaluation.reader import evaluation_progress

    teacher, student = load_readers(args)
    with evaluation_progress(not args.quiet):
        metrics = student.distil_tinybert_from(
            teacher, args.data_dir, args.train_filename, args.output,
            augmented_train_filename=args.augmented_train_filename, dev_filename=args.dev_filename,
            intermediate=False if args.no_intermediate else stages["intermediate"], prediction=stages["prediction"],
            prediction_on_augmented=not args.prediction_on_original, unlabeled_filename=args.unlabeled_filename,
            augmented_as=args.augmented_as)
    print_result(metrics, args.json)
    return 0


def _add_stage1(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stage 1: intermediate layers (saved to OUTPUT/stage1_intermediate)")
    g.add_argument("--no-intermediate", action="store_true", help="skip stage 1: prediction-layer KD only")
    g.add_argument("--intermediate-epochs", type=positive_int, default=STAGE1["n_epochs"], metavar="N",
                   help="passes over the data")
    g.add_argument("--intermediate-learning-rate", type=positive_float, default=STAGE1["learning_rate"], metavar="LR",
                   help="AdamW peak learning rate")
    g.add_argument("--intermediate-batch-size", type=positive_int, default=STAGE1["batch_size"], metavar="N",
                   help="features per step")
    g.add_argument("--layer-mapping", type=layer_mapping, default="uniform",
                   help="student layer <- teacher layer: uniform (TinyBERT), last, or pairs like 0:1,1:3")
    g.add_argument("--embedding-weight", type=float, default=1.0, help="weight of the embedding-output MSE")
    g.add_argument("--hidden-weight", type=float, default=1.0, help="weight of the hidden-state MSE")
    g.add_argument("--attention-weight", type=float, default=STAGE1["attention_weight"],
                   help="weight of the attention term (its score MSE is ~100x the hidden-state MSE)")
    g.add_argument("--attention-loss", default="scores", choices=["scores", "kl", "none"],
                   help="scores: MSE of masked pre-softmax scores; kl: KL of attention distributions")
    g.add_argument("--intermediate-loss", default="mse", choices=["kl_div", "mse", "soft_ce"],
                   help="span-KD loss mixed into stage 1")
    g.add_argument("--intermediate-kd-weight", type=fraction, default=STAGE1["distillation_loss_weight"],
                   help="share of the span KD in stage 1's loss (0: intermediate layers only)")


def _add_stage2(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stage 2: prediction layer (saved to OUTPUT/stage2_prediction)")
    g.add_argument("--prediction-epochs", type=positive_int, default=STAGE2["n_epochs"], metavar="N",
                   help="passes over the data")
    g.add_argument("--prediction-learning-rate", type=positive_float, default=STAGE2["learning_rate"], metavar="LR",
                   help="AdamW peak learning rate")
    g.add_argument("--prediction-batch-size", type=positive_int, default=STAGE2["batch_size"], metavar="N",
                   help="features per step")
    g.add_argument("--prediction-on-original", action="store_true",
                   help="train stage 2 on --train-filename even when --augmented-train-filename is given")
    g.add_argument("--loss", default="kl_div", choices=["kl_div", "mse", "soft_ce"], help="KD loss on start/end")
    g.add_argument("--weight", type=fraction, default=STAGE2["distillation_loss_weight"],
                   help="distillation_loss_weight: share of the KD loss")
    g.add_argument("--teacher-top-k", type=positive_int, help="cache only the teacher's k most likely start/end "
                                                              "positions (default: all)")
    add_hard_loss_padding(g)
    g.add_argument("--evaluate-every", type=int, default=300, help="steps between dev evaluations (0: at the end)")


def register(subparsers: Any) -> None:
    """Add the distil-tinybert sub-command."""
    p = subparsers.add_parser(
        "distil-tinybert",
        help="TinyBERT task distillation of a reader: intermediate layers, then the prediction layer",
        description="TinyBERT's task distillation (distil_tinybert_from): stage 1 matches the teacher's embeddings, "
                    "hidden states and attention (on the augmented file when given), stage 2 its start/end "
                    "distributions. Start from a distil-general student for the best results.")
    add_reader_data(p, "output folder; the stages write into its sub-folders stage1_intermediate and "
                       "stage2_prediction")
    p.add_argument("--augmented-train-filename", help="augmented training file in --data-dir (haystack-distill "
                                                      "augment); used by stage 1 and, by default, stage 2")
    p.add_argument("--augmented-as", choices=["labeled", "unlabeled"], default="labeled",
                   help="unlabeled: the augmented copies learn only from the teacher, beside the labelled "
                        "--train-filename, in both stages")
    add_unlabeled(p)
    _add_stage1(p)
    _add_stage2(p)
    p.add_argument("--temperature", type=positive_float, default=STAGE2["temperature"],
                   help="KD temperature of both stages")
    p.add_argument("--caching", action="store_true", help="keep the teacher's logits on disk for later runs")
    p.add_argument("--checkpoint-dir", "--checkpoint-root-dir", dest="checkpoint_root_dir", default="model_checkpoints",
                   help="checkpoints go to its intermediate_layers / prediction_layer sub-folders; one per run")
    p.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default: none)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest checkpoints")
    add_reader_run(p)
    p.set_defaults(func=_handler)
