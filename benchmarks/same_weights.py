"""Do two revisions of the library train the same weights? A check for refactors that must not change behaviour.

Builds tiny random models and a synthetic SQuAD file once, then runs the same short recipes with the code of each
revision (a git worktree per revision, in its own subprocess, one torch thread): the reader's intermediate stage
(hidden states, attention scores, embeddings) followed by its prediction-layer KD, and general distillation. It
prints the largest absolute difference of every saved weights file and exits 1 if any differs by more than
``--tolerance``.

    python benchmarks/same_weights.py --before 255f0c0 --after HEAD
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parent.parent

#: Run inside a worktree's code: argv = [models folder, output folder]. Uses only APIs both revisions have.
RECIPES = r"""
import sys
from pathlib import Path

import haystack_distill
from haystack_distill.general import distil_general
from haystack_distill.reader import DistillableFARMReader

models, out = Path(sys.argv[1]), Path(sys.argv[2])
print("code:", Path(haystack_distill.__file__).parent)
kw = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0, progress_bar=False)
run = dict(batch_size=8, evaluate_every=0, show_progress=False)
teacher = DistillableFARMReader(str(models / "teacher"), **kw)
student = DistillableFARMReader(str(models / "student"), **kw)
student.distil_intermediate_layers_from(teacher, str(models), "train.json", n_epochs=2, learning_rate=3e-3,
                                        save_dir=str(out / "intermediate"),
                                        checkpoint_root_dir=out / "ck-intermediate", **run)
student = DistillableFARMReader(str(out / "intermediate"), **kw)
student.distil_prediction_layer_from(teacher, str(models), "train.json", n_epochs=2, learning_rate=3e-3,
                                     save_dir=str(out / "prediction"), checkpoint_root_dir=out / "ck-prediction",
                                     temperature=2.0, distillation_loss_weight=0.75, **run)
distil_general(models / "encoder", models / "texts.txt", out / "general", layers=2, epochs=1, max_seq_len=32,
               batch_size=8, learning_rate=3e-3, show_progress=False)
"""


def build_inputs(folder: Path) -> Path:
    """Tiny teacher and student readers, an encoder for general distillation, SQuAD and text files."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_bert

    from haystack_distill.synthetic import make_squad_dataset

    build_tiny_bert(folder / "teacher", layers=4, hidden=32, heads=4, seed=1)
    build_tiny_bert(folder / "student", layers=2, hidden=32, heads=4, seed=2)
    build_tiny_bert(folder / "encoder", layers=4, hidden=32, heads=4, seed=3, qa=False)
    (folder / "train.json").write_text(json.dumps(make_squad_dataset(12, seed=0)))
    words = "the river city born lives year north south old new bank bridge market".split()
    lines = [" ".join(words[(i + j) % len(words)] for j in range(8 + 5 * (i % 4))) for i in range(60)]
    (folder / "texts.txt").write_text("\n".join(lines) + "\n")
    return folder


def run_revision(revision: str, models: Path, work: Path) -> Path:
    """Train the recipes with ``revision``'s code (a detached worktree); return the output folder."""
    tree, out = work / f"tree-{revision}", work / f"out-{revision}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), revision], check=True,
                   capture_output=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False"}
        done = subprocess.run([sys.executable, "-c", RECIPES, str(models), str(out)], env=env, cwd=str(work),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{revision} failed:\n{done.stderr[-3000:]}")
        print(f"{revision}: {done.stdout.strip().splitlines()[0]}")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                       capture_output=True)
    return out


def weights(folder: Path) -> Dict[str, Any]:
    """Every tensor of the weights files in ``folder``, keyed by file and name."""
    import torch
    from safetensors.torch import load_file

    tensors: Dict[str, Any] = {}
    for file in sorted(folder.rglob("*")):
        if file.suffix == ".safetensors":
            loaded = load_file(str(file))
        elif file.suffix == ".bin":
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        else:
            continue
        tensors.update({f"{file.relative_to(folder)}:{k}": v for k, v in loaded.items()})
    return tensors


def compare(before: Path, after: Path) -> Dict[str, float]:
    """Largest absolute difference per weights file (inf when the names or shapes differ)."""
    a, b = weights(before), weights(after)
    worst: Dict[str, float] = {}
    for key in sorted(set(a) | set(b)):
        file = key.split(":")[0]
        if key not in a or key not in b or a[key].shape != b[key].shape:
            worst[file] = float("inf")
            continue
        diff = float((a[key].float() - b[key].float()).abs().max()) if a[key].numel() else 0.0
        worst[file] = max(worst.get(file, 0.0), diff)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision of the reference code")
    parser.add_argument("--after", default="HEAD", help="git revision to compare (default HEAD)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest allowed absolute difference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_inputs(work / "inputs")
        outs = [run_revision(rev, models, work) for rev in (args.before, args.after)]
        worst = compare(*outs)
    for file, diff in worst.items():
        print(f"{file}: max |difference| {diff:.3g}")
    bad = {f: d for f, d in worst.items() if not d <= args.tolerance}
    print("same weights" if not bad else f"DIFFERENT: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
