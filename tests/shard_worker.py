"""Run by tests/test_distributed.py under torchrun: the sharded teacher cache with a toy producer (no models)."""

import json
import sys
from functools import partial
from pathlib import Path

import numpy as np


def produce(first, last, fail_rank=None, rank=0):
    """Rows ``first..last-1`` in batches of 3: row ``i`` is ``[i, i + 0.5, -i]``."""
    if rank == fail_rank:
        raise ValueError(f"rank {rank} failed on purpose")
    for start in range(first, last, 3):
        rows = np.arange(start, min(start + 3, last), dtype=np.float32)[:, None]
        yield np.concatenate([rows, rows + 0.5, -rows], axis=1)


def main(root: Path) -> None:
    from haystack_distill.reader.targets import cached_outputs_all_ranks
    from haystack_distill.training import ensure_distributed

    rank, size = ensure_distributed()
    report = {}
    for name, key, fail_rank in (("first", {"k": 1}, None), ("again", {"k": 1}, None), ("broken", {"k": 2}, 1)):
        stats = {}
        try:
            out = cached_outputs_all_ranks(root / "cache", key, 10, (3,), partial(produce, fail_rank=fail_rank,
                                                                                  rank=rank), unit=3, stats=stats)
            report[name] = {"rows": stats["teacher_rows"], "values": np.asarray(out, dtype=np.float32).tolist()}
        except Exception as err:  # noqa: BLE001 - reported to the test
            report[name] = {"error": f"{type(err).__name__}: {err}"}
    (root / f"report{rank}.json").write_text(json.dumps(report))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()  # gloo's threads must stop before exit, or a rank may abort on shutdown


if __name__ == "__main__":
    main(Path(sys.argv[1]))
