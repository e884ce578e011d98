"""TinyBERT intermediate-layer distillation on a student of another depth, width and head count."""

import inspect
import json
import math

import pytest
import torch

from haystack_distill import losses
from haystack_distill.layers import resolve_layer_mapping, uniform_layer_indices

READER_KW = dict(use_gpu=False, max_seq_len=96, doc_stride=32, max_query_length=24, num_processes=0,
                 progress_bar=False)
FAST = dict(batch_size=8, n_epochs=1, evaluate_every=0, show_progress=False)


@pytest.fixture(scope="module")
def pair(tiny_models):
    from haystack_distill.reader import DistillableFARMReader

    teacher = DistillableFARMReader(str(tiny_models["teacher"]), **READER_KW)  # 4 layers, 32 wide, 4 heads
    return teacher, lambda: DistillableFARMReader(str(tiny_models["student"]), **READER_KW)  # 2, 16, 2


def test_signature_is_farm_haystack_compatible():
    from haystack.nodes import FARMReader

    from haystack_distill.reader import DistillableFARMReader

    ours = inspect.signature(DistillableFARMReader.distil_intermediate_layers_from).parameters
    theirs = inspect.signature(FARMReader.distil_intermediate_layers_from).parameters
    positional = [p for p in ours.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in positional] == list(theirs)
    assert all(ours[n].default == p.default for n, p in theirs.items())


def test_smaller_student_distils_and_projections_train(pair, tiny_squad, tmp_path):
    teacher, make_student = pair
    student = make_student()
    metrics = student.distil_intermediate_layers_from(
        teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / "s1"), learning_rate=1e-3, **FAST)
    assert math.isfinite(metrics["loss"]) and metrics["last_attention"] > 0 and metrics["last_hidden"] > 0
    assert (tmp_path / "s1" / "projections.safetensors").is_file()
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "s1" / "projections.safetensors"))
    assert set(saved) == {"embeddings.weight", "layer_0.weight", "layer_1.weight"}
    assert all(v.shape == (32, 16) for v in saved.values())


def test_projection_weights_change_and_loss_falls_on_a_fixed_batch(pair, tiny_squad):
    from haystack_distill.reader import data
    from haystack_distill.reader.intermediate import build_intermediate_loss
    from haystack_distill.training import TrainConfig, build_optimizer, trainable_parameters

    teacher, make_student = pair
    student = make_student()
    loss_fn = build_intermediate_loss(student, teacher, "uniform", prediction_weight=0.0)
    assert loss_fn.mapping == {0: 1, 1: 3}
    proc = data.build_processor(student, 96, 32, 24)
    feats = data.featurize(proc, data.read_paragraphs(tiny_squad / "train.json"))
    batch = {k: v[:8] for k, v in feats.items()}
    named = trainable_parameters([student.inferencer.model, loss_fn])
    assert any(p is loss_fn.projections["layer_0"].weight for _, p in named)  # in the optimizer
    optimizer, _ = build_optimizer(named, TrainConfig(learning_rate=3e-3, warmup_proportion=0.0), 100)
    before = {k: v.clone() for k, v in loss_fn.projections.state_dict().items()}
    values = []
    for _ in range(25):
        loss = loss_fn(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.7 * values[0]
    assert all(not torch.equal(before[k], v) for k, v in loss_fn.projections.state_dict().items())


def test_resume_of_intermediate_stage_is_exact(pair, tmp_path, monkeypatch):
    import json

    from haystack_distill.reader.intermediate import IntermediateLayerLoss
    from haystack_distill.synthetic import make_squad_dataset

    teacher, make_student = pair
    tiny_squad = tmp_path / "data"
    tiny_squad.mkdir()
    (tiny_squad / "train.json").write_text(json.dumps(make_squad_dataset(4, seed=5)))
    kw = dict(learning_rate=1e-3, checkpoint_every=2, batch_size=8, n_epochs=2, evaluate_every=0,
              show_progress=False)
    reference = make_student()
    reference.distil_intermediate_layers_from(teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / "a"),
                                              checkpoint_root_dir=tmp_path / "ca", **kw)
    real_forward, calls = IntermediateLayerLoss.forward, {"n": 0}

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated kill")
        return real_forward(self, batch)

    monkeypatch.setattr(IntermediateLayerLoss, "forward", dying)
    with pytest.raises(KeyboardInterrupt):
        make_student().distil_intermediate_layers_from(teacher, str(tiny_squad), "train.json",
                                                       save_dir=str(tmp_path / "b"),
                                                       checkpoint_root_dir=tmp_path / "cb", **kw)
    monkeypatch.setattr(IntermediateLayerLoss, "forward", real_forward)
    resumed = make_student()
    resumed.distil_intermediate_layers_from(teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / "b"),
                                            checkpoint_root_dir=tmp_path / "cb", resume=True, **kw)
    ref_state = reference.inferencer.model.state_dict()
    for name, value in resumed.inferencer.model.state_dict().items():
        if ".pooler." in name:  # unused by QA, never trained; Haystack initialises it randomly at each load
            continue
        assert torch.allclose(value, ref_state[name], atol=1e-5), name
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "projections.safetensors")), load_file(
        str(tmp_path / "b" / "projections.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.parametrize(
    "mapping, match",
    [({0: 7}, r"teacher layers \[7\]"), ({5: 1}, r"student layers \[5\]"), ({3: 0, 2: 1}, "looks reversed")],
)
def test_bad_layer_mappings(mapping, match):
    with pytest.raises(ValueError, match=match):
        resolve_layer_mapping(mapping, n_student=2, n_teacher=4)


def test_uniform_rejects_deeper_student_and_explains():
    with pytest.raises(ValueError, match="explicit"):
        uniform_layer_indices(4, 6)
    assert uniform_layer_indices(6, 4) == [1, 2, 4, 5]  # non-divisible counts work


def test_attention_kl_needs_eager(pair):
    from haystack_distill.reader.intermediate import check_attention_support

    teacher, _ = pair
    config = teacher.inferencer.model.language_model.model.config
    old = config._attn_implementation
    config._attn_implementation = "sdpa"
    try:
        with pytest.raises(ValueError, match="attn_implementation"):
            check_attention_support(teacher.inferencer.model, "kl", "teacher")
    finally:
        config._attn_implementation = old


def test_attention_losses_pinned():
    torch.manual_seed(0)
    s = torch.randn(2, 2, 3, 3)
    t = torch.randn(2, 4, 3, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    s_mean, t_mean = s.mean(1), t.mean(1)
    sq, count = 0.0, 0
    for b in range(2):
        n = int(mask[b].sum())
        sq += ((s_mean[b, :n, :n] - t_mean[b, :n, :n]) ** 2).sum().item()
        count += n * n
    assert losses.attention_score_mse(s, t, mask).item() == pytest.approx(sq / count, rel=1e-5)

    p_s, p_t = torch.softmax(s, -1), torch.softmax(t[:, :2], -1)
    total, rows = 0.0, 0
    for b in range(2):
        n = int(mask[b].sum())
        for h in range(2):
            for q in range(n):
                ps = p_s[b, h, q, :n] / p_s[b, h, q, :n].sum()
                pt = p_t[b, h, q, :n] / p_t[b, h, q, :n].sum()
                total += (pt * (pt / ps).log()).sum().item()
                rows += 1
    assert losses.attention_kl(p_s, p_t, mask).item() == pytest.approx(total / rows, rel=1e-4)


def _doubled(tiny_squad):
    """An 'augmented' file: every paragraph twice (answers kept), beside the original."""
    import json

    squad = json.loads((tiny_squad / "train.json").read_text())
    squad["data"] = squad["data"] * 2
    (tiny_squad / "train_x2.json").write_text(json.dumps(squad))
    return "train_x2.json"


def test_tinybert_recipe_runs_both_stages_and_predicts_on_augmented_data(pair, tiny_squad, tmp_path):
    teacher, make_student = pair
    aug = _doubled(tiny_squad)
    plain = make_student().distil_prediction_layer_from(
        teacher, str(tiny_squad), "train.json", save_dir=str(tmp_path / "plain"), **FAST)
    results = make_student().distil_tinybert_from(
        teacher, str(tiny_squad), "train.json", str(tmp_path / "tiny"), augmented_train_filename=aug,
        intermediate=dict(learning_rate=1e-3, **FAST), prediction=FAST)
    assert (tmp_path / "tiny" / "stage1_intermediate").is_dir() and results["intermediate"]["last_hidden"] > 0
    # the prediction stage read the augmented file: twice the features, so twice the steps of the plain run
    assert results["prediction"]["global_step"] == 2 * plain["global_step"]
    original = make_student().distil_tinybert_from(
        teacher, str(tiny_squad), "train.json", str(tmp_path / "orig"), augmented_train_filename=aug,
        intermediate=False, prediction=FAST, prediction_on_augmented=False)
    assert original["intermediate"] == {} and not (tmp_path / "orig" / "stage1_intermediate").exists()
    assert original["prediction"]["global_step"] == plain["global_step"]


def test_tinybert_recipe_defaults_are_the_measured_presets(pair, tiny_squad, tmp_path):
    """Without overrides, stage 1 matches hidden states only (attention 0.01, no span KD) at lr 1e-4 and stage 2
    distils at lr 2e-4, T=2, weight 6/7: what the run records say each stage ran with."""
    teacher, make_student = pair
    fast = dict(n_epochs=1, evaluate_every=0, show_progress=False)
    make_student().distil_tinybert_from(teacher, str(tiny_squad), "train.json", str(tmp_path / "tiny"),
                                        intermediate=fast, prediction=fast)
    stage1 = json.loads((tmp_path / "tiny" / "stage1_intermediate" / "distillation.json").read_text())
    stage2 = json.loads((tmp_path / "tiny" / "stage2_prediction" / "distillation.json").read_text())
    assert (stage1["learning_rate"], stage1["batch_size"], stage1["weights"]) == ("0.0001", "16", "[1.0, 1.0, 0.01]")
    assert stage1["prediction"].startswith("['mse', 0.0,")  # no span KD in stage 1
    assert (stage2["learning_rate"], stage2["batch_size"]) == ("0.0002", "16")
    assert (stage2["temperature"], stage2["weight"], stage2["loss"]) == ("2.0", str(6 / 7), "kl_div")
