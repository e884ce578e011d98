"""Promises: nothing lost, nothing silently wrong (issue 18). One test (or a few) per guarantee, on tiny models.

1. Training stops at the first non-finite loss or gradient (DivergenceError: step, last finite loss) and
   never updates or saves non-finite weights; teacher outputs with NaN/inf are never cached.
2. An output folder is never the teacher's (or student's) folder, inside it or holding it, and never a folder
   with files we did not write; our previous output is replaced atomically (readers and embeddings).
3. The teacher fingerprint depends only on what the teacher computes: stable across loads.
4. Caches and checkpoints are verified: a corrupt, truncated or incomplete cache is recomputed with a warning;
   a corrupt checkpoint is refused by name and the previous good one used; an edited training file is a
   different run.
5. Augmentation validates its progress files on resume and never writes its output over its input.
6. The CLI prints one line and exits 2 for bad input (1 for a diverged run); --debug/--verbose show the traceback.
7. Refused before any teacher work: teacher_model=None, learning_rate <= 0, a tokenizer emitting ids past the
   embedding matrix (both sizes named).
8. Export on hostile input: damaged or pickled weights, opsets, positions, one token type, outputs inside the
   reader, work folders of killed runs, a folder's own modelling code.
9. Inputs that became silently wrong results or tracebacks; run identity of every checkpointing stage; what a
   run writes and deletes is its own (edited files, side folders, unwritable parents).
"""

import json
import math

import pytest
import torch
from conftest import embedding_loss_killed_at, kill_augmentation_on_second_article
from torch import nn

from haystack_distill.safety import DivergenceError
from haystack_distill.squad import SquadFormatError
from haystack_distill.training import TrainConfig, train


def _linear_data(n=24):
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    return {"x": x, "y": x.sum(1, keepdim=True)}


def _config(tmp_path, **kw):
    return TrainConfig(**{**dict(n_epochs=2, batch_size=4, learning_rate=1e-2, show_progress=False,
                                 checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1), **kw})


# -- 1. divergence ---------------------------------------------------------------------------------------------
def test_training_stops_at_the_first_non_finite_loss_naming_step_and_last_loss(tmp_path):
    model, calls = nn.Linear(3, 1), {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return loss * float("nan") if calls["n"] == 4 else loss

    with pytest.raises(DivergenceError, match=r"step 4: loss is nan \(last finite loss \d"):
        train(model, _linear_data(), loss_fn, _config(tmp_path))
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never updated the weights
    assert calls["n"] == 4  # stopped there, not at the end of training


def test_training_stops_at_a_non_finite_gradient(tmp_path):
    model = nn.Linear(3, 1)

    def loss_fn(batch):  # a finite loss whose gradient is inf: sqrt'(0)
        return torch.sqrt((model(batch["x"]) * 0).pow(2).sum()) + 1.0

    with pytest.raises(DivergenceError, match="step 1: the gradient norm is (nan|inf)"):
        train(model, _linear_data(), loss_fn, _config(tmp_path))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    from haystack_distill.training import save_checkpoint

    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(DivergenceError, match="non-finite weights .* weight"):
        save_checkpoint(tmp_path, {"model": model}, opt, sched, {"epoch": 0, "batch": 1, "global_step": 1}, {}, 2)
    assert not list(tmp_path.glob("step-*"))


# -- 2. save_dir -----------------------------------------------------------------------------------------------
READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)
FAST = dict(batch_size=8, n_epochs=1, evaluate_every=0, show_progress=False)


@pytest.fixture(scope="module")
def reader_pair(tiny_models, tmp_path_factory):
    """(teacher, make_student, teacher folder): the teacher is loaded from a folder this module may probe."""
    import shutil

    from haystack_distill.reader import DistillableFARMReader

    folder = tmp_path_factory.mktemp("own") / "teacher"
    shutil.copytree(tiny_models["teacher"], folder)
    teacher = DistillableFARMReader(str(folder), **READER_KW)
    return teacher, lambda: DistillableFARMReader(str(tiny_models["student"]), **READER_KW), folder


def _distil(reader_pair, squad, save_dir, **kw):
    teacher, make_student, _ = reader_pair
    return make_student().distil_prediction_layer_from(teacher, str(squad), "train.json", save_dir=str(save_dir),
                                                       **{**FAST, **kw})


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["teacher", "inside"])
def test_the_teacher_folder_is_never_a_save_dir(reader_pair, tiny_squad, where):
    from haystack_distill.safety import UnsafeOutputError

    folder = reader_pair[2]
    before = _tree(folder)
    target = folder if where == "teacher" else folder / "student"
    with pytest.raises(UnsafeOutputError, match="input folder .*teacher.*Choose another folder"):
        _distil(reader_pair, tiny_squad, target)
    assert _tree(folder) == before


def test_a_folder_holding_the_teacher_is_never_a_save_dir(reader_pair, tiny_squad):
    from haystack_distill.safety import UnsafeOutputError

    with pytest.raises(UnsafeOutputError, match="contains the input"):
        _distil(reader_pair, tiny_squad, reader_pair[2].parent)


def test_a_previous_output_is_replaced_but_a_users_file_in_it_is_never_deleted(reader_pair, tiny_squad, tmp_path):
    from haystack_distill.safety import MANIFEST, UnsafeOutputError

    out = tmp_path / "out"
    _distil(reader_pair, tiny_squad, out)
    assert (out / MANIFEST).is_file() and (out / "distillation.json").is_file()
    first = (out / "language_model.bin").read_bytes()
    _distil(reader_pair, tiny_squad, out, learning_rate=1e-3)  # ours: replaced, with a fresh manifest
    assert (out / "language_model.bin").read_bytes() != first and (out / MANIFEST).is_file()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match=r"did not write or that were changed since \(notes.txt\)"):
        _distil(reader_pair, tiny_squad, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_output_of_an_older_version_without_manifest_stays_replaceable(reader_pair, tiny_squad, tmp_path):
    from haystack_distill.safety import MANIFEST

    out = tmp_path / "old"
    _distil(reader_pair, tiny_squad, out)
    for newer in (MANIFEST, "README.md", "pytorch_model.bin.index.json"):  # files older versions did not write
        (out / newer).unlink()
    _distil(reader_pair, tiny_squad, out)
    assert (out / MANIFEST).is_file()


def test_a_diverging_reader_run_raises_and_saves_nothing(reader_pair, tiny_squad, tmp_path):
    with pytest.raises(DivergenceError, match="diverged at step"):
        _distil(reader_pair, tiny_squad, tmp_path / "nan", learning_rate=1e6, distillation_loss_weight=1.0,
                distillation_loss="mse", n_epochs=3)
    assert not (tmp_path / "nan").exists()


def test_a_reader_with_non_finite_weights_is_never_saved(reader_pair, tmp_path):
    from haystack_distill.reader import output

    _, make_student, _ = reader_pair
    student = make_student()
    with torch.no_grad():
        next(student.inferencer.model.parameters()).view(-1)[0] = math.nan
    with pytest.raises(DivergenceError, match="non-finite weights"):
        output.save_reader(student, tmp_path / "s", {})
    assert not (tmp_path / "s").exists()


def test_embeddings_output_is_never_the_teacher_folder_nor_a_folder_with_user_files(tmp_path):
    from test_embeddings import build_sentence_bert, make_sentences

    from haystack_distill.embeddings import distil_embeddings_from, load_sentence_transformer, truncate_layers
    from haystack_distill.embeddings.model_io import save_sentence_transformer
    from haystack_distill.safety import UnsafeOutputError

    teacher_dir = build_sentence_bert(tmp_path / "teacher", layers=2, hidden=16)
    teacher, sentences = load_sentence_transformer(teacher_dir), make_sentences(8)
    before = _tree(teacher_dir)
    for target in (teacher_dir, teacher_dir / "student"):
        with pytest.raises(UnsafeOutputError, match="input folder"):
            distil_embeddings_from(truncate_layers(teacher, 1), teacher_dir, sentences, output_dir=target,
                                   overwrite=True, cache_dir=tmp_path / "c", show_progress_bar=False)
    assert _tree(teacher_dir) == before
    out = tmp_path / "out"
    save_sentence_transformer(truncate_layers(teacher, 1), out)
    save_sentence_transformer(truncate_layers(teacher, 1), out, overwrite=True)  # ours: replaced
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match="notes.txt"):
        save_sentence_transformer(truncate_layers(teacher, 1), out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_embeddings_student_with_non_finite_weights_is_never_saved(tmp_path):
    from test_embeddings import build_sentence_bert

    from haystack_distill.embeddings import load_sentence_transformer
    from haystack_distill.embeddings.model_io import save_sentence_transformer

    model = load_sentence_transformer(build_sentence_bert(tmp_path / "m", layers=1, hidden=16))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = math.inf
    with pytest.raises(DivergenceError, match="non-finite weights"):
        save_sentence_transformer(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_nan_embeddings_teacher_is_refused_before_training(tmp_path, use_cache):
    from test_embeddings import build_sentence_bert, make_sentences

    from haystack_distill.embeddings import distil_embeddings_from, load_sentence_transformer, truncate_layers

    teacher = load_sentence_transformer(build_sentence_bert(tmp_path / "t", layers=2, hidden=16))
    student = truncate_layers(teacher, 1)
    with torch.no_grad():
        teacher[0].auto_model.encoder.layer[-1].output.dense.bias.fill_(math.nan)
    with pytest.raises(DivergenceError, match="the teacher's embeddings of sentences 0 to 7 holds"):
        distil_embeddings_from(student, teacher, make_sentences(8), cache_dir=tmp_path / "c", use_cache=use_cache,
                               output_dir=tmp_path / "out", show_progress_bar=False)
    assert not (tmp_path / "out").exists() and not list((tmp_path / "c").rglob("*.npy"))


def test_the_embeddings_loop_stops_at_a_nan_loss(tmp_path, monkeypatch):
    from test_embeddings import build_sentence_bert, make_sentences

    from haystack_distill.embeddings import distil, distil_embeddings_from, load_sentence_transformer, truncate_layers

    teacher = load_sentence_transformer(build_sentence_bert(tmp_path / "t", layers=2, hidden=16))
    calls = []

    def nan_on_second_batch(student, target):
        calls.append(1)
        loss = ((student - target) ** 2).mean()
        return loss * math.nan if len(calls) == 2 else loss

    monkeypatch.setitem(distil.EMBEDDING_LOSSES, "mse", nan_on_second_batch)
    with pytest.raises(DivergenceError, match=r"step 2: loss is nan \(last finite loss \d"):
        distil_embeddings_from(truncate_layers(teacher, 1), teacher, make_sentences(16), batch_size=8,
                               cache_dir=tmp_path / "c", output_dir=tmp_path / "out", show_progress_bar=False)
    assert not (tmp_path / "out").exists()


# -- 3. teacher key --------------------------------------------------------------------------------------------
def test_teacher_key_is_stable_across_loads_of_a_plain_transformers_folder(tiny_models, tiny_squad):
    from haystack_distill.reader import DistillableFARMReader
    from haystack_distill.reader.data import SequenceSettings
    from haystack_distill.reader.targets import teacher_key

    settings = SequenceSettings(96, 32, 24)
    loads = [DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW) for _ in range(2)]
    poolers = [r.inferencer.model.language_model.model.pooler.dense.weight for r in loads]
    with torch.no_grad():  # Haystack re-initialises the unused pooler on each load (drawn here, whatever the RNG) ...
        poolers[1].add_(torch.randn(poolers[1].shape, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(*poolers)
    keys = [teacher_key(r, r, tiny_squad / "train.json", settings) for r in loads]
    assert keys[0] == keys[1]  # ... which the fingerprint ignores
    with torch.no_grad():
        loads[1].inferencer.model.prediction_heads[0].feed_forward.feed_forward[0].weight[0, 0] += 1e-3
    assert teacher_key(loads[1], loads[1], tiny_squad / "train.json", settings) != keys[0]


# -- 4. caches and checkpoints ---------------------------------------------------------------------------------
def _produce(calls, value=1.5):
    import numpy as np

    def produce():
        calls.append(1)
        yield np.full((4, 3), value)
    return produce


@pytest.mark.parametrize("damage", ["nan", "random_bytes", "truncated", "no_meta"])
def test_a_damaged_teacher_cache_is_recomputed_with_a_warning(tmp_path, caplog, damage):
    import numpy as np

    from haystack_distill.teacher_cache import cache_key, cached_outputs

    key, calls = {"teacher": "t"}, []
    cached_outputs(tmp_path, key, 4, (3,), _produce(calls))
    stored = tmp_path / cache_key(key) / "outputs.npy"
    if damage in ("nan", "random_bytes"):
        array = np.load(stored, mmap_mode="r+")
        array[1] = np.nan if damage == "nan" else np.frombuffer(np.random.bytes(6), np.float16)
        array.flush()
        del array
    elif damage == "truncated":
        stored.write_bytes(stored.read_bytes()[:-8])
    else:
        (stored.parent / "meta.json").unlink()
    out = cached_outputs(tmp_path, key, 4, (3,), _produce(calls))
    assert len(calls) == 2 and np.all(out == np.float16(1.5))
    assert "recomputing" in caplog.text and str(stored) in caplog.text
    cached_outputs(tmp_path, key, 4, (3,), _produce(calls))
    assert len(calls) == 2  # the recomputed entry is trusted again


def test_a_teacher_producing_nan_is_refused_and_leaves_no_cache(tmp_path):
    from haystack_distill.teacher_cache import cached_outputs

    with pytest.raises(DivergenceError, match=r"teacher's outputs \(rows 0 to 3.*holds 12 NaN/inf"):
        cached_outputs(tmp_path, {"teacher": "t"}, 4, (3,), _produce([], math.nan))
    assert not list(tmp_path.rglob("*.npy"))


def test_fp16_overflow_of_teacher_outputs_is_refused(tmp_path):
    from haystack_distill.teacher_cache import cached_outputs

    with pytest.raises(DivergenceError, match="as float16"):
        cached_outputs(tmp_path, {"teacher": "t"}, 4, (3,), _produce([], 1e6))


def _run_to_checkpoints(tmp_path):
    model = nn.Linear(3, 1)
    train(model, _linear_data(), lambda b: ((model(b["x"]) - b["y"]) ** 2).mean(),
          _config(tmp_path, checkpoints_to_keep=3, n_epochs=3))
    from haystack_distill.training import _checkpoints

    return _checkpoints(tmp_path / "ckpt")


@pytest.mark.parametrize("damage", ["flipped_bytes", "empty"])
def test_a_corrupt_checkpoint_is_refused_by_name_and_the_previous_good_one_used(tmp_path, caplog, damage):
    steps = _run_to_checkpoints(tmp_path)
    newest = steps[-1] / "state.pt"
    data = bytearray(newest.read_bytes())
    if damage == "empty":
        data = bytearray()
    else:
        data[-200:-100] = bytes(100)
    newest.write_bytes(bytes(data))
    from haystack_distill.training import _resolve_resume

    path, state = _resolve_resume(_config(tmp_path, resume=True))
    assert path == steps[-2] and state["progress"]["global_step"] == int(steps[-2].name.split("-")[1])
    assert str(newest) in caplog.text and "Falling back" in caplog.text


def test_an_explicitly_named_corrupt_checkpoint_and_no_good_one_are_errors(tmp_path):
    from haystack_distill.training import CheckpointCorruptError, _resolve_resume

    steps = _run_to_checkpoints(tmp_path)
    (steps[-1] / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointCorruptError, match=rf"{steps[-1] / 'state.pt'} is corrupt"):
        _resolve_resume(_config(tmp_path, resume=str(steps[-1])))
    (steps[-1] / "checksum.json").unlink()  # as written before checksums: the load itself fails, by name
    with pytest.raises(CheckpointCorruptError, match=rf"{steps[-1] / 'state.pt'} cannot be read \(EOFError"):
        _resolve_resume(_config(tmp_path, resume=str(steps[-1])))
    for step in steps:
        (step / "state.pt").write_bytes(b"x")
    with pytest.raises(CheckpointCorruptError, match="No readable checkpoint is left.*start again without --resume"):
        _resolve_resume(_config(tmp_path, resume=True))


def test_resuming_after_editing_the_training_file_is_refused(reader_pair, tiny_squad, tmp_path):
    import shutil

    from haystack_distill.training import CheckpointMismatchError

    data = tmp_path / "data"
    shutil.copytree(tiny_squad, data)
    _distil(reader_pair, data, tmp_path / "a", checkpoint_root_dir=tmp_path / "ckpt", checkpoint_every=1)
    squad = json.loads((data / "train.json").read_text())
    squad["data"][0]["title"] = "edited"
    (data / "train.json").write_text(json.dumps(squad))
    with pytest.raises(CheckpointMismatchError, match="train_file"):
        _distil(reader_pair, data, tmp_path / "b", checkpoint_root_dir=tmp_path / "ckpt", resume=True)


def test_the_hf_trainer_adapter_stops_on_a_nan_loss_and_never_saves_nan_weights(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from haystack_distill.hf import DistillationTrainer, DistillationTrainingArguments

    cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    teacher, student = BertForSequenceClassification(cfg), BertForSequenceClassification(cfg)
    with torch.no_grad():
        teacher.classifier.bias.fill_(math.nan)  # a broken teacher: NaN logits
    rows = [{"input_ids": torch.tensor([2, 5, 6, 3]), "attention_mask": torch.ones(4, dtype=torch.long),
             "labels": torch.tensor(i % 2)} for i in range(8)]
    args = DistillationTrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                                         save_strategy="no", per_device_train_batch_size=4, max_steps=2,
                                         logging_strategy="no", disable_tqdm=True, precompute_teacher_logits=False)
    trainer = DistillationTrainer(student, args, teacher_model=teacher, train_dataset=rows)
    with pytest.raises(DivergenceError, match="diverged at step 1: loss is nan"):
        trainer.train()
    with torch.no_grad():
        student.classifier.bias.fill_(math.inf)
    with pytest.raises(DivergenceError, match="the student has non-finite weights"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "model.safetensors").exists()


# -- 5. augmentation -------------------------------------------------------------------------------------------
@pytest.fixture()
def augment_inputs(tmp_path_factory):
    """(squad file, MLM folder, GloVe file) built by test_augment's fixtures' recipe."""
    import test_augment

    root = tmp_path_factory.mktemp("aug")
    squad = root / "train.json"
    squad.write_text(json.dumps(test_augment._dataset()))
    return squad, test_augment.mlm_dir.__wrapped__(tmp_path_factory), test_augment.glove_file.__wrapped__(
        tmp_path_factory)


def test_a_truncated_progress_file_is_redone_on_resume(augment_inputs, tmp_path, monkeypatch, caplog):
    from augment.api import augment_squad

    squad, mlm, glove = augment_inputs
    run = lambda out: augment_squad(squad, out, glove, str(mlm), device="cpu", show_progress=False)  # noqa: E731
    run(tmp_path / "full.json")
    restore = kill_augmentation_on_second_article(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "out.json")
    restore()
    progress = tmp_path / "out.json.partial" / "article-0000000.json"
    progress.write_bytes(progress.read_bytes()[:-40])  # e.g. a disk that filled up
    report = run(tmp_path / "out.json")
    assert report.resumed_articles == 0 and "is damaged" in caplog.text and str(progress) in caplog.text
    assert json.loads((tmp_path / "out.json").read_text())  # valid JSON ...
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "full.json").read_bytes()  # ... and the same file


def test_augment_never_writes_over_its_input(augment_inputs):
    from augment.api import augment_squad

    squad, mlm, glove = augment_inputs
    before = squad.read_bytes()
    with pytest.raises(ValueError, match="is the --squad_path file"):
        augment_squad(squad, squad, glove, str(mlm), device="cpu", overwrite=True, show_progress=False)
    assert squad.read_bytes() == before


def test_augment_cli_needs_a_model_folder(capsys):
    from augment.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--squad_path", "in.json", "--output_path", "out.json"])
    assert exit_info.value.code == 2 and "--model" in capsys.readouterr().err


# -- 6. CLI ----------------------------------------------------------------------------------------------------
def _cli_args(tiny_models, squad, out, *extra):
    return ["distil-reader", "--teacher", str(tiny_models["teacher"]), "--student", str(tiny_models["student"]),
            "--data-dir", str(squad), "--train-filename", "train.json", "--output", str(out), "--epochs", "1",
            "--max-seq-len", "96", "--doc-stride", "32", "--max-query-length", "24", "--device", "cpu", *extra]


@pytest.mark.parametrize("case, message", [
    ("temperature", "temperature must be > 0"),
    ("missing_teacher", "--teacher /no/such/teacher: no such folder"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(tiny_models, tiny_squad, tmp_path, capsys, case, message):
    from haystack_distill.cli import main

    args = _cli_args(tiny_models, tiny_squad, tmp_path / "out")
    if case == "temperature":
        args += ["--temperature", "0"]
    else:
        args[args.index("--teacher") + 1] = "/no/such/teacher"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError if case == "temperature" else FileNotFoundError, match=message):
        main(args + ["--debug"])  # the traceback on request


# -- 7. refused before any teacher work ------------------------------------------------------------------------
def _no_teacher_pass(teacher, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the teacher must not run")

    monkeypatch.setattr(teacher.inferencer.model, "forward", boom)


def test_teacher_model_none_is_refused_and_points_to_train_reader(reader_pair, tiny_squad, tmp_path):
    _, make_student, _ = reader_pair
    with pytest.raises(ValueError, match=r"teacher_model is None.*train_reader"):
        make_student().distil_prediction_layer_from(None, str(tiny_squad), "train.json", save_dir=str(tmp_path))


@pytest.mark.parametrize("lr", [-1, 0, math.nan])
def test_a_non_positive_learning_rate_is_refused_before_the_teacher_pass(reader_pair, tiny_squad, tmp_path,
                                                                        monkeypatch, lr):
    _no_teacher_pass(reader_pair[0], monkeypatch)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        _distil(reader_pair, tiny_squad, tmp_path / "out", learning_rate=lr)


def test_a_tokenizer_larger_than_the_embedding_matrix_is_refused_naming_both_sizes(reader_pair, tiny_squad,
                                                                                   tmp_path, monkeypatch):
    from conftest import build_tiny_bert, tiny_vocab

    from haystack_distill.reader import DistillableFARMReader

    teacher = reader_pair[0]
    _no_teacher_pass(teacher, monkeypatch)
    student = DistillableFARMReader(str(build_tiny_bert(tmp_path / "s", layers=1, hidden=16)), **READER_KW)
    rows = len(tiny_vocab()) - 7
    hf = student.inferencer.model.language_model.model
    hf.set_input_embeddings(nn.Embedding(rows, 16))
    with pytest.raises(ValueError, match=rf"tokenizer has {len(tiny_vocab())} tokens but its embedding matrix only "
                                         rf"{rows} rows"):
        student.distil_prediction_layer_from(teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / "o"),
                                             **FAST)


# -- 2b. what a run writes and deletes is its own (issue 30) ---------------------------------------------------
def test_an_edited_weights_file_in_a_previous_output_is_never_replaced(reader_pair, tiny_squad, tmp_path):
    from haystack_distill.safety import UnsafeOutputError

    out = tmp_path / "out"
    _distil(reader_pair, tiny_squad, out)
    weights = out / "language_model.bin"
    edited = weights.read_bytes() + b"user's edit"
    weights.write_bytes(edited)
    with pytest.raises(UnsafeOutputError, match=r"changed since \(language_model.bin\)"):
        _distil(reader_pair, tiny_squad, out)
    assert weights.read_bytes() == edited


UNWRITABLE = {"parent is a file": lambda tmp: tmp / "notes.txt" / "out",
              "read-only file system": lambda tmp: __import__("pathlib").Path("/proc/haystack-distill-test/out")}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_an_output_that_cannot_be_written_is_refused_before_the_teacher_pass(reader_pair, tiny_squad, tmp_path,
                                                                            monkeypatch, case):
    from haystack_distill.safety import UnsafeOutputError

    (tmp_path / "notes.txt").write_text("a file")
    _no_teacher_pass(reader_pair[0], monkeypatch)
    with pytest.raises(UnsafeOutputError, match="cannot write .*out"):
        _distil(reader_pair, tiny_squad, UNWRITABLE[case](tmp_path))


def test_cli_output_file_that_cannot_be_written_is_one_line_exit_2(tiny_models, tiny_squad, tmp_path, capsys):
    from haystack_distill.cli import main

    (tmp_path / "notes.txt").write_text("a file")
    code = main(["evaluate-reader", "--reader", str(tiny_models["teacher"]), "--squad", str(tiny_squad / "train.json"),
                 "--output", str(tmp_path / "notes.txt" / "results.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "cannot write" in err[-1] and "notes.txt is a file" in err[-1]


def test_distil_general_never_deletes_a_users_checkpoints_folder(tmp_path, tmp_path_factory):
    import test_general

    from haystack_distill.general import distil_general
    from haystack_distill.safety import UnsafeOutputError

    teacher = test_general.teacher.__wrapped__(tmp_path_factory)
    texts = test_general._texts(tmp_path / "texts.txt")
    mine = tmp_path / "mine.checkpoints"
    mine.mkdir()
    (mine / "notes.md").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match=r"mine.checkpoints holds entries this tool did not write \(notes"):
        distil_general(teacher, texts, tmp_path / "mine", layers=2, epochs=1, **test_general.FAST)
    assert (mine / "notes.md").read_text() == "keep me" and not (tmp_path / "mine").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_augment_never_deletes_a_users_partial_folder(augment_inputs, tmp_path, overwrite):
    from augment.api import augment_squad
    from haystack_distill.safety import UnsafeOutputError

    squad, mlm, glove = augment_inputs
    partial = tmp_path / "out.json.partial"
    partial.mkdir()
    (partial / "notes.md").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match=r"out.json.partial holds entries this tool did not write"):
        augment_squad(squad, tmp_path / "out.json", glove, str(mlm), device="cpu", show_progress=False,
                      overwrite=overwrite)
    assert (partial / "notes.md").read_text() == "keep me"


def test_augment_keeps_an_article_without_paragraphs(augment_inputs, tmp_path):
    from augment.api import augment_squad

    squad, mlm, glove = augment_inputs
    data = json.loads(squad.read_text())
    data["data"].append({"title": "empty", "paragraphs": []})
    (tmp_path / "in.json").write_text(json.dumps(data))
    augment_squad(tmp_path / "in.json", tmp_path / "out.json", glove, str(mlm), device="cpu", show_progress=False)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["data"][-1] == {"title": "empty", "paragraphs": []}
    assert not (tmp_path / "out.json.partial").exists()


def test_a_reader_path_with_an_equals_sign_is_a_path_not_name_equals_path(tmp_path):
    from haystack_distill.evaluation.cli import reader_paths

    odd = tmp_path / "lr=1e-4"
    odd.mkdir()
    assert reader_paths([str(odd), f"best={odd}"]) == {str(odd): str(odd), "best": str(odd)}


# -- 8. export-reader on hostile input (issue 30) ---------------------------------------------------------------
def _tiny_qa(path, **config):
    """A 1-layer BERT QA folder (transformers format) whose config takes ``config``."""
    from conftest import build_tiny_bert
    from transformers import BertConfig, BertForQuestionAnswering

    build_tiny_bert(path, layers=1, hidden=16)
    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig.from_pretrained(path, **config)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def haystack_reader(tmp_path_factory):
    """A tiny reader saved by FARMReader.save (language_model.bin, prediction_head_0.bin, ...)."""
    from haystack_distill.reader.export import load_reader

    root = tmp_path_factory.mktemp("hostile")
    load_reader(_tiny_qa(root / "hf"), **READER_KW).save(root / "reader")
    return root / "reader"


def _export_cli(capsys, *args):
    """(exit code, stderr) of export-reader; bad input must be one line."""
    from haystack_distill.cli import main

    code = main(["export-reader", *map(str, args)])
    err = capsys.readouterr().err
    if code == 2:
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return code, err


def _own_copy(folder, tmp_path):
    import shutil
    from pathlib import Path

    return Path(shutil.copytree(folder, tmp_path / "reader"))


@pytest.mark.parametrize("file", ["language_model.bin", "model.safetensors"])
def test_export_reader_names_a_truncated_weights_file(haystack_reader, tmp_path, capsys, file):
    reader = _own_copy(haystack_reader, tmp_path) if file == "language_model.bin" else _tiny_qa(tmp_path / "hf")
    data = (reader / file).read_bytes()
    (reader / file).write_bytes(data[:len(data) // 2])
    code, err = _export_cli(capsys, "--reader", reader, "--output", tmp_path / "out")
    assert code == 2 and f"{file} is damaged or truncated" in err and "download it again" in err
    assert not (tmp_path / "out").exists()


def test_export_reader_refuses_an_opset_it_cannot_write_before_loading(haystack_reader, tmp_path, capsys,
                                                                       monkeypatch):
    from haystack_distill.reader import export

    monkeypatch.setattr(export, "load_reader", lambda *a, **k: pytest.fail("the reader must not be loaded"))
    code, err = _export_cli(capsys, "--reader", haystack_reader, "--output", tmp_path / "out", "--opset", "3")
    assert code == 2 and "--opset 3 is not one the ONNX exporter can write" in err
    assert f"from {export.MIN_OPSET} to {export.max_opset()}" in err and not (tmp_path / "out").exists()


def test_export_reader_max_seq_len_is_checked_against_the_positions_of_the_model(tmp_path, capsys):
    reader = _tiny_qa(tmp_path / "short", max_position_embeddings=64)
    code, err = _export_cli(capsys, "--reader", reader, "--output", tmp_path / "out")
    assert code == 2 and "--max-seq-len 256 is longer than the reader can read" in err
    assert "max_position_embeddings=64" in err and "pass --max-seq-len 64 or less" in err
    assert not (tmp_path / "out").exists()
    code, _ = _export_cli(capsys, "--reader", reader, "--output", tmp_path / "out", "--max-seq-len", "64",
                          "--doc-stride", "16", "--max-query-length", "24")
    assert code == 0 and json.loads((tmp_path / "out" / "processor_config.json").read_text())["max_seq_len"] == 64


def test_a_reader_with_one_token_type_exports_without_token_type_ids(tmp_path):
    import numpy as np
    import onnxruntime
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from haystack_distill.reader.export import export_reader

    reader = _tiny_qa(tmp_path / "one_type", type_vocab_size=1)
    out = export_reader(reader, tmp_path / "onnx", max_seq_len=96, doc_stride=32, max_query_length=24)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert json.loads((out / "onnx_model_config.json").read_text())["language_model_class"] == "Roberta"
    batch = AutoTokenizer.from_pretrained(str(out))(["who is it?"], ["a baker in paris."], return_tensors="pt")
    assert "token_type_ids" not in batch  # the exported tokenizer emits none either
    with torch.no_grad():  # the model's only token type is 0: what it computes without token_type_ids
        expected = AutoModelForQuestionAnswering.from_pretrained(str(reader)).eval()(**batch).start_logits
    start, _ = session.run(None, {k: v.numpy().astype(np.int64) for k, v in batch.items()})
    np.testing.assert_allclose(start, expected.numpy(), atol=1e-5)


def test_a_pickle_in_a_reader_folder_is_refused_by_name_and_never_executed(haystack_reader, tmp_path, capsys):
    import pickle
    from pathlib import Path

    reader, ran = _own_copy(haystack_reader, tmp_path), tmp_path / "the pickle ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    (reader / "prediction_head_0.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    code, err = _export_cli(capsys, "--reader", reader, "--output", tmp_path / "out")
    assert code == 2 and "prediction_head_0.bin holds pickled objects that are not tensors" in err
    assert not ran.exists() and not (tmp_path / "out").exists()


def test_export_reader_never_writes_inside_the_reader_folder(haystack_reader, tmp_path, capsys):
    from haystack_distill.reader.export import export_reader

    reader = _own_copy(haystack_reader, tmp_path)
    before = _tree(reader)
    with pytest.raises(ValueError, match="--output .* is inside the --reader folder .* Choose a --output outside"):
        export_reader(reader, reader / "onnx")
    code, err = _export_cli(capsys, "--reader", reader, "--output", reader / "onnx")
    assert code == 2 and "is inside the --reader folder" in err
    assert _tree(reader) == before


def test_the_work_folder_of_a_killed_export_is_removed_by_the_next_run_but_no_one_elses(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    from haystack_distill.io import PARTIAL_MARKER, atomic_dir

    killed = ("import os, signal, sys\nfrom haystack_distill.io import atomic_dir\n"
              "with atomic_dir(sys.argv[1]) as tmp:\n    (tmp / 'model.onnx').write_bytes(b'half')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    run = subprocess.run([sys.executable, "-c", killed, str(tmp_path / "onnx")], capture_output=True)
    assert run.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".onnx.partial-") and not (tmp_path / "onnx").exists()
    mine = {"no marker": tmp_path / ".mine.partial-1", "plain tmp": tmp_path / ".onnx.abc.tmp",
            "live run": tmp_path / ".live.partial-2"}
    for folder in mine.values():
        folder.mkdir()
        (folder / "notes.txt").write_text("keep me")
    (mine["live run"] / PARTIAL_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                                "target": "live"}))
    with atomic_dir(tmp_path / "int8") as tmp:  # the next run into the same parent
        (tmp / "model.onnx").write_bytes(b"whole")
    assert not left[0].exists() and (tmp_path / "int8" / "model.onnx").read_bytes() == b"whole"
    assert all((folder / "notes.txt").read_text() == "keep me" for folder in mine.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["int8", *(f.name for f in mine.values())])


def test_a_folders_own_modelling_code_is_never_run(tmp_path):
    from conftest import build_tiny_bert

    from haystack_distill.general.student import load_encoder

    ran = tmp_path / "custom code ran"
    folder = build_tiny_bert(tmp_path / "custom", layers=1, hidden=16, qa=False)
    (folder / "custom.py").write_text(f"from pathlib import Path\nPath({str(ran)!r}).touch()\n"
                                      "from transformers import BertConfig as EvilConfig, BertModel as EvilModel\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.EvilConfig", "AutoModel": "custom.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    assert type(load_encoder(folder, "teacher")).__name__ == "BertModel"  # the plain architecture, from transformers
    config["model_type"] = "evil-bert"  # no architecture of transformers' own: refused, with no prompt on stdin
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"teacher .*custom cannot be loaded .*trust_remote_code=True"):
        load_encoder(folder, "teacher")
    assert not ran.exists()


# -- 9. inputs that became silently wrong results or tracebacks (issue 30) -------------------------------------
@pytest.mark.parametrize("answer", [{"text": "Paris", "answer_start": True}, {"text": "", "answer_start": 0},
                                    {"text": "Paris", "answer_start": -6}, {"text": " ", "answer_start": 5},
                                    {"text": "Paris", "answer_start": "0"}, {"text": "Paris", "answer_start": 1.5},
                                    {"text": "Paris", "answer_start": 99}, {"text": "Paris", "answer_start": 3}])
def test_answers_that_would_become_wrong_labels_are_refused(tmp_path, answer):
    from haystack_distill.squad import validate_squad_file

    context = "Paris is in France. Paris"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Where?", "answers": [answer]}]}]}]}))
    with pytest.raises(SquadFormatError, match="q1"):
        validate_squad_file(path)


def test_evaluation_refuses_repeated_question_ids():
    from haystack_distill.evaluation.reader import squad_questions

    para = {"context": "Paris is in France.", "qas": [{"id": "a", "question": "Where?", "answers": []}] * 2}
    with pytest.raises(ValueError, match="1 question ids occur more than once.*'a'"):
        squad_questions([para])
    assert len(squad_questions([{**para, "qas": para["qas"][:1]}], max_questions=5)) == 1


def test_result_files_are_strict_json(tmp_path):
    from haystack_distill.io import atomic_write_json

    path = atomic_write_json(tmp_path / "r.json", {"loss": float("nan"), "rows": [{"f1": float("-inf")}, 2.5]})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": None, "rows": [{"f1": None}, 2.5]}


def test_windows_with_gaps_are_refused_before_any_model_loads(monkeypatch, capsys):
    from haystack_distill import cli
    from haystack_distill.reader import DistillableFARMReader

    monkeypatch.setattr(DistillableFARMReader, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    code = cli.main(["evaluate-reader", "--reader", "x", "--squad", "y.json", "--max-seq-len", "128"])
    assert code == 2
    assert "doc_stride=128 must be smaller than max_seq_len - max_query_length = 128 - 64 = 64" in \
        capsys.readouterr().err


def test_a_yaml_config_with_aliases_is_refused_before_it_expands(tmp_path, capsys):
    from haystack_distill.cli import main

    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                   for p, c in zip("abcdefgh", "bcdefghi")]
    bomb.write_text("\n".join(lines) + "\n")
    assert main(["make-transfer", "--config", str(bomb)]) == 2
    assert "YAML aliases (*name) are not supported" in capsys.readouterr().err


def test_a_damaged_features_cache_is_recomputed_not_reused(tiny_models, tiny_squad, tmp_path, caplog):
    import logging

    import torch

    from haystack_distill.reader import DistillableFARMReader, data

    reader = DistillableFARMReader(str(tiny_models["student"]), use_gpu=False, max_seq_len=96, doc_stride=32,
                                   max_query_length=24, num_processes=0, progress_bar=False)
    proc = data.build_processor(reader, 96, 32, 24)
    paragraphs = data.read_paragraphs(tiny_squad / "train.json")
    fresh = data.cached_features(proc, paragraphs, True, tmp_path)
    (stored,) = (tmp_path / "features").glob("*.safetensors")
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0xFF  # a flipped byte in the tensor data: still a readable file, with other values
    stored.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = data.cached_features(proc, paragraphs, True, tmp_path)
    assert "is damaged or unverified" in caplog.text
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    stored.write_bytes(stored.read_bytes()[:100])  # truncated: recomputed too, no SafetensorError
    assert all(torch.equal(fresh[k], v) for k, v in data.cached_features(proc, paragraphs, True, tmp_path).items())


@pytest.mark.parametrize("content, match", [(b"\x7fELF\x02\x01\x01\x00" * 40, "binary"),
                                             ("caf\u00e9 au lait is served hot every single day\n".encode("latin-1"),
                                              "not UTF-8")])
def test_general_distillation_refuses_text_that_is_not_text(tmp_path, content, match):
    from haystack_distill.general import read_texts

    path = tmp_path / "texts.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_texts(path)
    with pytest.raises(ValueError, match="is a folder"):
        read_texts(tmp_path)


def test_resuming_with_another_student_is_refused_not_adopted(reader_pair, tiny_models, tiny_squad, tmp_path):
    from haystack_distill.reader import DistillableFARMReader
    from haystack_distill.training import CheckpointMismatchError

    _distil(reader_pair, tiny_squad, tmp_path / "first", checkpoint_root_dir=tmp_path / "ck", checkpoint_every=2)
    assert list((tmp_path / "ck").rglob("state.pt"))  # the earlier run's checkpoints are still there
    other = DistillableFARMReader(str(tiny_models["student_same_width"]), **READER_KW)
    with pytest.raises(CheckpointMismatchError, match=r"different run: .*student_weights.*--checkpoint-dir"):
        other.distil_prediction_layer_from(reader_pair[0], str(tiny_squad), "train.json",
                                           save_dir=str(tmp_path / "second"), checkpoint_root_dir=tmp_path / "ck",
                                           resume=True, **FAST)
    assert not (tmp_path / "second").exists()


def test_distil_general_resumed_with_another_teacher_is_refused(tmp_path, tmp_path_factory, monkeypatch):
    import test_general

    from haystack_distill.general import distil_general
    from haystack_distill.layer_match import LayerMatchLoss
    from haystack_distill.training import CheckpointMismatchError

    teacher = test_general.teacher.__wrapped__(tmp_path_factory)
    texts = test_general._texts(tmp_path / "texts.txt")
    settings = dict(layers=2, epochs=2, checkpoint_every=3, **test_general.FAST)
    original, calls = LayerMatchLoss.forward, {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] > 4 * 7:  # killed after the step-6 checkpoint
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(LayerMatchLoss, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        distil_general(teacher, texts, tmp_path / "out", **settings)
    monkeypatch.setattr(LayerMatchLoss, "forward", original)
    other = tmp_path_factory.mktemp("other") / "teacher"
    __import__("shutil").copytree(teacher, other)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(other))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(2)
    model.save_pretrained(str(other))
    with pytest.raises(CheckpointMismatchError, match="different run"):
        distil_general(other, texts, tmp_path / "out", **settings)
    assert (tmp_path / "out.checkpoints" / "step-6").is_dir() and not (tmp_path / "out").exists()


def test_a_null_config_value_names_its_key(tmp_path, capsys):
    from haystack_distill.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("teacher: null\ntexts: t.txt\noutput: out\nlayers: 2\n")
    assert main(["distil-general", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("teacher: null is not a value; give one or leave the key out (it is required).")


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_a_non_finite_or_negative_layer_weight_is_refused_when_set(value):
    from haystack_distill.general import GeneralDistillationConfig
    from haystack_distill.reader.config import IntermediateLayerConfig

    with pytest.raises(ValueError, match=rf"attention_weight must be a number >= 0, got {value!r}"):
        GeneralDistillationConfig(layers=2, attention_weight=value).validate()
    with pytest.raises(ValueError, match=rf"attention_weight must be a number >= 0, got {value!r}"):
        IntermediateLayerConfig("data", "train.json", attention_weight=value).validate()


def test_distil_general_max_seq_len_beyond_the_positions_is_refused_before_loading(tmp_path, tmp_path_factory,
                                                                                  monkeypatch):
    import test_general

    from haystack_distill import general
    from haystack_distill.general import distil

    teacher = test_general.teacher.__wrapped__(tmp_path_factory)
    monkeypatch.setattr(distil, "load_encoder", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match=r"max_seq_len=300 \(--max-seq-len\) is longer than the teacher .* can read "
                                         r"\(256 positions\); pass 256 or less"):
        general.distil_general(teacher, test_general._texts(tmp_path / "t.txt"), tmp_path / "out", layers=2,
                               **{**test_general.FAST, "max_seq_len": 300})


def test_the_half_written_checkpoint_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    half = tmp_path / "ckpt" / ".tmp-step-3"
    half.mkdir(parents=True)
    (half / "state.pt").write_bytes(b"cut short by kill -9")
    model = nn.Linear(3, 1)
    train(model, _linear_data(), lambda b: ((model(b["x"]) - b["y"]) ** 2).mean(), _config(tmp_path, n_epochs=1))
    assert not half.exists() and (tmp_path / "ckpt" / "step-6" / "state.pt").is_file()


def test_embedding_distillation_resumed_with_another_student_is_refused(tmp_path, tmp_path_factory, monkeypatch):
    import test_embeddings

    from haystack_distill.embeddings import distil, distil_embeddings_from, load_sentence_transformer, truncate_layers
    from haystack_distill.training import CheckpointMismatchError

    teacher = load_sentence_transformer(test_embeddings.build_sentence_bert(tmp_path_factory.mktemp("t")))
    sentences = test_embeddings.make_sentences(64)
    kw = dict(epochs=2, batch_size=16, learning_rate=1e-3, cache_dir=tmp_path, checkpoint_every=1,
              checkpoint_dir=tmp_path / "ck", show_progress_bar=False)
    with monkeypatch.context() as patch:
        patch.setitem(distil.EMBEDDING_LOSSES, "mse", embedding_loss_killed_at(3))
        with pytest.raises(KeyboardInterrupt):
            distil_embeddings_from(truncate_layers(teacher, [0, 1]), teacher, sentences, **kw)
    with pytest.raises(CheckpointMismatchError, match="student_weights"):
        distil_embeddings_from(truncate_layers(teacher, [1, 2]), teacher, sentences, resume=True, **kw)
