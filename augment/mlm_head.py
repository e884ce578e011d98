"""Fit a masked-LM head on a frozen encoder that ships without one (e.g. all-MiniLM-L6-v2), offline.

The encoder stays frozen, so its outputs at masked positions are computed once; then only the head
(BERT's ``cls`` head: dense + activation + LayerNorm, decoder tied to the frozen word embeddings, or
trained with ``train_decoder=True``) is trained on them with cross-entropy, by
:func:`haystack_distill.training.train` on positions drawn with replacement. The result is a normal
``AutoModelForMaskedLM`` checkpoint + tokenizer, usable as ``--model`` for ``python -m augment``.
Held-out top-1 / top-15 accuracy at masked positions is written to ``mlm_head_metrics.json``.

Run (a few minutes on a CPU; ``python -m augment.mlm_head`` takes the same flags)::

    haystack-distill fit-mlm-head --output benchmarks/runs/minilm-mlm \\
        --train-text ../shared/data/wikitext-2/wiki.valid.tokens.txt \\
        --eval-text ../shared/data/wikitext-2/wiki.test.tokens.txt

Example:
    >>> import tempfile, os
    >>> from transformers import BertConfig, BertModel, BertTokenizerFast
    >>> d = tempfile.mkdtemp(); words = "the cat sat on a mat and dog ran to park".split()
    >>> specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    >>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(specials + words))
    >>> _ = BertTokenizerFast(vocab_file=os.path.join(d, "vocab.txt")).save_pretrained(d)
    >>> BertModel(BertConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=32)).save_pretrained(d)
    >>> text = os.path.join(d, "t.txt")
    >>> _ = open(text, "w").write("the cat sat on a mat and the dog ran to a park\\n" * 50)
    >>> m = fit_mlm_head(d, text, os.path.join(d, "mlm"), steps=20, seq_len=16, show_progress=False)
    >>> m["train_loss_last"] < m["train_loss_first"]
    True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from haystack_distill.io import atomic_dir, ensure_new_output
from haystack_distill.model_card import CardInfo, base_model_of, numbers, settings, write_model_card
from haystack_distill.training import TrainConfig, train

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
_WIKI_FIXES = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))


def read_text(path: PathLike, unk_token: str = "[UNK]") -> str:
    """Read a plain or WikiText ``.tokens`` file into one string (headings dropped, ``@-@`` joins undone)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist; pass --train-text/--eval-text to existing files.")
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or re.fullmatch(r"=+ .* =+", line):
            continue
        for old, new in _WIKI_FIXES:
            line = line.replace(old, new)
        lines.append(line.replace("<unk>", unk_token))
    if not lines:
        raise ValueError(f"text file {path} holds no text.")
    return "\n".join(lines)


def masked_sequences(tokenizer, text: str, seq_len: int, max_sequences: int, mask_prob: float,
                     generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut ``text`` into ``[CLS] ... [SEP]`` sequences and mask ``mask_prob`` of the body tokens.

    Returns (input ids ``[S, seq_len]``, mask of masked positions, original ids).
    """
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    body = seq_len - 2
    n = min(max_sequences, len(ids) // body)
    if n == 0:
        raise ValueError(f"text too short: {len(ids)} tokens, need at least {body} for one sequence.")
    chunks = torch.tensor(ids[: n * body]).view(n, body)
    cls = torch.full((n, 1), tokenizer.cls_token_id)
    sep = torch.full((n, 1), tokenizer.sep_token_id)
    original = torch.cat([cls, chunks, sep], dim=1)
    masked = torch.rand(original.shape, generator=generator) < mask_prob
    masked[:, 0] = masked[:, -1] = False
    masked[torch.arange(n), 1 + torch.randint(body, (n,), generator=generator)] = True  # >= 1 per sequence
    inputs = original.masked_fill(masked, tokenizer.mask_token_id)
    return inputs, masked, original


@torch.inference_mode()
def encode_masked(encoder: nn.Module, inputs: torch.Tensor, masked: torch.Tensor, original: torch.Tensor,
                  batch_size: int = 32, show_progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder hidden states at masked positions ``[M, hidden]`` and their target ids ``[M]``."""
    device = next(encoder.parameters()).device
    states, targets = [], []
    for lo in tqdm(range(0, len(inputs), batch_size), desc="encode", disable=not show_progress):
        batch = inputs[lo:lo + batch_size].to(device)
        hidden = encoder(input_ids=batch, attention_mask=torch.ones_like(batch))[0]
        where = masked[lo:lo + batch_size].to(device)
        states.append(hidden[where].float().cpu())
        targets.append(original[lo:lo + batch_size][masked[lo:lo + batch_size]])
    return torch.cat(states), torch.cat(targets)


def _head_parameters(model: Any, train_decoder: bool) -> List[nn.Parameter]:
    for p in model.base_model.parameters():
        p.requires_grad_(False)
    decoder = model.get_output_embeddings()
    if train_decoder:
        decoder.weight = nn.Parameter(decoder.weight.detach().clone())
        model.config.tie_word_embeddings = False
    params = [p for name, p in model.named_parameters() if not name.startswith(model.base_model_prefix + ".")]
    if not train_decoder:
        params = [p for p in params if p is not decoder.weight]
    for p in params:
        p.requires_grad_(True)
    return params


@torch.no_grad()
def evaluate_head(model: Any, states: torch.Tensor, targets: torch.Tensor, k: int = 15,
                  batch_size: int = 512) -> Dict[str, float]:
    """Cross-entropy and top-1 / top-``k`` accuracy of the head on precomputed masked states."""
    head = model.get_submodule("cls") if hasattr(model, "cls") else model.lm_head
    loss, top1, topk = 0.0, 0, 0
    device = next(model.parameters()).device
    for lo in range(0, len(states), batch_size):
        logits = head(states[lo:lo + batch_size].to(device)).float()
        y = targets[lo:lo + batch_size].to(device)
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        best = logits.topk(k, dim=1).indices
        top1 += (best[:, 0] == y).sum().item()
        topk += (best == y[:, None]).any(dim=1).sum().item()
    n = max(1, len(states))
    return {"loss": loss / n, "top1": top1 / n, f"top{k}": topk / n, "positions": len(states)}


@dataclass
class MlmHeadConfig:
    """Settings of :func:`fit_mlm_head` (its keyword arguments override them one by one).

    ``eval_text``: held-out text for accuracy before/after; ``max_sequences``/``eval_sequences`` sequences of
    ``seq_len`` tokens are cut from the texts; ``steps`` optimizer steps of ``batch_size`` masked positions
    (drawn with replacement) at learning rate ``lr`` with 20 warmup steps.
    """

    eval_text: Optional[PathLike] = None
    max_sequences: int = 1000
    eval_sequences: int = 150
    seq_len: int = 128
    mask_prob: float = 0.15
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    train_decoder: bool = False
    seed: int = 0
    device: str = "cpu"
    overwrite: bool = False
    show_progress: bool = True


def fit_mlm_head(encoder_path: PathLike, train_text: PathLike, output_dir: PathLike,
                 config: Optional[MlmHeadConfig] = None, **overrides: Any) -> Dict[str, float]:
    """Train an MLM head on a frozen encoder and save ``AutoModelForMaskedLM`` + tokenizer to ``output_dir``.

    ``config`` (an :class:`MlmHeadConfig`) and its keyword ``overrides`` set the run. Returns the metrics also
    saved as ``mlm_head_metrics.json`` (held-out accuracy before/after when ``eval_text`` is given, first/last
    training loss).
    """
    config = dataclasses.replace(config or MlmHeadConfig(), **overrides)
    output_dir = Path(output_dir)
    ensure_new_output(output_dir, config.overwrite)
    model, tokenizer = _load_masked_lm(encoder_path, config.device)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    train_data = _masked_states(model, tokenizer, read_text(train_text, tokenizer.unk_token), config.max_sequences,
                                config, generator)
    held = None
    if config.eval_text:
        held = _masked_states(model, tokenizer, read_text(config.eval_text, tokenizer.unk_token),
                              config.eval_sequences, config, generator)
    metrics: Dict[str, float] = {"train_positions": len(train_data[0]), "steps": config.steps}
    if held is not None:
        metrics.update({f"before_{k}": v for k, v in evaluate_head(model, *held).items()})
    first, last = _train_head(model, train_data, config, generator)
    metrics.update(train_loss_first=first, train_loss_last=last)
    if held is not None:
        metrics.update({f"after_{k}": v for k, v in evaluate_head(model, *held).items()})
    model.config.architectures = [type(model).__name__]
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mlm_head_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_model_card(tmp, mlm_head_card(encoder_path, train_text, output_dir.name, config, metrics))
    logger.info("Saved masked LM to %s: %s", output_dir, metrics)
    return metrics


def mlm_head_card(encoder_path: PathLike, train_text: PathLike, name: str, config: MlmHeadConfig,
                  metrics: Dict[str, float]) -> CardInfo:
    """The model card of a fitted MLM head: the frozen encoder, the texts, the settings and the accuracies."""
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("device", "overwrite", "show_progress")}
    return CardInfo(
        name=name, pipeline_tag="fill-mask", library_name="transformers",
        description=f"`{encoder_path}` (frozen) with a masked-LM head fitted by haystack-distill, for the "
                    "masked-LM word substitutions of `python -m augment` (TinyBERT-style data augmentation).",
        base_model=base_model_of(encoder_path), start=str(encoder_path),
        data={"train": str(train_text), "eval": str(config.eval_text) if config.eval_text else ""},
        settings=settings(recipe), scores=numbers(metrics), tags=("data-augmentation",), usage="fill-mask")


def _load_masked_lm(encoder_path: PathLike, device: str) -> Tuple[Any, Any]:
    """The encoder as ``AutoModelForMaskedLM`` (head freshly initialised, in eval mode) and its tokenizer."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_path), use_fast=True, trust_remote_code=False)
    if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None:
        raise ValueError(f"{encoder_path}: tokenizer needs [MASK]/[CLS]/[SEP] tokens for a BERT-style MLM head.")
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is *meant* to start untrained
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(encoder_path), trust_remote_code=False).to(device).eval()
    finally:
        hf_logging.set_verbosity(previous)
    return model, tokenizer


def _masked_states(model: Any, tokenizer: Any, text: str, max_sequences: int, config: MlmHeadConfig,
                   generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    sequences = masked_sequences(tokenizer, text, config.seq_len, max_sequences, config.mask_prob, generator)
    return encode_masked(model.base_model, *sequences, show_progress=config.show_progress)


def _train_head(model: Any, data: Tuple[torch.Tensor, torch.Tensor], config: MlmHeadConfig,
                generator: torch.Generator) -> Tuple[float, float]:
    """Train the head for ``config.steps`` steps; return the mean loss of the first and of the last steps."""
    states, targets = data
    _head_parameters(model, config.train_decoder)
    head = model.cls if hasattr(model, "cls") else model.lm_head
    per_step = min(config.batch_size, len(states))
    rows = torch.randint(len(states), (config.steps * per_step,), generator=generator)

    def loss_fn(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        index = batch["row"].cpu()
        return nn.functional.cross_entropy(head(states[index].to(config.device)), targets[index].to(config.device))

    train_config = TrainConfig(n_epochs=1, batch_size=per_step, learning_rate=config.lr,
                               warmup_proportion=min(1.0, 20 / config.steps), max_grad_norm=math.inf,
                               seed=config.seed, device=config.device, show_progress=config.show_progress)
    losses = train(head, {"row": rows}, loss_fn, train_config).step_losses
    window = max(1, min(20, config.steps // 5))
    return sum(losses[:window]) / window, sum(losses[-window:]) / window


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m augment.mlm_head``: the same flags as ``haystack-distill fit-mlm-head`` (augment/cli.py), plus
    the old underscore spellings and WikiText-2 defaults."""
    from augment.cli import mlm_head_main

    return mlm_head_main(argv)


if __name__ == "__main__":
    sys.exit(main())
