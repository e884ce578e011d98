"""benchmark_reader on a scripted reader: EM/F1 known by construction, speed timed on the requested subset."""

import json
from types import SimpleNamespace

import pytest
import torch

from haystack_distill.evaluation.reader import benchmark_reader


class ScriptedReader:
    """Answers the gold text for questions whose id is in ``right``, a wrong word otherwise; counts queries."""

    def __init__(self, gold, right):
        self.gold, self.right, self.calls = gold, right, []
        self.inferencer = SimpleNamespace(model=torch.nn.Linear(2, 3), disable_tqdm=False)
        self.progress_bar = True

    def predict_batch(self, queries, documents, top_k):
        self.calls.append(len(queries))
        answers = []
        for query in queries:
            qid = query.split()[-1]
            text = self.gold[qid] if qid in self.right else "nowhere"
            answers.append([SimpleNamespace(answer=text)])
        return {"answers": answers}


@pytest.fixture()
def dev_file(tmp_path):
    qas = [{"id": f"q{i}", "question": f"where is q{i}", "answers": [{"text": f"city{i}", "answer_start": 0}]}
           for i in range(10)]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": " ".join(f"city{i}" for i in range(10)),
                                                          "qas": qas}]}]}))
    return path


def test_scores_all_questions_and_times_the_subset(dev_file):
    gold = {f"q{i}": f"city{i}" for i in range(10)}
    teacher = ScriptedReader(gold, {f"q{i}" for i in range(8)})
    student = ScriptedReader(gold, {f"q{i}" for i in range(4)})
    rows = benchmark_reader({"teacher": teacher, "student": student}, dev_file, repeats=3, batch_size=4,
                            speed_questions=3)
    assert [r["em"] for r in rows] == pytest.approx([80.0, 40.0])
    assert [r["f1"] for r in rows] == pytest.approx([80.0, 40.0])
    assert rows[1]["f1_vs_first"] == pytest.approx(50.0) and rows[0]["speedup_vs_first"] == 1.0
    assert rows[0]["questions"] == 10 and rows[0]["parameters"] == 9
    # one scoring pass over 10 questions in batches of 4, then 3 timed passes over the first 3
    assert teacher.calls == [4, 4, 2, 3, 3, 3]
    assert teacher.progress_bar is True  # restored after evaluation


def test_without_speed_subset_every_repeat_scores_everything(dev_file):
    reader = ScriptedReader({}, set())
    benchmark_reader({"r": reader}, dev_file, repeats=2, batch_size=10)
    assert reader.calls == [10, 10]
