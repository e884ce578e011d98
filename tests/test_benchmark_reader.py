"""The reader benchmark's job list: the core rows come first and cover every goal; --extended only adds rows."""

import importlib.util
import sys
from pathlib import Path

import pytest


def _reader_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reader.py"
    spec = importlib.util.spec_from_file_location("reader_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_core_jobs_cover_the_goals_and_extended_only_appends():
    bench = _reader_benchmark()
    core = bench.job_order([3, 2], extended=False)
    assert core == [("teacher", 0), ("haystack_kd", 3), ("ours_kd", 3), ("no_kd", 3), ("ours_kd", 2)]
    full = bench.job_order([3, 2], extended=True, kd_checks=True)
    assert full[: len(core)] == core and len(set(full)) == len(full)
    stages = {stage for stage, _ in full}
    assert stages == set(bench.STAGES)  # every stage runs somewhere in the extended list
    assert not {s for s, _ in bench.job_order([3, 2], extended=True, kd_checks=False)} & set(bench.KD_CHECKS)


def test_our_rows_use_haystacks_kd_balance():
    from haystack_distill.losses import haystack_equivalent_weight

    bench = _reader_benchmark()
    expected = haystack_equivalent_weight(bench.KD["distillation_loss_weight"])
    assert bench.OURS["distillation_loss_weight"] == pytest.approx(expected)
    assert bench.OURS["temperature"] == bench.KD["temperature"]


def test_the_split_is_disjoint_and_the_pool_is_unlabelled(tmp_path):
    import json

    bench = _reader_benchmark()
    if not (bench.SHARED / bench.DEV_SOURCE).is_file():
        pytest.skip("../shared/data/squad is not beside the project")
    data = bench.prepare_data(bench.PROFILES["full"], tmp_path)

    def questions(name):
        squad = json.loads((data / name).read_text())
        return [qa for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]], len(squad["data"])

    (dev, n_dev), (pool, n_pool), (test, n_test) = (questions(f"{n}.json") for n in ("dev", "pool", "test"))
    assert (n_dev, n_pool, n_test) == (4, 16, 16) and (len(pool), len(test)) == (3233, 3210)
    ids = [{qa["id"] for qa in part} for part in (dev, pool, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(qa["answers"] == [] for qa in pool) and all(qa["answers"] for qa in dev + test)
    before = {f.name: f.stat().st_mtime_ns for f in data.iterdir()}
    bench.prepare_data(bench.PROFILES["full"], tmp_path)  # idempotent: files already right are not rewritten
    assert {f.name: f.stat().st_mtime_ns for f in data.iterdir()} == before


def test_augmented_transfer_data_has_no_answers_and_joins_the_pool(tmp_path, monkeypatch):
    import json

    import augment.api

    bench = _reader_benchmark()
    if not (bench.SHARED / bench.DEV_SOURCE).is_file():
        pytest.skip("../shared/data/squad is not beside the project")
    data = bench.prepare_data(bench.PROFILES["full"], tmp_path)
    copy = {"title": "t", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "q_aug0", "question": "What is big?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}
    calls = []

    def fake_augment(source, output, **kwargs):
        calls.append(kwargs)
        Path(output).write_text(json.dumps({"version": "v2.0", "data": [copy]}))

    monkeypatch.setattr(augment.api, "augment_squad", fake_augment)
    monkeypatch.setattr(bench, "_mlm_head", lambda: tmp_path / "mlm")
    metrics = bench.stage_augment_transfer(bench.PROFILES["full"], tmp_path, tmp_path / "augment_transfer")
    assert calls[0]["multiplication_factor"] == 1 and calls[0]["keep_original"] is False
    transfer = json.loads((data / "aug_transfer.json").read_text())
    assert metrics == {"augmented_questions": 1}
    assert transfer["data"][0]["paragraphs"][0]["qas"] == [{"id": "q_aug0", "question": "What is big?", "answers": []}]
    pool, both = (json.loads((data / n).read_text())["data"] for n in ("pool.json", "pool_aug.json"))
    assert both == pool + transfer["data"]


def test_the_truth_table_merges_seeds_and_divides_by_the_teacher():
    bench = _reader_benchmark()

    def row(stage, layers, f1, test_f1):
        return {"stage": stage, "layers": layers, "reader": f"{stage} reader", "f1": f1, "em": f1 - 10,
                "test_f1": test_f1, "test_em": test_f1 - 10, "commit": "abc"}

    scores = [row("x_seed2", 3, 30.0, 20.0), row("teacher", 0, 60.0, 50.0), row("x", 3, 40.0, 30.0),
              row("y", 3, 45.0, 40.0), {"stage": "old", "layers": 3, "f1": 99.0}]  # old: no test score, left out
    lines = bench.truth_table(scores).splitlines()
    assert [line.split(" | ")[1] for line in lines[2:]] == ["`teacher`", "`y`", "`x`"]
    x = lines[4].split(" | ")
    assert x[2:6] == ["35.0 (25.0)", "25.0 (15.0)", "58.3% / 50.0%", "2: 40.0 / 30.0; 30.0 / 20.0"]
    assert bench.seed_group("lr1e4_td_kd_pool_seed2") == "lr1e4_td_kd_pool" and bench.seed_group("a_seedy") == "a_seedy"
    # a retrained teacher starts its own table; its students are divided by it, not by the first teacher
    retrained = [{**row("teacher", 0, 50.0, 40.0), "teacher": "t2"}, {**row("x", 3, 45.0, 30.0), "teacher": "t2"}]
    tables = bench.truth_table(scores + retrained).split("Students of the teacher ")
    assert tables[1].startswith("`before teacher ids`") and "| 58.3% / 50.0% |" in tables[1]
    assert tables[2].startswith("`t2`") and "| 90.0% / 75.0% |" in tables[2] and "`y`" not in tables[2]


def test_a_student_stage_trains_the_missing_teacher_first(tmp_path, monkeypatch):
    import json

    bench = _reader_benchmark()
    if not (bench.SHARED / bench.TRAIN_SOURCE).is_file():
        pytest.skip("../shared/data/squad is not beside the project")
    monkeypatch.setattr(bench, "RUNS", tmp_path)
    teacher = tmp_path / "quick" / "teacher"
    monkeypatch.setitem(bench.PROFILES, "quick", {**bench.PROFILES["quick"], "teacher": teacher,
                                                  "student_init": "base"})
    calls = []

    def fake_teacher(cfg, run, out, **_):
        calls.append("teacher")
        out.mkdir(parents=True)
        (out / "language_model_config.json").write_text("{}")

    def fake_student(cfg, run, out, layers, **_):
        calls.append(f"no_kd {layers}L, teacher there: {(teacher / 'language_model_config.json').is_file()}")

    monkeypatch.setitem(bench.STAGES, "teacher", fake_teacher)
    monkeypatch.setitem(bench.STAGES, "no_kd", fake_student)
    bench.run_stage("quick", "no_kd", 3)
    bench.run_stage("quick", "no_kd", 3)  # the teacher is there now: not trained again
    assert calls == ["teacher", "no_kd 3L, teacher there: True", "no_kd 3L, teacher there: True"]
    assert json.loads((tmp_path / "quick" / "teacher-0l.result.json").read_text())["stage"] == "teacher"
    assert (tmp_path / "quick" / "no_kd-3l.result.json").is_file()


@pytest.mark.slow
def test_a_stage_command_runs_from_an_empty_runs_folder(tmp_path):
    """The command BENCHMARKS.md gives for one stage works on a fresh clone: the stage writes the data it reads."""
    import json
    import os
    import subprocess

    bench = _reader_benchmark()
    if not (bench.SHARED / bench.TRAIN_SOURCE).is_file():
        pytest.skip("../shared/data/squad is not beside the project")
    env = {**os.environ, "HAYSTACK_DISTILL_BENCH_RUNS": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(bench.ROOT / "benchmarks" / "reader.py"), "--profile", "quick",
                           "--stage", "teacher"], env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "runs" / "quick"
    assert {f.name for f in (run / "data").iterdir()} == {"train.json", "dev.json", "pool.json", "test.json"}
    record = json.loads((run / "teacher-0l.result.json").read_text())
    assert record["metrics"]["global_step"] > 0 and (run / "teacher" / "distillation.json").is_file()
