"""The reader benchmark's job list: the core rows come first and cover every goal; --extended only adds rows."""

import importlib.util
import sys
from pathlib import Path

import pytest


def _reader_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reader.py"
    spec = importlib.util.spec_from_file_location("reader_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_core_jobs_cover_the_goals_and_extended_only_appends():
    bench = _reader_benchmark()
    core = bench.job_order([3, 2], extended=False)
    assert core == [("teacher", 0), ("haystack_kd", 3), ("ours_kd", 3), ("no_kd", 3), ("ours_kd", 2)]
    full = bench.job_order([3, 2], extended=True, kd_checks=True)
    assert full[: len(core)] == core and len(set(full)) == len(full)
    stages = {stage for stage, _ in full}
    assert stages == set(bench.STAGES)  # every stage runs somewhere in the extended list
    assert not {s for s, _ in bench.job_order([3, 2], extended=True, kd_checks=False)} & set(bench.KD_CHECKS)


def test_our_rows_use_haystacks_kd_balance():
    from haystack_distill.losses import haystack_equivalent_weight

    bench = _reader_benchmark()
    expected = haystack_equivalent_weight(bench.KD["distillation_loss_weight"])
    assert bench.OURS["distillation_loss_weight"] == pytest.approx(expected)
    assert bench.OURS["temperature"] == bench.KD["temperature"]
