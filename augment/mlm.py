"""Masked-LM candidates for single-piece words: logits only at masked positions, many copies per batch.

The encoder runs on a batch of masked copies (from any number of paragraphs, sorted by length to limit
padding); the hidden states at the masked positions alone go through the MLM head, so the vocabulary
projection costs one row per masked word instead of one per token. Candidates are restricted to
vocabulary entries that are whole alphabetic words and not stop words (precomputed once as a mask).

Example:
    >>> import tempfile, os, torch
    >>> from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast
    >>> d = tempfile.mkdtemp(); vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "dog", "sat", "."]
    >>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(vocab))
    >>> tok = BertTokenizerFast(vocab_file=os.path.join(d, "vocab.txt"))
    >>> _ = torch.manual_seed(0)
    >>> cfg = BertConfig(vocab_size=9, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    >>> mlm = MaskedLMCandidates(BertForMaskedLM(cfg).eval(), tok, k=2)
    >>> copy = MaskedCopy(input_ids=[2, 4, 7, 8, 3], positions=[1], original_ids=[5])
    >>> cands = mlm.predict([copy])[0][0]
    >>> len(cands), 5 in cands, all(mlm.token_text(c) in {"dog", "sat"} for c in cands)
    (2, False, True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from augment.words import WordFilter
from haystack_distill.fingerprint import new_digest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)


class NotAMaskedLMError(ValueError):
    """The model path is not a masked-language model with a trained MLM head."""


@dataclass(frozen=True)
class MaskedCopy:
    """One encoder input: token ids with ``[MASK]`` at ``positions``; ``original_ids`` are the masked tokens."""

    input_ids: List[int]
    positions: List[int]
    original_ids: List[int]


def load_masked_lm(model: str, tokenizer: Optional[str] = None,
                   device: Union[str, torch.device] = "cpu") -> Tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load ``AutoModelForMaskedLM`` + fast tokenizer, refusing encoders whose MLM head would be random."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    hint = "Pass a local masked-LM folder, e.g. one built with `python -m augment.mlm_head`."
    if Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        raise NotAMaskedLMError(f"--model {model!r} is not a transformers model folder (no config.json). {hint}")
    try:
        AutoConfig.from_pretrained(model, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise NotAMaskedLMError(
            f"--model {model!r} is not a transformers model folder (no usable config.json): "
            f"{str(err).rstrip('.')}. {hint}"
        ) from err
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(model, output_loading_info=True,
                                                         trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise NotAMaskedLMError(f"--model {model!r} cannot be loaded as a masked LM: {err}") from err
    finally:
        hf_logging.set_verbosity(previous)
    _check_head_loaded(mlm, info, model)
    tok = load_fast_tokenizer(tokenizer or model)
    if len(tok) > mlm.config.vocab_size:
        raise NotAMaskedLMError(
            f"tokenizer {tokenizer or model!r} has {len(tok)} tokens but model {model!r} only "
            f"{mlm.config.vocab_size}; pass the tokenizer that belongs to the model (--tokenizer)."
        )
    return mlm.to(device).eval(), tok


def _check_head_loaded(mlm: nn.Module, info: dict, path: str) -> None:
    prefix = getattr(mlm, "base_model_prefix", "")
    tied = tuple(getattr(mlm, "_tied_weights_keys", None) or ())
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".") and not k.endswith(tied)]
    if missing:
        raise NotAMaskedLMError(
            f"--model {path!r} has no trained masked-LM head (missing weights: {missing[:4]}); it looks like an "
            "encoder-only checkpoint such as a sentence-transformers model. Fit a head with "
            "`python -m augment.mlm_head --encoder PATH --output DIR` and pass DIR as --model."
        )


def load_fast_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer with a mask token (offsets need a fast tokenizer)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, use_fast=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise NotAMaskedLMError(f"--tokenizer {path!r} cannot be loaded: {err}") from err
    if not getattr(tok, "is_fast", False):
        raise NotAMaskedLMError(
            f"--tokenizer {path!r} has only a slow tokenizer; word offsets need a fast one. Save it once with "
            "AutoTokenizer.from_pretrained(path, use_fast=True).save_pretrained(path) (writes tokenizer.json)."
        )
    if tok.mask_token_id is None:
        raise NotAMaskedLMError(f"--tokenizer {path!r} has no mask token, so it cannot drive a masked LM.")
    return tok


def _head_function(model: PreTrainedModel) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The module mapping final hidden states to vocabulary logits, if the architecture is known."""
    for attr in ("cls", "lm_head", "predictions"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            return head
    if all(hasattr(model, a) for a in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")):
        return lambda h: model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
    if hasattr(model, "generator_predictions") and hasattr(model, "generator_lm_head"):
        return lambda h: model.generator_lm_head(model.generator_predictions(h))
    return None


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's parameters and config (decides whether a partial run may be resumed)."""
    digest = new_digest("sha256")
    digest.update(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return str(digest.hexdigest())[:16]


class MaskedLMCandidates:
    """Top-``k`` whole-word replacements at masked positions, batched across copies."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, k: int = 15, batch_size: int = 32,
                 word_filter: Optional[WordFilter] = None) -> None:
        self.model, self.tokenizer, self.k, self.batch_size = model.eval(), tokenizer, k, batch_size
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._head = _head_function(model)
        if self._head is None:
            logger.warning("Unknown MLM head for %s: computing full logits (slower).", type(model).__name__)
        self.valid, self._texts = self._candidate_vocab(word_filter or WordFilter())
        self.n_valid = int(self.valid.sum())
        logger.info("MLM: %d of %d vocabulary entries usable as replacements", self.n_valid, len(tokenizer))

    def token_text(self, token_id: int) -> str:
        """Surface text of a candidate token id."""
        return self._texts[token_id]

    def _candidate_vocab(self, word_filter: WordFilter) -> Tuple[torch.Tensor, dict]:
        tok = self.tokenizer
        n = len(tok)
        tokens = tok.convert_ids_to_tokens(list(range(n)))
        texts = [tok.convert_tokens_to_string([t]).strip() if t is not None else "" for t in tokens]
        special = set(tok.all_special_ids)
        ok = word_filter.eligible(texts)
        cand = [i for i in range(n) if ok[i] and i not in special]
        plain = tok([texts[i] for i in cand], add_special_tokens=False)["input_ids"] if cand else []
        spaced = tok([" " + texts[i] for i in cand], add_special_tokens=False)["input_ids"] if cand else []
        # a whole word: the tokenizer produces exactly this id for the word standing alone
        whole = [i for i, a, b in zip(cand, plain, spaced) if a == [i] or b == [i]]
        valid = torch.zeros(self.model.config.vocab_size, dtype=torch.bool)
        valid[whole] = True
        return valid.to(self.device), {i: texts[i] for i in whole}

    @torch.inference_mode()
    def predict(self, copies: Sequence[MaskedCopy]) -> List[List[List[int]]]:
        """For every copy and masked position, up to ``k`` candidate ids (best first, original excluded)."""
        results: List[List[List[int]]] = [[] for _ in copies]
        order = sorted(range(len(copies)), key=lambda i: (len(copies[i].input_ids), i))
        for lo in range(0, len(order), self.batch_size):
            batch = [copies[i] for i in order[lo:lo + self.batch_size]]
            ranked = self._predict_batch(batch)
            start = 0
            for i, copy in zip(order[lo:lo + self.batch_size], batch):
                results[i] = ranked[start:start + len(copy.positions)]
                start += len(copy.positions)
        return results

    def _predict_batch(self, batch: Sequence[MaskedCopy]) -> List[List[int]]:
        length = max(len(c.input_ids) for c in batch)
        ids = torch.full((len(batch), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        rows, cols, originals = [], [], []
        for b, copy in enumerate(batch):
            ids[b, :len(copy.input_ids)] = torch.tensor(copy.input_ids)
            mask[b, :len(copy.input_ids)] = 1
            rows += [b] * len(copy.positions)
            cols += copy.positions
            originals += copy.original_ids
        if not rows:
            return []
        logits = self.masked_logits(ids.to(self.device), mask.to(self.device), torch.tensor(rows), torch.tensor(cols))
        logits = logits.float().masked_fill(~self.valid[: logits.shape[1]], -float("inf"))
        logits[torch.arange(len(rows)), torch.tensor(originals)] = -float("inf")
        k = max(0, min(self.k, self.n_valid - 1))
        top = torch.topk(logits, k, dim=1)
        finite = torch.isfinite(top.values)
        return [[t for t, f in zip(r, fr) if f] for r, fr in zip(top.indices.tolist(), finite.tolist())]

    def masked_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits at positions ``(rows[i], cols[i])`` only: ``[len(rows), vocab]``."""
        rows, cols = rows.to(input_ids.device), cols.to(input_ids.device)
        if self._head is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, cols]
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self._head(hidden[rows, cols])
