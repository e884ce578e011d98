"""Promises: nothing lost, nothing silently wrong (issue 18). One test (or a few) per guarantee, on tiny models.

1. Training stops at the first non-finite loss or gradient (DivergenceError: step, last finite loss) and
   never updates or saves non-finite weights.
"""

import math

import pytest
import torch
from torch import nn

from haystack_distill.safety import DivergenceError
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
    with pytest.raises(UnsafeOutputError, match=r"did not write \(notes.txt\)"):
        _distil(reader_pair, tiny_squad, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_output_of_an_older_version_without_manifest_stays_replaceable(reader_pair, tiny_squad, tmp_path):
    from haystack_distill.safety import MANIFEST

    out = tmp_path / "old"
    _distil(reader_pair, tiny_squad, out)
    (out / MANIFEST).unlink()
    _distil(reader_pair, tiny_squad, out)
    assert (out / MANIFEST).is_file()


def test_a_diverging_reader_run_raises_and_saves_nothing(reader_pair, tiny_squad, tmp_path):
    with pytest.raises(DivergenceError, match="diverged at step"):
        _distil(reader_pair, tiny_squad, tmp_path / "nan", learning_rate=1e6, distillation_loss_weight=1.0,
                distillation_loss="mse", n_epochs=3)
    assert not (tmp_path / "nan").exists()


def test_a_reader_with_non_finite_weights_is_never_saved(reader_pair, tmp_path):
    from haystack_distill.reader import common

    _, make_student, _ = reader_pair
    student = make_student()
    with torch.no_grad():
        next(student.inferencer.model.parameters()).view(-1)[0] = math.nan
    with pytest.raises(DivergenceError, match="non-finite weights"):
        common.save_reader(student, tmp_path / "s", {})
    assert not (tmp_path / "s").exists()
