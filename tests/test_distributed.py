"""Two CPU processes on the gloo backend (torchrun) match one process with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


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
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
          str(ddp), *paths], tmp_path)
    assert (ddp / "rank0" / "language_model.bin").is_file()
    assert not (ddp / "rank1").exists() and not (ddp / "ckpt1").exists()  # only rank 0 writes outputs
    assert list((ddp / "ckpt0" / "prediction_layer").glob("step-*"))
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
