"""Behaviour check across refactors: both reader stages on one SQuAD article, same seed, same settings; prints the
stages' final losses and a hash of the distilled student's weights. Run it on two checkouts and compare the lines.

    git worktree add ../pre <old commit>
    (cd ../pre && PYTHONPATH=. python /path/to/benchmarks/same_weights.py --out /tmp/same-pre)
    PYTHONPATH=. python benchmarks/same_weights.py --out /tmp/same-post

Needs the full reader profile's teacher and 3-layer init (``python benchmarks/reader.py --full`` makes them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs" / "full"
READER = dict(use_gpu=False, max_seq_len=256, doc_stride=128, max_query_length=64, progress_bar=False,
              num_processes=0)
COMMON = dict(batch_size=16, n_epochs=1, learning_rate=1e-4, evaluate_every=0, show_progress=False)


def digest(reader) -> str:
    """SHA-256 (first 16 hex digits) over the model's state dict, in key order."""
    h = hashlib.sha256()
    for key, value in sorted(reader.inferencer.model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (new)")
    out = parser.parse_args().out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from haystack_distill.reader import DistillableFARMReader

    torch.set_num_threads(1)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    squad = json.loads((ROOT.parent / "shared" / "data" / "squad" / "train-v2.0-10articles.json").read_text())
    squad["data"] = squad["data"][:1]
    (data / "train.json").write_text(json.dumps(squad))
    teacher = DistillableFARMReader(str(RUNS / "teacher"), **READER)
    td = DistillableFARMReader(str(RUNS / "init-3l"), **READER).distil_intermediate_layers_from(
        teacher, str(data), "train.json", save_dir=str(out / "td"), checkpoint_root_dir=out / "ckpt-td",
        attention_weight=0.01, distillation_loss_weight=0.0, **COMMON)
    kd = DistillableFARMReader(str(out / "td"), **READER).distil_prediction_layer_from(
        teacher, str(data), "train.json", save_dir=str(out / "kd"), checkpoint_root_dir=out / "ckpt-kd",
        caching=True, cache_path=out / "cache", teacher_top_k=32, temperature=2.0, distillation_loss_weight=6 / 7,
        hard_loss_padding="max_seq_len", **COMMON)  # "slices" from 7874940 on; the old name runs the same
    print(json.dumps({"td_loss": td["loss"], "td_steps": td["global_step"], "kd_loss": kd["loss"],
                      "kd_steps": kd["global_step"], "weights": digest(DistillableFARMReader(str(out / "kd"),
                                                                                             **READER))}))


if __name__ == "__main__":
    main()
