"""Speed and size of readers deployed four ways: torch fp32, torch dynamic int8, ONNX Runtime fp32 and int8.

    python benchmarks/export.py --reader benchmarks/runs/full/teacher
    python benchmarks/export.py --reader teacher_dir --reader student_3l_dir --reader student_2l_dir \\
        --variants torch_fp32,torch_int8,onnx_int8 --questions 300 --speed-questions 100

The ONNX exports go to ``--out/<reader folder name>`` (default ``--out`` ``/tmp/haystack-distill-export``; existing
exports there are reused; the reader folders are only read). All readers are scored in one process by
``haystack_distill.evaluation.benchmark_reader`` (Haystack's tokenization and span decoding for all of them): EM/F1
on the first ``--questions`` answerable questions of ``--dev``, questions/s = median of ``--repeats`` timed passes,
speed-up relative to the first row (the first reader's first variant), MB = the weights file on disk (torch int8:
its serialized state). Questions per CPU-second (process time, all threads) stay comparable when other jobs share
the machine; with ``--threads 1`` they are what one core gives.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1-36articles.json"
VARIANTS = ("torch_fp32", "torch_int8", "onnx_fp32", "onnx_int8")
for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HAYSTACK_TELEMETRY_ENABLED", "False"),
                    ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(name, value)
logger = logging.getLogger("benchmarks.export")


def onnx_export(reader: Path, out: Path, int8: bool) -> Path:
    """The ONNX export of ``reader`` under ``out`` (made once, then reused)."""
    from haystack_distill.reader.export import export_reader

    path = out / reader.resolve().name / ("onnx-int8" if int8 else "onnx-fp32")
    if not (path / "model.onnx").is_file():
        export_reader(reader, path, fmt="onnx", int8=int8)
    return path


def variant(reader: Path, name: str, out: Path, reader_kwargs: Dict[str, Any], threads: Optional[int]) -> Any:
    """One variant of ``reader``, loaded: torch fp32 or int8, or an ONNX export whose onnxruntime session is capped
    at ``threads`` when given (Haystack's own session uses every core)."""
    from haystack_distill.reader.export import load_reader, onnx_session, torch_int8_reader

    if name.startswith("torch"):
        loaded = load_reader(reader, **reader_kwargs)
        return torch_int8_reader(loaded) if name == "torch_int8" else loaded
    folder = onnx_export(reader, out, int8=name == "onnx_int8")
    loaded = load_reader(folder, **reader_kwargs)
    if threads:
        loaded.inferencer.model.onnx_session = onnx_session(folder, threads=threads)
    return loaded


def weights_folder(reader: Path, name: str, out: Path) -> Optional[Path]:
    """The folder whose weights file a variant runs (None for torch int8, which exists only in memory)."""
    if name.startswith("onnx"):
        return onnx_export(reader, out, int8=name == "onnx_int8")
    return reader if name == "torch_fp32" else None


def weights_mb(path: Path) -> float:
    """MB of the weights file of a reader folder (ONNX, safetensors or Haystack's language model)."""
    from haystack_distill.evaluation.size import model_size

    for name in ("model.onnx", "model.safetensors", "language_model.bin"):
        if (path / name).is_file():
            return model_size(path / name).mb
    return float("nan")


def run(readers: Sequence[Path], variants: Sequence[str], dev: Path, out: Path, questions: int, repeats: int,
        reader_kwargs: Dict[str, Any], speed_questions: Optional[int] = None, threads: Optional[int] = None,
        ) -> List[dict]:
    """Rows of :func:`benchmark_reader` for every reader x variant, in that order (the first row is the base), with
    questions per CPU-second beside questions/s (robust to other load on the machine when ``threads=1``)."""
    import time

    from haystack_distill.evaluation import benchmark_reader
    from haystack_distill.evaluation.reader import evaluate_reader
    from haystack_distill.evaluation.size import model_size
    from haystack_distill.reader.export import ONNX_FILE

    rows = []
    for reader in readers:
        for name in variants:
            loaded = variant(reader, name, out, reader_kwargs, threads)
            row = benchmark_reader({f"{reader.resolve().name}/{name}": loaded}, dev, max_questions=questions,
                                   repeats=repeats, reader_kwargs=reader_kwargs, speed_questions=speed_questions)[0]
            cpu = time.process_time()  # one more pass, after the warm ones, in CPU seconds
            n = evaluate_reader(loaded, dev, speed_questions or questions)["questions"]
            row["questions_per_cpu_second"] = n / (time.process_time() - cpu)
            folder = weights_folder(reader, name, out)
            row["weights_mb"] = weights_mb(folder) if folder is not None else row["mb"]
            if name.startswith("onnx"):  # a loaded ONNX reader does not know its file
                row.update(model_size(folder / ONNX_FILE).as_row())
            rows.append(row)
    for row in rows:
        row["speedup_vs_first"] = row["questions_per_second"] / rows[0]["questions_per_second"]
        row["cpu_speedup_vs_first"] = row["questions_per_cpu_second"] / rows[0]["questions_per_cpu_second"]
    return rows


def table(rows: List[dict]) -> str:
    """Markdown table of the rows; speed and size relative to the first row."""
    lines = ["| reader / variant | EM | F1 | questions/s | speed-up | questions/CPU-s | CPU speed-up | weights MB | "
             "size vs first |", "|---|---|---|---|---|---|---|---|---|"]
    base = rows[0]["weights_mb"]
    for r in rows:
        lines.append(f"| {r['reader']} | {r['em']:.1f} | {r['f1']:.1f} | {r['questions_per_second']:.1f} | "
                     f"{r['speedup_vs_first']:.2f}x | {r['questions_per_cpu_second']:.1f} | "
                     f"{r['cpu_speedup_vs_first']:.2f}x | {r['weights_mb']:.1f} | {r['weights_mb'] / base:.2f}x |")
    return "\n".join(lines)


def _variants(value: str) -> List[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", type=Path, action="append", required=True,
                        help="saved reader folder (read only); repeat for more, the first is the base")
    parser.add_argument("--variants", type=_variants, default=list(VARIANTS), help=",".join(VARIANTS))
    parser.add_argument("--dev", type=Path, default=DEV, help="SQuAD-format dev file")
    parser.add_argument("--out", type=Path, default=Path("/tmp/haystack-distill-export"), help="ONNX exports")
    parser.add_argument("--questions", type=int, default=300, help="answerable questions scored")
    parser.add_argument("--speed-questions", type=int, help="time the repeats on only the first N questions")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median counts")
    parser.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's default and "
                                                    "Haystack's ONNX setting, all cores); 1 makes CPU-s comparable")
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kwargs = dict(use_gpu=False, max_seq_len=args.max_seq_len, doc_stride=args.doc_stride, max_query_length=64,
                  progress_bar=False, num_processes=0)
    rows = run(args.reader, args.variants, args.dev, args.out, args.questions, args.repeats, kwargs,
               args.speed_questions, args.threads)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
