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


def test_merged_shards_equal_the_single_process_entry(tmp_path):
    """Shards of whole units, written as ranks do and merged, give the single-process entry byte for byte; a
    missing shard fails the merge and leaves neither an entry nor shards behind."""
    import pytest

    from haystack_distill.teacher_cache import load_cached, merge_shards, shard_path, shard_rows, write_shard

    rng = np.random.default_rng(0)
    values = rng.normal(size=(11, 2, 3)).astype(np.float32)

    def rows(first, last):
        return lambda: (values[s : min(s + 2, last)] for s in range(first, last, 2))

    key, n, size, unit = {"k": "shards"}, len(values), 3, 4
    single = cached_outputs(tmp_path / "single", key, n, (2, 3), rows(0, n))
    assert [shard_rows(n, r, size, unit) for r in range(size)] == [(0, 4), (4, 8), (8, 11)]
    for rank in range(size):
        write_shard(tmp_path / "ranks", key, rank, size, shard_rows(n, rank, size, unit), (2, 3),
                    rows(*shard_rows(n, rank, size, unit)))
    merged = merge_shards(tmp_path / "ranks", key, n, (2, 3), size, unit)
    assert np.asarray(merged).tobytes() == np.asarray(single).tobytes()
    for name in ("outputs.npy", "meta.json"):
        entry = [root / cache_key(key) / name for root in (tmp_path / "single", tmp_path / "ranks")]
        assert entry[0].read_bytes() == entry[1].read_bytes()
    assert not list(tmp_path.rglob(".shard-*"))

    write_shard(tmp_path / "broken", key, 0, 2, shard_rows(n, 0, 2, unit), (2, 3), rows(*shard_rows(n, 0, 2, unit)))
    with pytest.raises(FileNotFoundError):
        merge_shards(tmp_path / "broken", key, n, (2, 3), 2, unit)
    assert load_cached(tmp_path / "broken", key, n, (2, 3)) is None
    assert not shard_path(tmp_path / "broken", key, 0, 2).exists()
