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
    assert "--prediction-learning-rate LR AdamW peak learning rate (default: 0.0002)" in out
    assert "--teacher TEACHER fine-tuned teacher reader (Haystack or transformers folder) --student" in out
    with pytest.raises(SystemExit):
        cli.main(["distil-reader", "--help"])
    assert "--batch-size BATCH_SIZE features per step (default: 10)" in _flat(capsys.readouterr().out)


def test_distil_tinybert_defaults_match_distil_tinybert_from_stages():
    """The CLI's stage defaults are the stage methods' defaults with distil_tinybert_from's presets on top."""
    import inspect

    from haystack_distill.reader import DistillableFARMReader

    args = cli.build_parser().parse_args(["distil-tinybert", "--teacher", "t", "--student", "s", "--data-dir", "d",
                                          "--train-filename", "f", "--output", "o"])
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
                "--output", "o"]
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
          "output": "out", "intermediate_epochs": 3, "prediction-learning-rate": "1e-4", "layer-mapping": "0:1,1:3",
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
    assert cli.main(["distil-tinybert", "--config", config, "--intermediate-epochs", "7", "--output", "cli-out"]) == 0
    args = captured["args"]
    assert (args.teacher, args.student, args.data_dir, args.train_filename) == (
        "models/teacher", "models/student", "data", "t.json")  # required flags satisfied by the file
    assert args.intermediate_epochs == 7 and args.output == "cli-out"  # the command line wins
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
             "--data-dir": str(tiny_squad), "--train-filename": "train.json", "--output": str(tmp_path / "o"),
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
                     "--output", str(tmp_path / "o")]) == 2
    assert "notes.txt" in capsys.readouterr().err


def _augmented(tiny_squad) -> str:
    """An 'augmented' file: every paragraph twice (answers kept)."""
    squad = json.loads((tiny_squad / "train.json").read_text())
    squad["data"] = squad["data"] * 2
    (tiny_squad / "train_x2_cli.json").write_text(json.dumps(squad))
    return "train_x2_cli.json"


def _tinybert(tiny_models, tiny_squad, save_dir, *extra) -> list:
    return ["distil-tinybert", "--teacher", str(tiny_models["teacher"]), "--student", str(tiny_models["student"]),
            "--data-dir", str(tiny_squad), "--train-filename", "train.json", "--output", str(save_dir),
            "--intermediate-epochs", "1", "--prediction-epochs", "1", "--intermediate-batch-size", "8",
            "--prediction-batch-size", "8", "--intermediate-learning-rate", "1e-3", "--device", "cpu", "--quiet",
            "--json", *FAST, *extra]


def test_distil_tinybert_runs_both_stages_then_evaluate_reader_compares(tiny_models, tiny_squad, tmp_path, capsys):
    aug = _augmented(tiny_squad)
    out = tmp_path / "tiny"
    code = cli.main(_tinybert(tiny_models, tiny_squad, out, "--augmented-train-filename", aug, "--dev-filename",
                              "dev.json", "--checkpoint-root-dir", str(tmp_path / "ckpt"), "--evaluate-every", "0"))
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert code == 0 and metrics["intermediate"]["last_hidden"] > 0 and "f1" in metrics["prediction"]
    assert "loading the teacher reader" not in captured.err  # --quiet: no status lines
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
    captured = capsys.readouterr()
    printed = captured.out
    assert f"teacher: loading {tiny_models['teacher']} ..." in captured.err  # one status line per step
    assert "tiny: scoring, 2 timed runs ..." in captured.err
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


# ---------------------------------------------------------------------------------------------- one convention
COMMANDS_WRITING = {"demo", "distil-reader", "make-transfer", "export-reader", "distil-tinybert", "make-student",
                    "evaluate-reader", "distil-general", "distil-embeddings", "augment", "fit-mlm-head"}
COMMANDS_TRAINING = {"distil-reader", "distil-tinybert", "distil-general", "distil-embeddings", "fit-mlm-head"}
COMMANDS_RUNNING_MODELS = COMMANDS_TRAINING | {"evaluate-reader", "eval-sts", "augment"}


def _visible_flags(sub: argparse.ArgumentParser) -> set:
    return {o for a in sub._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}


def test_every_sub_command_follows_the_flag_convention():
    subs = _subparsers(cli.build_parser())
    assert COMMANDS_WRITING | COMMANDS_RUNNING_MODELS <= set(subs)
    for name, sub in subs.items():
        flags = _visible_flags(sub)
        assert not [f for f in flags if "_" in f], name  # dashes only
        assert {"--quiet", "--json", "--verbose", "--debug", "--config"} <= flags, name
        assert "--lr" not in flags and "--cpu" not in flags and "--gpu" not in flags, name
        assert not flags & {"--save-dir", "--output-dir", "--output-path", "--no-progress"}, name
        if name in COMMANDS_WRITING:
            assert "--output" in flags, name
        if name in COMMANDS_WRITING - {"demo"}:  # the demo reuses its finished stages instead
            assert "--overwrite" in flags, name
        if name in COMMANDS_TRAINING:  # --learning-rate, or one per stage (--prediction-learning-rate)
            assert any(f.endswith("-learning-rate") or f == "--learning-rate" for f in flags), name
        if name in COMMANDS_RUNNING_MODELS:
            assert "--device" in flags, name


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


MARKUP = re.compile(r"``|:(?:mod|func|meth|class|data|attr|obj|exc):`|^\s*\.\. |::$", re.MULTILINE)


def test_help_texts_have_no_restructuredtext(capsys):
    texts = {"haystack-distill": _help(capsys)}
    for name in _subparsers(cli.build_parser()):
        texts[name] = _help(capsys, name)
    for name, text in texts.items():
        assert not MARKUP.search(text), (name, MARKUP.findall(text))
    assert "haystack_distill.synthetic: one person" in texts["demo"]  # :mod:`...` became plain words
    assert "\n1. The teacher" in texts["demo"] and "\n4. A table" in texts["demo"]  # the list keeps its lines


def test_fit_mlm_head_documents_every_flag(capsys):
    sub = _subparsers(cli.build_parser())["fit-mlm-head"]
    for action in sub._actions:
        if action.option_strings and action.help is not argparse.SUPPRESS:
            assert action.help != action.dest.replace("_", " "), action.option_strings  # written, not generated
    text = _flat(_help(capsys, "fit-mlm-head"))
    for flag in ("--encoder", "--train-text", "--eval-text", "--max-sequences", "--eval-sequences", "--seq-len",
                 "--mask-prob", "--steps", "--batch-size", "--learning-rate", "--train-decoder", "--seed",
                 "--device", "--overwrite"):
        assert flag in text
    assert "--learning-rate LEARNING_RATE AdamW peak learning rate of the head (20 warmup steps) (default: 0.002)" \
        in text


READER_REQUIRED = ["--teacher", "t", "--student", "s", "--data-dir", "d", "--train-filename", "f"]


@pytest.mark.parametrize("argv, dest, value, hint", [
    (["distil-reader", *READER_REQUIRED, "--save-dir", "o"], "output", "o", "--save-dir is deprecated; use --output"),
    (["distil-tinybert", *READER_REQUIRED, "--output", "o", "--cpu"], "device", "cpu",
     "--cpu is deprecated; use --device cpu"),
    (["evaluate-reader", "--reader", "r", "--squad", "s.json", "--gpu"], "device", "auto",
     "--gpu is deprecated; use --device auto"),
    (["distil-embeddings", "--teacher", "t", "--layers", "2", "--sentences", "s.txt", "--output", "o", "--lr", "0.01"],
     "learning_rate", 0.01, "--lr is deprecated; use --learning-rate"),
    (["distil-general", "--teacher", "t", "--texts", "x.txt", "--layers", "2", "--output-dir", "o"], "output", "o",
     "--output-dir is deprecated; use --output"),
    (["augment", "--squad_path", "in.json", "--output_path", "out.json", "--model", "m"], "output", "out.json",
     "--output_path is deprecated; use --output"),
    (["augment", "--squad-path", "in.json", "--output", "o.json", "--model", "m", "--no_progress"], "quiet", True,
     "--no_progress is deprecated; use --quiet"),
    (["fit-mlm-head", "--output", "o", "--train_text", "t.txt", "--lr", "0.1"], "learning_rate", 0.1,
     "--lr is deprecated; use --learning-rate"),
])
def test_old_spellings_still_work_with_a_one_line_hint(capsys, argv, dest, value, hint):
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert f"haystack-distill {argv[0]}: warning: {hint}." in err
    old = hint.split()[0]
    assert not re.search(rf"{old}(?![\w-])", _help(capsys, argv[0]))  # hidden from --help


def test_python_m_augment_keeps_haystack_underscore_flags_silently(capsys):
    from augment.cli import build_parser

    args = build_parser().parse_args(["--squad_path", "in.json", "--output_path", "out.json", "--model", "m",
                                      "--multiplication_factor", "3", "--glove_path", "g.txt", "--no_progress"])
    assert (str(args.squad_path), args.output, args.multiplication_factor, str(args.glove_path), args.quiet) == (
        "in.json", "out.json", 3, "g.txt", True)
    assert capsys.readouterr().err == ""


def test_a_required_flag_given_by_its_alias_or_missing(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["distil-reader", *READER_REQUIRED, "--save_dir", "o"]).output == "o"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["distil-reader", *READER_REQUIRED])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "the following arguments are required: --output" in err
    assert "--save-dir" not in err


def test_config_keys_may_use_the_old_spellings(tmp_path, captured):
    data = {**CONFIG, "save-dir": "old-out", "cpu": True}
    del data["output"]
    assert cli.main(["distil-tinybert", "--config", _write_config(tmp_path / "old.json", data)]) == 0
    assert captured["args"].output == "old-out" and captured["args"].device == "cpu"


def test_unknown_config_key_lists_only_the_current_flag_names(tmp_path, captured, capsys):
    assert cli.main(["distil-tinybert", "--config", _write_config(tmp_path / "k.json", {**CONFIG, "x": 1})]) == 2
    valid = capsys.readouterr().err.split("valid keys: ")[1]
    assert "output" in valid.split(", ") and "device" in valid.split(", ")
    assert not {"save-dir", "save_dir", "cpu", "gpu"} & set(valid.replace(".", "").split(", "))


def test_results_are_a_table_by_default_and_json_on_request(capsys):
    from haystack_distill.cli_options import format_table, print_result

    result = {"loss": 0.123456, "prediction": {"f1": 71.5, "em": 60.0}, "output": "out"}
    print_result(result, as_json=False)
    assert capsys.readouterr().out.splitlines() == ["loss           0.1235", "prediction.f1  71.5",
                                                    "prediction.em  60", "output         out"]
    print_result(result, as_json=True)
    assert json.loads(capsys.readouterr().out) == result
    assert format_table([{"model": "a", "dim": 8}, {"model": "bb", "dim": 16}]).splitlines() == [
        "model  dim", "a      8", "bb     16"]


# --------------------------------------------------------------------------------------------- third-party noise
def test_known_third_party_warnings_are_hidden_unless_verbose(caplog):
    import logging

    from haystack.modeling.model.prediction_head import QuestionAnsweringHead

    from haystack_distill.cli_options import silence_third_party

    onnx_hint = "Please consider to run pre-processing before quantization. Refer to example: ..."
    try:
        silence_third_party(verbose=False)
        with caplog.at_level(logging.WARNING):
            QuestionAnsweringHead(layer_dims=[4, 2], ph_output_type="per_token_squad")
            logging.warning(onnx_hint)
            logging.getLogger("haystack.modeling.model.prediction_head").warning("a real problem")
        assert "Some unused parameters" not in caplog.text and "pre-processing" not in caplog.text
        assert "a real problem" in caplog.text  # only the listed messages are dropped
        caplog.clear()
        silence_third_party(verbose=True)
        with caplog.at_level(logging.WARNING):
            QuestionAnsweringHead(layer_dims=[4, 2], ph_output_type="per_token_squad")
            logging.warning(onnx_hint)
        assert "Some unused parameters" in caplog.text and "pre-processing" in caplog.text
    finally:
        silence_third_party(verbose=True)


def test_cli_main_silences_the_noise_unless_verbose(monkeypatch):
    import logging

    from haystack_distill.cli_options import NoiseFilter

    head_logger = logging.getLogger("haystack.modeling.model.prediction_head")
    monkeypatch.setattr(head_logger, "filters", [])
    monkeypatch.setattr(logging.getLogger(), "filters", [])
    cli.main(["evaluate-reader", "--reader", "/nonexistent/r", "--squad", "/nonexistent/s.json"])
    assert any(isinstance(f, NoiseFilter) for f in head_logger.filters)
    with pytest.raises(FileNotFoundError):  # --verbose also shows the traceback
        cli.main(["evaluate-reader", "--reader", "/nonexistent/r", "--squad", "/nonexistent/s.json", "--verbose"])
    assert not any(isinstance(f, NoiseFilter) for f in head_logger.filters)


def test_a_first_resumable_run_without_checkpoints_logs_nothing_at_info(tmp_path, caplog):
    import logging

    from haystack_distill.training import TrainConfig, _resolve_resume

    with caplog.at_level(logging.INFO, logger="haystack_distill"):
        assert _resolve_resume(TrainConfig(resume=True, checkpoint_dir=str(tmp_path / "ckpt"))) is None
    assert "starting from scratch" not in caplog.text


# ------------------------------------------------------------------------------ input checks before any model load
class ModelLoaded(AssertionError):
    """Raised by a mocked model loader: a model was loaded before the input checks failed."""


def _refuse(monkeypatch, *targets) -> None:
    """Make every ``(object, attribute)`` loader raise :class:`ModelLoaded`."""
    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the input checks failed")

    for owner, name in targets:
        monkeypatch.setattr(owner, name, refuse)


def _mock_all_loaders(monkeypatch) -> None:
    import transformers
    from haystack.nodes import FARMReader

    import augment.api
    import augment.mlm_head
    import haystack_distill.embeddings.model_io as model_io
    import haystack_distill.general.distil as general_distil
    import haystack_distill.general.student as general_student
    import haystack_distill.reader as reader_pkg
    import haystack_distill.reader.export as export

    _refuse(monkeypatch, (reader_pkg, "DistillableFARMReader"), (FARMReader, "__init__"),
            (transformers.AutoModel, "from_pretrained"), (transformers.AutoModelForMaskedLM, "from_pretrained"),
            (general_distil, "load_encoder"), (general_student, "load_encoder"),
            (model_io, "load_sentence_transformer"), (augment.api, "_build_augmenter"),
            (augment.mlm_head, "_load_masked_lm"), (export, "load_reader"))


@pytest.fixture
def early(tiny_models, tiny_squad, tmp_path, monkeypatch):
    """Paths for the early-check cases; every model loader raises ModelLoaded."""
    _mock_all_loaders(monkeypatch)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat and the dog ran to the park today\n" * 20)
    earlier = tmp_path / "earlier"  # an earlier output of ours: its files are listed in its manifest
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    (earlier / ".haystack-distill-output.json").write_text(json.dumps({"files": ["config.json"]}))
    (tmp_path / "exists.json").write_text("{}")
    return {"teacher": str(tiny_models["teacher"]), "student": str(tiny_models["student"]),
            "data": str(tiny_squad), "squad": str(tiny_squad / "train.json"), "text": str(text),
            "earlier": str(earlier), "exists": str(tmp_path / "exists.json"), "tmp": str(tmp_path)}


def _reader(command, p, **flags) -> list:
    base = {"--teacher": p["teacher"], "--student": p["student"], "--data-dir": p["data"],
            "--train-filename": "train.json", "--output": p["tmp"] + "/out", **flags}
    return [command, *[x for kv in base.items() for x in kv], "--device", "cpu"]


EARLY_CASES = {
    "distil-reader output is the teacher": (
        lambda p: _reader("distil-reader", p, **{"--output": p["teacher"]}), "is the --teacher folder"),
    "distil-reader output inside the student": (
        lambda p: _reader("distil-reader", p, **{"--output": p["student"] + "/out"}), "is inside the --student folder"),
    "distil-reader missing train file": (
        lambda p: _reader("distil-reader", p, **{"--train-filename": "nope.json"}),
        "--train-filename nope.json: no such file in --data-dir"),
    "distil-reader earlier output": (
        lambda p: _reader("distil-reader", p, **{"--output": p["earlier"]}), "already holds an earlier output; pass "
                                                                             "--overwrite"),
    "distil-tinybert output is the teacher": (
        lambda p: _reader("distil-tinybert", p, **{"--output": p["teacher"]}), "is the --teacher folder"),
    "distil-tinybert missing unlabeled file": (
        lambda p: _reader("distil-tinybert", p, **{"--unlabeled-filename": "pool.json"}),
        "--unlabeled-filename pool.json: no such file"),
    "distil-general output is the teacher": (
        lambda p: ["distil-general", "--teacher", p["teacher"], "--texts", p["text"], "--layers", "2", "--output",
                   p["teacher"]], "is the --teacher folder"),
    "distil-general missing texts": (
        lambda p: ["distil-general", "--teacher", p["teacher"], "--texts", p["tmp"] + "/none.txt", "--layers", "2",
                   "--output", p["tmp"] + "/gd"], "--texts " + "{tmp}/none.txt: no such file"),
    "distil-general retrains over its earlier output": (
        lambda p: ["distil-general", "--teacher", p["teacher"], "--texts", p["text"], "--layers", "2", "--output",
                   p["earlier"]], "already holds an earlier output; pass --overwrite to replace it, or --resume"),
    "distil-embeddings output is the teacher": (
        lambda p: ["distil-embeddings", "--teacher", p["teacher"], "--layers", "2", "--sentences", p["text"],
                   "--output", p["teacher"]], "is the --teacher folder"),
    "augment existing output": (
        lambda p: ["augment", "--squad-path", p["squad"], "--output", p["exists"], "--model", p["teacher"]],
        "already exists; pass --overwrite"),
    "augment output is the input": (
        lambda p: ["augment", "--squad-path", p["squad"], "--output", p["squad"], "--model", p["teacher"],
                   "--overwrite"], "is the --squad-path file"),
    "augment missing model folder": (
        lambda p: ["augment", "--squad-path", p["squad"], "--output", p["tmp"] + "/a.json", "--model",
                   p["tmp"] + "/mlm"], "--model {tmp}/mlm: no such folder"),
    "fit-mlm-head output inside the encoder": (
        lambda p: ["fit-mlm-head", "--encoder", p["teacher"], "--train-text", p["text"], "--output",
                   p["teacher"] + "/mlm"], "is inside the --encoder folder"),
    "fit-mlm-head missing train text": (
        lambda p: ["fit-mlm-head", "--encoder", p["teacher"], "--train-text", p["tmp"] + "/none.txt", "--output",
                   p["tmp"] + "/mlm"], "--train-text {tmp}/none.txt: no such file"),
    "export-reader output is the reader": (
        lambda p: ["export-reader", "--reader", p["teacher"], "--output", p["teacher"], "--overwrite"],
        "is the --reader folder"),
    "evaluate-reader existing output": (
        lambda p: ["evaluate-reader", "--reader", p["teacher"], "--squad", p["squad"], "--output", p["exists"]],
        "already exists; pass --overwrite"),
}


@pytest.mark.parametrize("case", sorted(EARLY_CASES))
def test_bad_input_is_reported_before_any_model_loads(early, capsys, case):
    argv, message = EARLY_CASES[case]
    code = cli.main(argv(early))
    err = capsys.readouterr().err
    assert code == 2, err  # ModelLoaded is an AssertionError: it would propagate, not exit 2
    assert message.format(tmp=early["tmp"]) in err and len(err.strip().splitlines()) == 1, err
    assert "ModelLoaded" not in err


def test_distil_general_retrains_over_its_output_with_overwrite(early, capsys):
    """--overwrite passes the pre-flight, then the (mocked) model load is reached."""
    with pytest.raises(ModelLoaded):
        cli.main(["distil-general", "--teacher", early["teacher"], "--texts", early["text"], "--layers", "2",
                  "--output", early["earlier"], "--overwrite", "--quiet"])
    assert capsys.readouterr().err == ""  # --quiet: no status line either


def test_python_m_augment_mlm_head_keeps_its_flags_and_checks_before_loading(early, capsys):
    from augment.cli import mlm_head_main

    code = mlm_head_main(["--encoder", early["tmp"] + "/none", "--output", early["tmp"] + "/mlm", "--train_text",
                          early["text"], "--max_sequences", "10", "--lr", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"python -m augment.mlm_head: error: --encoder {early['tmp']}/none: no such " \
                                        "folder; pass a local model folder (nothing is downloaded)."
    from augment.cli import WIKITEXT_TRAIN, Parser, add_mlm_head_arguments

    module = add_mlm_head_arguments(Parser(), module_defaults=True, warn=False).parse_args(["--output", "o"])
    assert (module.train_text, module.learning_rate, module.device) == (WIKITEXT_TRAIN, 2e-3, "cpu")


def test_demo_json_keeps_stdout_for_the_results(tmp_path, monkeypatch, capsys):
    from haystack_distill import demo

    seen = {}

    def fake_run_demo(output, cfg):
        seen.update(output=output, show_progress=cfg.show_progress)
        demo.say("[1/4] teacher ...")
        return {"rows": [{"reader": "teacher", "f1": 90.0}], "setup": {"seed": cfg.seed}}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert cli.main(["demo", "--output-dir", str(tmp_path / "d"), "--json", "--quiet", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"rows": [{"reader": "teacher", "f1": 90.0}], "setup": {"seed": 3}}
    assert "[1/4] teacher ..." in captured.err and "--output-dir is deprecated; use --output" in captured.err
    assert seen == {"output": tmp_path / "d", "show_progress": False}
