"""Two CPU processes on the gloo backend (torchrun) match one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
SHARD_WORKER = Path(__file__).with_name("shard_worker.py")
pytestmark = pytest.mark.slow  # torchrun subprocesses
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_ranks_match_single_process(tiny_models, tiny_squad, tmp_path):
    paths = [str(tiny_models["teacher"]), str(tiny_models["student"]), str(tiny_squad)]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, str(WORKER), str(single), *paths], tmp_path)
    _run([*TORCHRUN, str(WORKER), str(ddp), *paths], tmp_path)
    assert (ddp / "rank0" / "language_model.bin").is_file()
    assert not (ddp / "rank1").exists() and not (ddp / "ckpt1").exists()  # only rank 0 writes outputs
    assert list((ddp / "ckpt0" / "prediction_layer").glob("step-*"))
    # The teacher pass was sharded: each rank computed a contiguous share, and the merged cache (same key, same
    # file) is the single process's byte for byte, so either run reuses the other's cache.
    rows = [json.loads((d / f"metrics{r}.json").read_text())["teacher_rows"] for d, r in
            ((single, 0), (ddp, 0), (ddp, 1))]
    assert rows[1] > 0 and rows[2] > 0 and rows[1] + rows[2] == rows[0]
    caches = [sorted((d / "cache" / "teacher_outputs").iterdir()) for d in (single, ddp)]
    assert len(caches[0]) == 1 and [e.name for e in caches[0]] == [e.name for e in caches[1]]
    assert sorted(p.name for p in caches[1][0].iterdir()) == ["meta.json", "outputs.npy"]  # shards merged, gone
    assert (caches[0][0] / "outputs.npy").read_bytes() == (caches[1][0] / "outputs.npy").read_bytes()
    assert (caches[0][0] / "meta.json").read_text() == (caches[1][0] / "meta.json").read_text()
    # The result is compared as what the model computes: start/end probabilities over the context positions.
    # Single weights are not comparable: QA-head and attention biases shift all positions equally, so softmax
    # makes their true gradient exactly zero and Adam turns all-reduce summation-order noise into +-lr steps.
    from haystack_distill.reader import DistillableFARMReader, data

    kw = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0)
    one, two = (DistillableFARMReader(str(d / "rank0"), **kw) for d in (single, ddp))
    feats = data.featurize(data.build_processor(one, 96, 32, 24), data.read_paragraphs(tiny_squad / "train.json"))
    args = {k: feats[k][:32] for k in ("input_ids", "segment_ids", "padding_mask")}
    mask = feats["span_mask"][:32].bool().unsqueeze(-1)
    init = DistillableFARMReader(str(tiny_models["student"]), **kw)
    with torch.no_grad():
        logp = [r.inferencer.model.eval().forward(**args)[0].masked_fill(~mask, -1e4).log_softmax(1)
                for r in (one, two, init)]
    valid = mask.expand_as(logp[0])
    moved = (logp[0] - logp[2])[valid].abs().max().item()
    assert moved > 0.05  # training changed the model ...
    assert (logp[0] - logp[1])[valid].abs().max().item() < 0.05 * moved  # ... and both runs changed it alike


def test_sharded_teacher_cache_on_two_gloo_ranks(tmp_path):
    """Each rank computes its share of whole units, rank 0 merges; a reused cache computes nothing; a rank that
    fails makes both fail (no rank left waiting) and leaves no entry or shard behind."""
    _run([*TORCHRUN, str(SHARD_WORKER), str(tmp_path)], tmp_path)
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in (0, 1)]
    expected = [[i, i + 0.5, -i] for i in range(10)]
    assert [r["first"]["rows"] for r in reports] == [6, 4]  # 4 units of 3 rows: 2 each, the last one short
    assert [r["again"]["rows"] for r in reports] == [0, 0]
    for report in reports:
        assert report["first"]["values"] == expected and report["again"]["values"] == expected
    assert reports[1]["broken"]["error"] == "ValueError: rank 1 failed on purpose"
    assert reports[0]["broken"]["error"].startswith("RuntimeError: another rank failed")
    from haystack_distill.teacher_cache import cache_key, load_cached

    single = np.load(tmp_path / "cache" / cache_key({"k": 1}) / "outputs.npy")
    assert single.dtype == np.float16 and single.tolist() == expected
    assert load_cached(tmp_path / "cache", {"k": 2}, 10, (3,)) is None
    assert not list((tmp_path / "cache").rglob(".shard-*"))
