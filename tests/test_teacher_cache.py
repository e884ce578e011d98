import numpy as np
import torch

from haystack_distill.teacher_cache import cache_key, cached_outputs, fingerprint_file, fingerprint_module


def _producer(calls, value):
    def produce():
        calls.append(1)
        yield np.full((2, 3), value)
        yield np.full((1, 3), value)
    return produce


def test_cache_reused_and_recomputed_when_a_field_changes(tmp_path):
    key = {"teacher": "abc", "tokenizer": "t", "max_seq_len": 256, "doc_stride": 128, "data": "d"}
    calls = []
    first = cached_outputs(tmp_path, key, 3, (3,), _producer(calls, 1.5))
    again = cached_outputs(tmp_path, dict(key), 3, (3,), _producer(calls, 9.0))
    assert len(calls) == 1 and float(again[0, 0]) == 1.5 and first.dtype == np.float16
    assert isinstance(again, np.memmap)
    for field, value in (("doc_stride", 64), ("tokenizer", "u"), ("max_seq_len", 384), ("data", "e")):
        changed = cached_outputs(tmp_path, {**key, field: value}, 3, (3,), _producer(calls, 2.0))
        assert float(changed[2, 1]) == 2.0
    assert len(calls) == 5


def test_failed_producer_leaves_no_cache(tmp_path):
    def broken():
        yield np.ones((1, 3))
        raise RuntimeError("interrupted")

    key = {"k": 1}
    try:
        cached_outputs(tmp_path, key, 3, (3,), broken)
    except RuntimeError:
        pass
    assert not list(tmp_path.rglob("*.npy")), "a half-written cache file was left behind"
    calls = []
    out = cached_outputs(tmp_path, key, 3, (3,), _producer(calls, 4.0))
    assert calls == [1] and float(out[0, 0]) == 4.0


def test_fingerprints(tmp_path):
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    assert fingerprint_module(a) == fingerprint_module(b)
    with torch.no_grad():
        b.weight[0, 0] += 1e-3
    assert fingerprint_module(a) != fingerprint_module(b)
    f = tmp_path / "x.json"
    f.write_text("1")
    h = fingerprint_file(f)
    f.write_text("2")
    assert fingerprint_file(f) != h
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
