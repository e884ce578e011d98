"""Cross-tokenizer reader KD on a tiny pair: a WordPiece (uncased BERT) teacher and a byte-level BPE (RoBERTa)
student, labels only vs aligned KD (``tokenizer_alignment="offsets"``), several student seeds.

Uses the model/data builders of tests/test_cross_tokenizer.py (tiny models trained from scratch on the
synthetic QA data; the student's BPE is trained on ../shared/data/wikitext-2 when present plus synthetic text).

    python benchmarks/cross_tokenizer.py --seeds 0 1 2 3 4 --output benchmarks/results/cross_tokenizer.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """Train the teacher once, then per seed one student init trained both ways; returns all numbers."""
    import conftest  # noqa: F401  (offline environment, one torch thread)
    import test_cross_tokenizer as pair

    data = pair.write_squad(work / "data", n_train=args.teacher_paragraphs, n_dev=args.dev_paragraphs,
                            n_student=args.student_paragraphs)
    started = time.perf_counter()
    teacher = pair.train_teacher(work, data, epochs=args.teacher_epochs)
    teacher_seconds = time.perf_counter() - started
    corpus = pair.bpe_corpus()
    runs: List[Dict[str, Any]] = []
    for seed in args.seeds:
        student_dir = pair.build_bpe_student(work / f"student-init-{seed}", corpus, seed=seed)
        result = pair.train_students(teacher["reader"], student_dir, data, work / f"students-{seed}",
                                     epochs=args.epochs, lr=args.lr, weight=args.weight,
                                     temperature=args.temperature, seed=seed)
        runs.append({"seed": seed, **result})
        print(json.dumps(runs[-1]), flush=True)
    return {"teacher": {k: v for k, v in teacher.items() if k != "reader"}, "teacher_seconds": teacher_seconds,
            "runs": runs, "wikitext": pair.WIKITEXT.is_file()}


def report(args: argparse.Namespace, out: Dict[str, Any]) -> str:
    """Markdown with the command, machine, settings, per-seed rows and means."""
    runs = out["runs"]

    def mean(kind: str, metric: str) -> float:
        return statistics.mean(r[kind][metric] for r in runs)

    wins = sum(r["aligned_kd"]["f1"] > r["labels_only"]["f1"] for r in runs)
    lines = [
        "# Cross-tokenizer reader KD: WordPiece teacher -> byte-level BPE student (tiny pair)",
        "",
        f"- Command: `python {' '.join(sys.argv)}` (from the project root)",
        f"- Date: {dt.datetime.now().isoformat(timespec='minutes')}",
        f"- Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), {platform.platform()}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in os.getloadavg())}; torch threads 1",
        f"- Teacher: BERT 2 layers, hidden 32, uncased WordPiece ({len(__import__('conftest').tiny_vocab())} "
        f"tokens), fine-tuned {args.teacher_epochs} epochs on {args.teacher_paragraphs} synthetic paragraphs "
        f"({out['teacher_seconds']:.0f} s): dev F1 {out['teacher']['f1']:.1f} "
        f"(untrained {out['teacher']['f1_untrained']:.1f})",
        "- Student: RoBERTa 2 layers, hidden 32, cased byte-level BPE (600 tokens) trained with `tokenizers` on "
        + ("the first 2000 lines of ../shared/data/wikitext-2/wiki.valid.tokens.txt + " if out["wikitext"] else "")
        + "synthetic QA text; random init per seed",
        f"- Student training: {args.student_paragraphs} other synthetic paragraphs, {args.epochs} epochs, batch 16, "
        f"lr {args.lr}, max_seq_len 128, doc_stride 48; KD run: distillation_loss_weight {args.weight}, "
        f"temperature {args.temperature}, kl_div, tokenizer_alignment='offsets'",
        f"- Dev: {args.dev_paragraphs} synthetic paragraphs (Haystack predictions, no-answer allowed); KL = aligned "
        "teacher || student on the student's dev features, T=1, start/end averaged",
        "",
        "| seed | steps | F1 labels only | F1 aligned KD | EM labels only | EM aligned KD "
        "| KL labels only | KL aligned KD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        a, b = r["labels_only"], r["aligned_kd"]
        lines.append(f"| {r['seed']} | {a['steps']} | {a['f1']:.1f} | {b['f1']:.1f} | {a['em']:.1f} | {b['em']:.1f} "
                     f"| {a['kl_to_teacher']:.3f} | {b['kl_to_teacher']:.3f} |")
    lines.append(f"| **mean** | | **{mean('labels_only', 'f1'):.1f}** | **{mean('aligned_kd', 'f1'):.1f}** "
                 f"| {mean('labels_only', 'em'):.1f} | {mean('aligned_kd', 'em'):.1f} "
                 f"| {mean('labels_only', 'kl_to_teacher'):.3f} | {mean('aligned_kd', 'kl_to_teacher'):.3f} |")
    lines += ["", f"Aligned KD has the higher dev F1 in {wins} of {len(runs)} seeds.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight", type=float, default=0.75)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--teacher-paragraphs", type=int, default=40)
    parser.add_argument("--student-paragraphs", type=int, default=40)
    parser.add_argument("--dev-paragraphs", type=int, default=10)
    parser.add_argument("--output", type=Path, help="markdown file to write (refuses to overwrite without --overwrite)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.output and args.output.exists() and not args.overwrite:
        raise SystemExit(f"{args.output} exists; pass --overwrite to replace it.")
    with tempfile.TemporaryDirectory(prefix="xtok-bench-") as work:
        out = run(args, Path(work))
    text = report(args, out)
    print(text)
    if args.output:
        from haystack_distill.io import atomic_write_text

        atomic_write_text(args.output, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
