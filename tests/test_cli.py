"""The ``haystack-distill`` command line: --version, help with defaults, --config, distil-tinybert, evaluate-reader."""

from __future__ import annotations

import argparse
import json
import re
from importlib.metadata import version

import pytest

from haystack_distill import cli

FAST = ["--max-seq-len", "96", "--doc-stride", "32", "--max-query-length", "24"]


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"haystack-distill {version('haystack-distill')}"


def test_every_flag_of_every_sub_command_has_help_showing_its_default():
    subs = _subparsers(cli.build_parser())
    assert {"distil-tinybert", "evaluate-reader", "distil-reader", "distil-general", "export-reader"} <= set(subs)
    for name, sub in subs.items():
        formatter = sub._get_formatter()
        assert isinstance(formatter, cli.DefaultsHelpFormatter), name
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help text"
            shown = formatter._get_help_string(action)
            if not action.required and action.default is not argparse.SUPPRESS:
                assert re.search(r"\bdefault\b", shown, re.IGNORECASE), f"{name} {action.option_strings}: {shown}"


def test_help_text_shows_the_python_api_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["distil-tinybert", "--help"])
    out = _flat(capsys.readouterr().out)
    assert "--intermediate-epochs N passes over the data (default: 1)" in out
    assert "--prediction-epochs N passes over the data (default: 2)" in out
    assert "--intermediate-learning-rate LR AdamW peak learning rate (default: 0.0001)" in out
    assert "--prediction-learning-rate LR AdamW peak learning rate (default: 0.0001)" in out
    assert "--teacher TEACHER fine-tuned teacher reader (Haystack or transformers folder) --student" in out
    with pytest.raises(SystemExit):
        cli.main(["distil-reader", "--help"])
    assert "--batch-size BATCH_SIZE features per step (default: 10)" in _flat(capsys.readouterr().out)


def test_distil_tinybert_defaults_match_distil_tinybert_from_stages():
    """The CLI's stage defaults are the stage methods' defaults with distil_tinybert_from's presets on top."""
    import inspect

    from haystack_distill.reader import DistillableFARMReader

    args = cli.build_parser().parse_args(["distil-tinybert", "--teacher", "t", "--student", "s", "--data-dir", "d",
                                          "--train-filename", "f", "--save-dir", "o"])
    from haystack_distill.reader.presets import TINYBERT_INTERMEDIATE, TINYBERT_PREDICTION
    from haystack_distill.reader.tinybert_cli import stage_kwargs

    stages = stage_kwargs(args)
    for stage, method, presets in (
            ("intermediate", DistillableFARMReader.distil_intermediate_layers_from, TINYBERT_INTERMEDIATE),
            ("prediction", DistillableFARMReader.distil_prediction_layer_from, TINYBERT_PREDICTION)):
        defaults = {**{n: p.default for n, p in inspect.signature(method).parameters.items()}, **presets}
        for key, value in stages[stage].items():
            if key not in ("show_progress", "checkpoint_root_dir"):
                assert value == defaults[key], (stage, key)
        assert stages[stage]["checkpoint_root_dir"] == defaults["checkpoint_root_dir"]


@pytest.mark.parametrize("command", ["distil-reader", "distil-tinybert"])
def test_hard_loss_padding_flag_matches_the_python_api(capsys, command):
    from haystack_distill.reader.config import HARD_LOSS_PADDING, HARD_LOSS_PADDING_ALIASES, PredictionLayerConfig

    required = [command, "--teacher", "t", "--student", "s", "--data-dir", "d", "--train-filename", "f",
                "--save-dir", "o"]
    parser = cli.build_parser()
    assert parser.parse_args(required).hard_loss_padding == PredictionLayerConfig.hard_loss_padding
    action = _subparsers(parser)[command]._option_string_actions["--hard-loss-padding"]
    assert set(action.choices) == {*HARD_LOSS_PADDING, *HARD_LOSS_PADDING_ALIASES}
    for name in action.choices:
        assert parser.parse_args([*required, "--hard-loss-padding", name]).hard_loss_padding == name
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = _flat(capsys.readouterr().out)
    assert "--hard-loss-padding {padded,slices,batch}" in out and "max_seq_len: the old name of slices" in out


@pytest.fixture
def captured(monkeypatch):
    """Replace the distil-tinybert and eval-sts handlers by recorders of the parsed arguments."""
    from haystack_distill.embeddings import cli as embeddings_cli
    from haystack_distill.reader import tinybert_cli

    seen: dict = {}
    monkeypatch.setattr(tinybert_cli, "_handler", lambda args: seen.setdefault("args", args) and 0)
    monkeypatch.setattr(embeddings_cli, "eval_sts_command", lambda args: seen.setdefault("args", args) and 0)
    return seen


CONFIG = {"teacher": "models/teacher", "student": "models/student", "data-dir": "data", "train_filename": "t.json",
          "save-dir": "out", "intermediate_epochs": 3, "prediction-learning-rate": "1e-4", "layer-mapping": "0:1,1:3",
          "no_intermediate": True, "teacher-top-k": 8}


def _write_config(path, data) -> str:
    if path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_config_values_become_defaults_and_command_line_flags_win(tmp_path, captured, suffix):
    config = _write_config(tmp_path / f"run{suffix}", CONFIG)
    assert cli.main(["distil-tinybert", "--config", config, "--intermediate-epochs", "7", "--save-dir", "cli-out"]) == 0
    args = captured["args"]
    assert (args.teacher, args.student, args.data_dir, args.train_filename) == (
        "models/teacher", "models/student", "data", "t.json")  # required flags satisfied by the file
    assert args.intermediate_epochs == 7 and args.save_dir == "cli-out"  # the command line wins
    assert args.prediction_learning_rate == 1e-4 and args.layer_mapping == {0: 1, 1: 3}
    assert args.no_intermediate is True and args.teacher_top_k == 8
    assert args.prediction_epochs == 2  # neither in the file nor on the command line: the parser default


def test_yaml_native_values_and_explicit_default_on_the_command_line(tmp_path, captured):
    config = _write_config(tmp_path / "run.yaml", {**CONFIG, "prediction_epochs": 4, "caching": True})
    assert cli.main(["distil-tinybert", "--config", config, "--prediction-epochs", "2"]) == 0
    assert captured["args"].prediction_epochs == 2 and captured["args"].caching is True


def test_config_list_replaced_not_extended_by_the_command_line(tmp_path, captured):
    config = _write_config(tmp_path / "sts.json", {"model": ["a", "b"], "sts": "sts.csv"})
    assert cli.main(["eval-sts", "--config", config]) == 0
    assert captured.pop("args").model == ["a", "b"]
    assert cli.main(["eval-sts", "--model", "c", "--config", config]) == 0
    assert captured["args"].model == ["c"]


@pytest.mark.parametrize("data, message", [
    ({**CONFIG, "epochs": 3}, "unknown key 'epochs' for distil-tinybert; valid keys: "),
    ({**CONFIG, "intermediate_epochs": "many"}, "intermediate_epochs: 'many' is not valid"),
    ({**CONFIG, "intermediate_epochs": 0}, "intermediate_epochs: 0 is not valid (expected an integer >= 1"),
    ({**CONFIG, "loss": "hinge"}, "loss: 'hinge' is not one of kl_div, mse, soft_ce"),
    ({**CONFIG, "caching": "yes"}, "caching is a switch; give true or false"),
    (["teacher", "t"], "must hold a mapping of flag names to values, got list"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, captured, capsys, data, message):
    config = _write_config(tmp_path / "bad.json", data)
    assert cli.main(["distil-tinybert", "--config", config]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "args" not in captured
    if "unknown key" in message:
        assert "intermediate-epochs" in err and "prediction-learning-rate" in err


def test_missing_or_unknown_config_file_is_one_line_exit_2(tmp_path, captured, capsys):
    assert cli.main(["distil-tinybert", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "--config" in capsys.readouterr().err
    (tmp_path / "run.toml").write_text("x = 1")
    assert cli.main(["distil-tinybert", "--config", str(tmp_path / "run.toml")]) == 2
    assert "use .json, .yaml or .yml" in capsys.readouterr().err


def _no_model_loads(monkeypatch):
    from haystack.nodes import FARMReader

    import haystack_distill.reader as reader_pkg

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input checks failed")

    monkeypatch.setattr(reader_pkg, "DistillableFARMReader", refuse)
    monkeypatch.setattr(FARMReader, "__init__", refuse)


@pytest.mark.parametrize("change, message", [
    ({"--train-filename": "missing.json"}, "--train-filename missing.json: no such file"),
    ({"--augmented-train-filename": "aug.json"}, "--augmented-train-filename aug.json: no such file"),
    ({"--data-dir": "/nonexistent/data"}, "--data-dir /nonexistent/data: no such folder"),
    ({"--teacher": "/nonexistent/teacher"}, "--teacher /nonexistent/teacher: no such folder"),
])
def test_distil_tinybert_bad_input_fails_before_loading_models(tiny_models, tiny_squad, tmp_path, capsys,
                                                               monkeypatch, change, message):
    _no_model_loads(monkeypatch)
    flags = {"--teacher": str(tiny_models["teacher"]), "--student": str(tiny_models["student"]),
             "--data-dir": str(tiny_squad), "--train-filename": "train.json", "--save-dir": str(tmp_path / "o"),
             **change}
    assert cli.main(["distil-tinybert", *[x for kv in flags.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_distil_tinybert_refuses_a_save_dir_with_foreign_files(tiny_models, tiny_squad, tmp_path, capsys,
                                                               monkeypatch):
    _no_model_loads(monkeypatch)
    (tmp_path / "o" / "stage2_prediction").mkdir(parents=True)
    (tmp_path / "o" / "stage2_prediction" / "notes.txt").write_text("mine")
    assert cli.main(["distil-tinybert", "--teacher", str(tiny_models["teacher"]), "--student",
                     str(tiny_models["student"]), "--data-dir", str(tiny_squad), "--train-filename", "train.json",
                     "--save-dir", str(tmp_path / "o")]) == 2
    assert "notes.txt" in capsys.readouterr().err


def _augmented(tiny_squad) -> str:
    """An 'augmented' file: every paragraph twice (answers kept)."""
    squad = json.loads((tiny_squad / "train.json").read_text())
    squad["data"] = squad["data"] * 2
    (tiny_squad / "train_x2_cli.json").write_text(json.dumps(squad))
    return "train_x2_cli.json"


def _tinybert(tiny_models, tiny_squad, save_dir, *extra) -> list:
    return ["distil-tinybert", "--teacher", str(tiny_models["teacher"]), "--student", str(tiny_models["student"]),
            "--data-dir", str(tiny_squad), "--train-filename", "train.json", "--save-dir", str(save_dir),
            "--intermediate-epochs", "1", "--prediction-epochs", "1", "--intermediate-batch-size", "8",
            "--prediction-batch-size", "8", "--intermediate-learning-rate", "1e-3", "--cpu", "--quiet", *FAST, *extra]


def test_distil_tinybert_runs_both_stages_then_evaluate_reader_compares(tiny_models, tiny_squad, tmp_path, capsys):
    aug = _augmented(tiny_squad)
    out = tmp_path / "tiny"
    code = cli.main(_tinybert(tiny_models, tiny_squad, out, "--augmented-train-filename", aug, "--dev-filename",
                              "dev.json", "--checkpoint-root-dir", str(tmp_path / "ckpt"), "--evaluate-every", "0"))
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["intermediate"]["last_hidden"] > 0 and "f1" in metrics["prediction"]
    stage1 = json.loads((out / "stage1_intermediate" / "distillation.json").read_text())
    stage2 = json.loads((out / "stage2_prediction" / "distillation.json").read_text())
    assert stage1["stage"] == "intermediate_layers" and stage1["learning_rate"] == "0.001"
    assert stage2["stage"] == "prediction_layer" and stage2["teacher_top_k"] == "None"

    plain = tmp_path / "plain"
    assert cli.main(_tinybert(tiny_models, tiny_squad, plain, "--no-intermediate", "--augmented-train-filename", aug,
                              "--prediction-on-original", "--checkpoint-root-dir", str(tmp_path / "ckpt2"))) == 0
    plain_metrics = json.loads(capsys.readouterr().out)
    assert plain_metrics["intermediate"] == {} and not (plain / "stage1_intermediate").exists()
    # stage 2 read the augmented file (twice the features) by default, the original with --prediction-on-original
    assert metrics["prediction"]["global_step"] == 2 * plain_metrics["prediction"]["global_step"]

    rows_file = tmp_path / "results" / "rows.json"
    assert cli.main(["evaluate-reader", "--reader", f"teacher={tiny_models['teacher']}",
                     f"tiny={out / 'stage2_prediction'}", "--squad", str(tiny_squad / "dev.json"), "--max-questions",
                     "5", "--repeats", "2", "--output", str(rows_file), *FAST]) == 0
    printed = capsys.readouterr().out
    from haystack_distill.evaluation.reader import format_table

    rows = json.loads(rows_file.read_text())
    assert [r["reader"] for r in rows] == ["teacher", "tiny"] and all(r["questions"] == 5 for r in rows)
    assert rows[0]["speedup_vs_first"] == 1.0 and rows[1]["parameters"] < rows[0]["parameters"]
    assert format_table(rows) in printed  # the benchmark's table, with the values written to the file
    assert [p.name for p in rows_file.parent.iterdir()] == ["rows.json"]  # atomic: no temporary file left


@pytest.mark.parametrize("readers, squad, output, message", [
    (["/nonexistent/reader"], "dev.json", None, "--reader /nonexistent/reader: no such folder"),
    (["a={teacher}", "a={student}"], "dev.json", None, "the name 'a' is given twice"),
    (["{teacher}"], "missing.json", None, "does not exist"),
    (["{teacher}"], "dev.json", ".", "is a folder; give a file path"),
])
def test_evaluate_reader_bad_input_fails_before_loading_models(tiny_models, tiny_squad, tmp_path, capsys,
                                                               monkeypatch, readers, squad, output, message):
    _no_model_loads(monkeypatch)
    specs = [r.format(**{k: str(v) for k, v in tiny_models.items()}) for r in readers]
    argv = ["evaluate-reader", "--reader", *specs, "--squad", str(tiny_squad / squad)]
    assert cli.main(argv + (["--output", str(tmp_path)] if output else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
