import time

import pytest
from transformers import BertTokenizerFast

from haystack_distill.tokenizers import (
    TokenizerMismatchError,
    check_tokenizer_compatibility,
    tokenizer_fingerprint,
)

BASE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "cafe", "##s", "a", "b"]


def _tok(tmp_path, name, vocab, **kwargs):
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path), **kwargs)


def test_identical_passes_fast(tmp_path):
    a, b = _tok(tmp_path, "a", BASE), _tok(tmp_path, "b", BASE)
    started = time.perf_counter()
    check_tokenizer_compatibility(a, b)
    assert time.perf_counter() - started < 2.0
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


def test_vocab_difference_is_named(tmp_path):
    a = _tok(tmp_path, "a", BASE)
    b = _tok(tmp_path, "b", BASE + ["zebra", "yak"])
    with pytest.raises(TokenizerMismatchError) as err:
        check_tokenizer_compatibility(a, b)
    message = str(err.value)
    assert "vocab size: teacher 12, student 14" in message
    assert "zebra" in message and "only in the student" in message


def test_moved_ids_are_named(tmp_path):
    swapped = BASE[:5] + ["world", "hello"] + BASE[7:]
    with pytest.raises(TokenizerMismatchError, match="'hello': teacher id 5, student id 6"):
        check_tokenizer_compatibility(_tok(tmp_path, "a", BASE), _tok(tmp_path, "b", swapped))


def test_casing_difference_is_named(tmp_path):
    a = _tok(tmp_path, "a", BASE, do_lower_case=True)
    b = _tok(tmp_path, "b", BASE, do_lower_case=False)
    with pytest.raises(TokenizerMismatchError, match="lower-casing: teacher True, student False"):
        check_tokenizer_compatibility(a, b)


def test_special_token_difference_is_named(tmp_path):
    a = _tok(tmp_path, "a", BASE)
    b = _tok(tmp_path, "b", BASE, cls_token="[SEP]")
    with pytest.raises(TokenizerMismatchError, match="special token cls_token"):
        check_tokenizer_compatibility(a, b)


def test_fingerprint_changes_with_vocab(tmp_path):
    assert tokenizer_fingerprint(_tok(tmp_path, "a", BASE)) != tokenizer_fingerprint(
        _tok(tmp_path, "b", BASE + ["x"]))
