"""The README's reader plot: F1 against speed-up over the teacher, one colour and marker per method.

    python benchmarks/plot.py    # benchmarks/results/reader-full.json (+ export-full.json) -> reader-full.png

Rows that differ only in their training seed are drawn as one point at their mean with a bar over their range;
the student size is written beside each method's best point of that size. The x axis is each row's speed-up
over the fp32 teacher measured in the same run (the reader table and the ONNX export table ran separately, so
their absolute questions/s differ; their ratios do not depend on that). Rows that were only scored
(``reader.py --score``, ``reader-full-scores.json``) take the median speed-up measured for their student size.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from statistics import mean
from typing import Dict, List, Tuple

RESULTS = Path(__file__).resolve().parent / "results"
# method -> (colour, marker); the order is the legend's
METHODS = {
    "teacher (fp32)": ("black", "*"),
    "no KD (labels only)": ("tab:gray", "o"),
    "Haystack 1.26.4 KD": ("tab:red", "s"),
    "ours: prediction-layer KD, lr 5e-5": ("tab:blue", "D"),
    "ours: other recipes at lr 5e-5 (GD, intermediate, augmented)": ("tab:olive", "v"),
    "ours: prediction-layer KD, lr 1e-4": ("tab:cyan", "D"),
    "ours: intermediate + prediction KD, lr 1e-4 (distil_tinybert_from)": ("tab:green", "^"),
    "ONNX Runtime int8": ("tab:purple", "P"),
}
SEED = re.compile(r",? (training )?seed 2( instead of (42|its fixed 42))?")


def method_of(reader: str) -> str:
    """The method a benchmark row's reader label belongs to."""
    if "int8" in reader:
        return "ONNX Runtime int8"
    if reader.startswith("teacher"):
        return "teacher (fp32)"
    if "no KD" in reader:
        return "no KD (labels only)"
    if "Haystack" in reader:
        return "Haystack 1.26.4 KD"
    if "lr 1e-4" in reader:
        return ("ours: intermediate + prediction KD, lr 1e-4 (distil_tinybert_from)" if "intermediate" in reader
                else "ours: prediction-layer KD, lr 1e-4")
    if re.search(r"GD|intermediate|augmented", reader):
        return "ours: other recipes at lr 5e-5 (GD, intermediate, augmented)"
    return "ours: prediction-layer KD, lr 5e-5"


def size_of(reader: str) -> str:
    """``"3L"`` for "student 3L, ..." and "ours_kd_slices-3l/onnx_int8"; the teacher is 6 layers."""
    found = re.search(r"(\d+)[lL]\b", reader)
    return f"{found.group(1)}L" if found else "6L"


def points(rows: List[Dict]) -> Dict[Tuple[str, str], List[Dict]]:
    """Rows grouped by (method, label without its seed): one plotted point per group."""
    groups: Dict[Tuple[str, str], List[Dict]] = {}
    for row in rows:
        groups.setdefault((method_of(row["reader"]), SEED.sub("", row["reader"])), []).append(row)
    return groups


def plot(rows: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    seen, labelled = set(), set()
    for (method, label), group in sorted(points(rows).items(), key=lambda item: -max(r["f1"] for r in item[1])):
        colour, marker = METHODS[method]
        f1s = [r["f1"] for r in group]
        x, y = mean(r["speedup_vs_first"] for r in group), mean(f1s)
        ax.errorbar(x, y, yerr=[[y - min(f1s)], [max(f1s) - y]], fmt=marker, color=colour, markersize=8,
                    capsize=3, alpha=0.85, label=None if method in seen else method)
        seen.add(method)
        if (method, size_of(label)) not in labelled:  # one size label per method and size, at its best point
            labelled.add((method, size_of(label)))
            ax.annotate(size_of(label), (x, y), textcoords="offset points", xytext=(7, -3), fontsize=8, color=colour)
    ax.set_xlabel("speed-up over the fp32 teacher (questions/s, measured side by side in one run)")
    ax.set_ylabel("F1, SQuAD 1.1 dev articles 1-4")
    ax.set_title("Readers distilled from a 6-layer MiniLM teacher (bars: two training seeds)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: list(METHODS).index(labels[i]))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7.5, loc="center right",
              bbox_to_anchor=(0.995, 0.58))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def scored_rows(table: List[Dict], scores: List[Dict]) -> List[Dict]:
    """Rows scored with ``reader.py --score`` (F1 only): their speed-up is the median measured in ``table`` for
    students of the same size (a student's speed depends on its architecture, not on how it was trained)."""
    rows = []
    for score in scores:
        same = sorted(r["speedup_vs_first"] for r in table if size_of(r["reader"]) == f"{score['layers']}L")
        if same:
            rows.append({**score, "speedup_vs_first": same[len(same) // 2]})
    return rows


def main() -> int:
    rows = json.loads((RESULTS / "reader-full.json").read_text())
    scores = RESULTS / "reader-full-scores.json"
    if scores.is_file():  # the student-quality rows
        rows += scored_rows(rows, json.loads(scores.read_text()))
    export = RESULTS / "export-full.json"
    if export.is_file():  # the int8 rows; their fp32 twins are already in the reader table
        rows += [r for r in json.loads(export.read_text()) if "int8" in r["reader"]]
    plot(rows, RESULTS / "reader-full.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
