"""Teacher/student tokenizer compatibility: fail early, say exactly what differs.

No Haystack import. Works with any Hugging Face tokenizer (slow or fast).

Example:
    >>> from transformers import BertTokenizerFast
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "vocab.txt")
    >>> _ = open(p, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    >>> tok = BertTokenizerFast(vocab_file=p)
    >>> check_tokenizer_compatibility(tok, tok)  # identical: returns silently
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from .fingerprint import fingerprint_value

PROBE_TEXTS = (
    "Héllo WORLD, naïve café: the 1st Ünïcode test — 12,345.67 km²!",
    "Where did Beyoncé grow up? In Houston, Texas (USA).",
)
#: model types whose position ids start after the padding id (pad_token_id + 1 positions are never used)
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text",
                    "roberta-prelayernorm", "mpnet", "ibert")
SPECIAL_TOKEN_ATTRS = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token")


class TokenizerMismatchError(ValueError):
    """Teacher and student tokenizers map text to different ids; the message lists the differences."""


def check_vocab_fits(tokenizer: Any, model: Any, role: str = "model") -> None:
    """Refuse a tokenizer that can emit ids past the model's embedding matrix (torch would fail deep inside with
    ``IndexError: index out of range in self``)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(f"the {role}'s tokenizer has {len(tokenizer)} tokens but its embedding matrix only {rows} "
                         f"rows, so ids >= {rows} cannot be looked up; use the tokenizer saved with that model (or "
                         "resize its embeddings).")


def _lower_case(tokenizer: Any) -> Any:
    if hasattr(tokenizer, "do_lower_case"):
        return tokenizer.do_lower_case
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.normalizer is not None:
        return "lowercase" in json.dumps(json.loads(backend.to_str()).get("normalizer")).lower()
    return None


def _special_tokens(tokenizer: Any) -> Dict[str, Any]:
    out = {}
    for attr in SPECIAL_TOKEN_ATTRS:
        token = getattr(tokenizer, attr, None)
        if token is not None:
            out[attr] = (str(token), tokenizer.convert_tokens_to_ids(str(token)))
    return out


def _probe_ids(tokenizer: Any) -> List[List[int]]:
    return [tokenizer(text, add_special_tokens=True)["input_ids"] for text in PROBE_TEXTS]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable hash of what decides the ids: vocabulary, special tokens, casing and probe tokenizations."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": _special_tokens(tokenizer),
        "lower": _lower_case(tokenizer),
        "probe": _probe_ids(tokenizer),
    }
    return fingerprint_value(payload, "sha256", length=16)


def _vocab_differences(teacher_vocab: Dict[str, int], student_vocab: Dict[str, int], sample: int) -> List[str]:
    lines = []
    if len(teacher_vocab) != len(student_vocab):
        lines.append(f"vocab size: teacher {len(teacher_vocab)}, student {len(student_vocab)}")
    only_t = sorted(set(teacher_vocab) - set(student_vocab))
    only_s = sorted(set(student_vocab) - set(teacher_vocab))
    moved = sorted(t for t in set(teacher_vocab) & set(student_vocab) if teacher_vocab[t] != student_vocab[t])
    if only_t:
        lines.append(f"{len(only_t)} tokens only in the teacher's vocab, e.g. {only_t[:sample]}")
    if only_s:
        lines.append(f"{len(only_s)} tokens only in the student's vocab, e.g. {only_s[:sample]}")
    if moved:
        examples = [f"{t!r}: teacher id {teacher_vocab[t]}, student id {student_vocab[t]}" for t in moved[:sample]]
        lines.append(f"{len(moved)} shared tokens have different ids, e.g. {'; '.join(examples)}")
    return lines


def tokenizer_differences(teacher_tokenizer: Any, student_tokenizer: Any, sample: int = 5) -> List[str]:
    """Human-readable list of every difference that changes token ids (empty when compatible)."""
    lines = _vocab_differences(teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab(), sample)
    t_special, s_special = _special_tokens(teacher_tokenizer), _special_tokens(student_tokenizer)
    for attr in sorted(set(t_special) | set(s_special)):
        if t_special.get(attr) != s_special.get(attr):
            lines.append(f"special token {attr}: teacher {t_special.get(attr)}, student {s_special.get(attr)}")
    t_lower, s_lower = _lower_case(teacher_tokenizer), _lower_case(student_tokenizer)
    if t_lower != s_lower:
        lines.append(f"lower-casing: teacher {t_lower}, student {s_lower}")
    for text, t_ids, s_ids in zip(PROBE_TEXTS, _probe_ids(teacher_tokenizer), _probe_ids(student_tokenizer)):
        if t_ids != s_ids:
            lines.append(
                f"normalisation/tokenization of {text!r}: teacher "
                f"{teacher_tokenizer.convert_ids_to_tokens(t_ids)[:12]}, student "
                f"{student_tokenizer.convert_ids_to_tokens(s_ids)[:12]}"
            )
    if lines and type(teacher_tokenizer) is not type(student_tokenizer):
        lines.append(
            f"tokenizer class: teacher {type(teacher_tokenizer).__name__}, student {type(student_tokenizer).__name__}"
        )
    return lines


def check_tokenizer_compatibility(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Raise :class:`TokenizerMismatchError` unless both tokenizers give the same ids for the same text.

    Same-tokenizer distillation feeds the teacher the student's token ids, so any difference in vocab,
    special tokens, casing or normalisation silently corrupts the teacher's outputs.
    """
    if teacher_tokenizer is student_tokenizer:
        return
    if tokenizer_fingerprint(teacher_tokenizer) == tokenizer_fingerprint(student_tokenizer):
        return
    differences = tokenizer_differences(teacher_tokenizer, student_tokenizer)
    if not differences:
        return
    raise TokenizerMismatchError(
        "Teacher and student tokenizers are not compatible:\n  - "
        + "\n  - ".join(differences)
        + "\nFix: give the student the teacher's tokenizer (same vocab and settings), pick a student from the "
        "teacher's model family, or use embedding distillation, which needs no shared tokenizer."
    )


def max_positions(config: Dict[str, Any]) -> Optional[int]:
    """The longest input (tokens) an encoder config allows: ``max_position_embeddings``, less the positions a
    RoBERTa-style model skips (``pad_token_id + 1``); None when the config does not say.

    Example:
        >>> max_positions({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1})
        512
    """
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    if config.get("model_type") in OFFSET_POSITIONS:
        positions -= int(config.get("pad_token_id") or 1) + 1
    return positions
