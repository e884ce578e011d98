"""A small SQuAD-format QA dataset generated from templates: offline data for the demo, tests and tutorials.

Each paragraph describes two or three people; questions ask for one fact about one of them, so a reader must
match the name in the question to the right sentence. Deterministic for a given seed.

Example:
    >>> data = make_squad_dataset(n_paragraphs=2, seed=0)
    >>> qa = data["data"][0]["paragraphs"][0]["qas"][0]
    >>> ctx = data["data"][0]["paragraphs"][0]["context"]
    >>> ans = qa["answers"][0]
    >>> ctx[ans["answer_start"]: ans["answer_start"] + len(ans["text"])] == ans["text"]
    True
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Tuple

NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emil", "Farah", "Gustav", "Hana", "Ivan", "Jonas", "Keiko", "Liam",
         "Maya", "Nadia", "Oscar", "Priya", "Quinn", "Rosa", "Samir", "Tariq", "Ulla", "Viktor", "Wen", "Yusuf"]
CITIES = ["Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Dublin", "Tunis", "Quito", "Riga", "Perth", "Cairo",
          "Seoul", "Zurich", "Bogota", "Kyoto", "Accra", "Vienna", "Manila"]
JOBS = ["teacher", "pilot", "chemist", "baker", "lawyer", "nurse", "carpenter", "farmer", "journalist", "plumber",
        "dentist", "librarian", "welder", "painter"]
COMPANIES = ["Acme Corp", "Blue Harbor", "Northwind", "Globex", "Initech", "Umbrella Labs", "Stark Mills",
             "Wayne Foods", "Hooli", "Vandelay Imports"]
FACTS = (  # (sentence template, question template, answer field)
    ("{name} was born in {city}.", "Where was {name} born?", "city"),
    ("{name} was born in {year}.", "In which year was {name} born?", "year"),
    ("{name} works as a {job}.", "What is the job of {name}?", "job"),
    ("{name} is employed by {company}.", "Which company employs {name}?", "company"),
)


def _person(rng: random.Random, name: str) -> Dict[str, str]:
    return {"name": name, "city": rng.choice(CITIES), "year": str(rng.randint(1900, 2010)),
            "job": rng.choice(JOBS), "company": rng.choice(COMPANIES)}


def _paragraph(rng: random.Random, index: int, max_people: int, facts_per_person: int) -> Dict[str, Any]:
    people = [_person(rng, n) for n in rng.sample(NAMES, rng.randint(2, max_people))]
    sentences: List[Tuple[str, Dict[str, str], int]] = []
    for person in people:
        for fact_idx in rng.sample(range(len(FACTS)), facts_per_person):
            sentences.append((FACTS[fact_idx][0].format(**person), person, fact_idx))
    rng.shuffle(sentences)
    context, qas = "", []
    for s_idx, (sentence, person, fact_idx) in enumerate(sentences):
        offset = len(context) + (1 if context else 0)
        context = f"{context} {sentence}" if context else sentence
        answer = person[FACTS[fact_idx][2]]
        start = offset + sentence.index(answer, len(person["name"]))
        qas.append({"id": f"syn-{index}-{s_idx}", "question": FACTS[fact_idx][1].format(name=person["name"]),
                    "answers": [{"text": answer, "answer_start": start}], "is_impossible": False})
    return {"context": context, "qas": qas}


def make_squad_dataset(n_paragraphs: int = 100, seed: int = 0, title: str = "synthetic", max_people: int = 3,
                       facts_per_person: int = 3) -> Dict[str, Any]:
    """Return a SQuAD v2-format dict with ``n_paragraphs`` paragraphs of 2..``max_people`` people with
    ``facts_per_person`` facts each (one question per fact)."""
    if not 2 <= max_people <= len(NAMES) or not 1 <= facts_per_person <= len(FACTS):
        raise ValueError(f"max_people must be in 2..{len(NAMES)} and facts_per_person in 1..{len(FACTS)}.")
    rng = random.Random(seed)
    paragraphs = [_paragraph(rng, i, max_people, facts_per_person) for i in range(n_paragraphs)]
    return {"version": "v2.0", "data": [{"title": title, "paragraphs": paragraphs}]}
