"""F1 of the demo's readers split by question wording: the students' labelled one (the first) against the others.

    python benchmarks/demo_wordings.py demo_output [/tmp/demo-s7 ...]

Each argument is a ``haystack-distill demo --output``; prints one Markdown row per reader and folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

from haystack_distill.synthetic import wording_index

READERS = {"teacher": "teacher", "no KD": "student-no-kd", "KD": "student-kd"}


def split_by_wording(paragraphs: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """The dev paragraphs twice: with only first-wording questions, and with only the others."""
    groups: Dict[str, List[Dict[str, Any]]] = {"first wording": [], "other wordings": []}
    for para in paragraphs:
        for name, keep in (("first wording", True), ("other wordings", False)):
            qas = [qa for qa in para["qas"] if (wording_index(qa["question"]) == 0) == keep]
            if qas:
                groups[name].append({**para, "qas": qas})
    return groups


def main(folders: List[str]) -> None:
    import torch

    from haystack_distill.demo import READER_KW, quiet
    from haystack_distill.evaluation.reader import evaluate_reader
    from haystack_distill.reader import DistillableFARMReader
    from haystack_distill.squad import load_squad

    torch.set_num_threads(1)
    print("| folder | reader | F1, first wording (n) | F1, other wordings (n) |\n|---|---|---|---|")
    for folder in map(Path, folders):
        groups = split_by_wording(load_squad(folder / "data" / "dev.json")["data"][0]["paragraphs"])
        for label, sub in READERS.items():
            with quiet(False):
                reader = DistillableFARMReader(str(folder / sub), **READER_KW)
                scores = {name: evaluate_reader(reader, paras) for name, paras in groups.items()}
            cells = [f"{s['f1']:.1f} ({s['questions']})" for s in scores.values()]
            print(f"| {folder.name} | {label} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
