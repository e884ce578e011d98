"""Run by tests/test_distributed.py, alone or under torchrun: distil a tiny reader, saving to out/rank<RANK>."""

import json
import os
import sys
from pathlib import Path

from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")


def main(out: Path, teacher_path: str, student_path: str, data_dir: str) -> None:
    from haystack_distill.reader import DistillableFARMReader

    kw = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
              progress_bar=False)
    teacher, student = DistillableFARMReader(teacher_path, **kw), DistillableFARMReader(student_path, **kw)
    for module in student.inferencer.model.modules():  # dropout off: ranks draw different random masks
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    rank = os.environ.get("RANK", "0")
    metrics = student.distil_prediction_layer_from(
        teacher, data_dir, "train.json", batch_size=8, n_epochs=1, learning_rate=1e-3, evaluate_every=0,
        save_dir=str(out / f"rank{rank}"), cache_path=out / "cache", caching=True, teacher_batch_size=2,
        distillation_loss="kl_div",
        distillation_loss_weight=0.5, temperature=2.0, checkpoint_root_dir=out / f"ckpt{rank}",
        checkpoint_every=4, show_progress=False)
    (out / f"metrics{rank}.json").write_text(json.dumps(metrics, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:5])
