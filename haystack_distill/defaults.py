"""Defaults that torch-free modules need too (the CLIs show them in ``--help`` without importing torch).

Example:
    >>> from haystack_distill.defaults import ATTENTION_WEIGHT
    >>> 0 < ATTENTION_WEIGHT < 1
    True
"""

#: Weight of TinyBERT's attention term in both layer-matching stages (general distillation and the reader's
#: intermediate layers), against weight 1 for the embeddings and hidden states: pre-softmax attention scores are
#: large, so TinyBERT's equal weights let the attention term drown the hidden states.
# At the start of GD of all-MiniLM-L6-v2 into 3 of its layers the attention-score MSE is 35-40 against 0.4-0.5 for
# the hidden states (BENCHMARKS.md, "Student quality"): with weight 1 attention is ~98% of the loss, with this
# weight the two have about equal say.
ATTENTION_WEIGHT = 0.01
