"""The documented ONNX Runtime path (haystack_distill.reader.onnx_answer) answers like Haystack's FARMReader."""

import random

import numpy as np
import pytest

KW = dict(max_seq_len=64, doc_stride=24, max_query_length=16)  # small windows: long contexts need 3 to 13


@pytest.fixture(scope="module")
def exports(tiny_models, tmp_path_factory):
    """fp32 and int8 ONNX exports of the tiny 4-layer reader (a transformers QA checkpoint)."""
    from haystack_distill.reader.export import export_reader

    root = tmp_path_factory.mktemp("onnx_answer")
    return {"fp32": export_reader(tiny_models["teacher"], root / "fp32", fmt="onnx"),
            "int8": export_reader(tiny_models["teacher"], root / "int8", fmt="onnx", int8=True)}


@pytest.fixture(scope="module")
def pairs():
    """60 questions on contexts of 2-6 shuffled synthetic paragraphs (3-13 windows), then 10 on one paragraph each."""
    from haystack_distill.synthetic import make_squad_dataset

    paragraphs = [p for a in make_squad_dataset(30, seed=3)["data"] for p in a["paragraphs"]]
    questions = [qa["question"] for p in paragraphs for qa in p["qas"]]
    rng = random.Random(0)
    long = [(rng.choice(questions), " ".join(p["context"] for p in rng.sample(paragraphs, rng.randint(2, 6))))
            for _ in range(60)]
    return long + [(p["qas"][0]["question"], p["context"]) for p in paragraphs[:10]]


def window_info(reader, question, context):
    """(number of windows, character offset where the first window ends)."""
    from haystack_distill.reader.onnx_answer import context_windows

    question_len = len(reader.tokenizer.encode(question, add_special_tokens=False).ids[:KW["max_query_length"]])
    passage_len = KW["max_seq_len"] - question_len - reader.layout.n_special
    document = reader.tokenizer.encode(context, add_special_tokens=False)
    windows = context_windows(len(document.ids), passage_len, KW["doc_stride"])
    return len(windows), document.offsets[windows[0][1] - 1][1]


def haystack_answers(folder, pairs):
    """FARMReader's top-3 answers: (text, start, end, score) each."""
    from haystack import Document

    from haystack_distill.reader.export import load_reader

    result = load_reader(folder, **KW).predict_batch(
        queries=[q for q, _ in pairs], documents=[[Document(content=c)] for _, c in pairs], top_k=3)
    return [[(a.answer, a.offsets_in_document[0].start, a.offsets_in_document[0].end, a.score) for a in answers]
            for answers in result["answers"]]


def test_fp32_answers_equal_farmreader_on_multi_window_contexts(tiny_models, exports, pairs):
    from haystack_distill.reader.onnx_answer import OnnxReader

    reader = OnnxReader(exports["fp32"], **KW, threads=1)
    windows, first_ends = zip(*(window_info(reader, q, c) for q, c in pairs))
    assert min(windows[:60]) >= 3 and max(windows) >= 10 and windows[60:].count(1) >= 3
    ours = [[(a.text, a.start, a.end, a.score) for a in reader.predict(q, c, top_k=3)] for q, c in pairs]
    for name, folder in (("torch", tiny_models["teacher"]), ("haystack onnx", exports["fp32"])):
        theirs = haystack_answers(folder, pairs)
        assert [[a[:3] for a in x] for x in ours] == [[a[:3] for a in x] for x in theirs], name
        for mine, haystack, n in zip(ours, theirs, windows):
            if n > 1:  # one window: the padded run is skipped, so the score may differ (the answer cannot)
                assert [a[3] for a in mine] == pytest.approx([a[3] for a in haystack], abs=1e-6), name
    assert len({x[0][:3] for x in ours}) >= 60  # answers vary: not one span repeated
    assert sum(x[0][1] >= end for x, end in zip(ours, first_ends)) >= 25  # many answers beyond the first window
    assert all(c[a[1]:a[2]] == a[0] for (_, c), x in zip(pairs, ours) for a in x)  # the context's own text


def test_answers_keep_the_contexts_spelling(exports):
    from haystack_distill.reader.onnx_answer import OnnxReader

    context = "The Levi's Stadium hosted Super Bowl 50 in the U.S. state of California."
    reader = OnnxReader(exports["fp32"], **KW)
    answers = reader.predict("Where was it?", context, top_k=3)
    assert answers and all(context[a.start:a.end] == a.text for a in answers)
    assert reader.predict("Where was it?", "") == [] and reader.predict("Where?", "   ") == []


class Recording:
    """An onnxruntime session that records every feed."""

    def __init__(self, session):
        self.session, self.feeds = session, []

    def run(self, outputs, feed):
        self.feeds.append(feed)
        return self.session.run(outputs, feed)


def test_int8_logits_do_not_depend_on_padding(exports, pairs):
    """Padding changes int8 logits (activations are quantized over the whole input): every window whose spans
    are scored runs alone and unpadded; a padded run only adds the padding positions Haystack's softmax counts."""
    from haystack_distill.reader.onnx_answer import OnnxReader

    question, context = pairs[0]
    readers = {name: OnnxReader(exports[name], **KW, threads=1) for name in exports}
    tokenizer = readers["int8"].tokenizer
    ids, types, _ = readers["int8"].layout.build(tokenizer.encode(question, add_special_tokens=False).ids,
                                                 tokenizer.encode(context, add_special_tokens=False).ids[:20])
    for name, reader in readers.items():
        alone, _ = reader.logits(ids, types)
        padded, _ = reader.logits(ids, types, pad_to=KW["max_seq_len"])
        diff = float(np.abs(alone - padded[:len(ids)]).max())
        assert diff > 1e-4 if name == "int8" else diff < 1e-5, (name, diff)
    reader = readers["int8"]
    reader.session = Recording(reader.session)
    first = reader.predict(question, context, top_k=3)
    assert reader.predict(*pairs[1]) and reader.predict(question, context, top_k=3) == first
    windows = window_info(reader, question, context)[0] + window_info(reader, *pairs[1])[0]
    unpadded = [f for f in reader.session.feeds if f["attention_mask"].all()]
    padded = [f for f in reader.session.feeds if not f["attention_mask"].all()]
    assert len(unpadded) == 2 * window_info(reader, question, context)[0] + window_info(reader, *pairs[1])[0]
    assert all(f["input_ids"].shape[0] == 1 for f in reader.session.feeds) and windows > 6
    assert len(padded) <= 3 and all(f["input_ids"].shape == (1, KW["max_seq_len"]) for f in padded)
    haystack = [x[0][:3] for x in haystack_answers(exports["fp32"], pairs[:60])]
    ours = [(a.text, a.start, a.end) for a in (readers["int8"].predict(q, c)[0] for q, c in pairs[:60])]
    assert sum(o == h for o, h in zip(ours, haystack)) >= 50  # int8 rounding flips a few near-ties


def test_optimum_loads_the_export_with_the_same_logits(exports):
    pytest.importorskip("optimum.onnxruntime")
    import torch
    from optimum.onnxruntime import ORTModelForQuestionAnswering
    from transformers import AutoTokenizer

    from haystack_distill.reader.onnx_answer import onnx_session

    folder = exports["fp32"]
    batch = AutoTokenizer.from_pretrained(str(folder))("Where was Nadia born?", "Nadia was born in Paris.",
                                                       return_tensors="pt")
    with torch.no_grad():
        out = ORTModelForQuestionAnswering.from_pretrained(str(folder))(**batch)
    start, end = onnx_session(folder).run(None, {k: v.numpy() for k, v in batch.items()})
    np.testing.assert_allclose(out.start_logits.numpy(), start, atol=1e-6)
    np.testing.assert_allclose(out.end_logits.numpy(), end, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"doc_stride": 48}, "doc_stride=48 must be smaller than max_seq_len - max_query_length = 48"),
    ({"folder": "tmp"}, "holds no model.onnx and tokenizer.json"),
])
def test_bad_input_names_the_fix(exports, tmp_path, kwargs, message):
    from haystack_distill.reader.onnx_answer import OnnxReader

    folder = tmp_path if kwargs.pop("folder", None) else exports["fp32"]
    with pytest.raises(ValueError, match=message):
        OnnxReader(folder, **{**KW, **kwargs})
