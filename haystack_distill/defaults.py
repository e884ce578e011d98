"""Defaults that torch-free modules need too (the CLIs show them in ``--help`` without importing torch).

Example:
    >>> from haystack_distill.defaults import ATTENTION_WEIGHT
    >>> 0 < ATTENTION_WEIGHT < 1
    True
"""

#: Weight of TinyBERT's attention term in both layer-matching stages (general distillation and the reader's
#: intermediate layers), against weight 1 for the embeddings and hidden states: pre-softmax attention scores are
#: large, so TinyBERT's equal weights let the attention term drown the hidden states.
# With this weight the two terms have about equal say at the start of training (the loss values behind it: see
# BENCHMARKS.md, "Student quality").
ATTENTION_WEIGHT = 0.01
