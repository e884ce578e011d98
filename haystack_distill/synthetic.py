"""A small SQuAD-format QA dataset generated from templates: offline data for the demo, tests and tutorials.

Each paragraph describes ``min_people``..``max_people`` people (two or three by default); questions ask for one
fact about one of them, so with several people a reader must match the name in the question to the right
sentence. With ``paraphrased=True`` facts come from :data:`RELATIONS`: two relations share each answer type (born
in / lives in a city, born / retired in a year), and sentences and questions are drawn from three wordings each, so
a question rarely repeats its sentence's words; ``wordings=1`` keeps only the first wording of each. The demo uses
one person with four paraphrased facts per paragraph, and ``wordings=1`` for the students' few labels.
Deterministic for a given seed.

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
import re
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

#: (answer field, sentence wordings, question wordings): the paraphrased task's facts.
RELATIONS: Tuple[Tuple[str, Tuple[str, ...], Tuple[str, ...]], ...] = (
    ("city", ("{name} was born in {city}.", "{name} is a native of {city}.", "The birthplace of {name} is {city}."),
     ("Where was {name} born?", "What is the birthplace of {name}?", "In which city was {name} born?")),
    ("home", ("{name} lives in {home}.", "{name} moved to {home}.", "These days {name} resides in {home}."),
     ("Where does {name} live?", "In which city does {name} reside?", "Where is the home of {name}?")),
    ("year", ("{name} was born in {year}.", "{name} came into the world in {year}.",
              "The birth year of {name} is {year}."),
     ("In which year was {name} born?", "When was {name} born?", "What is the birth year of {name}?")),
    ("retired", ("{name} retired in {retired}.", "{name} stopped working in {retired}.",
                 "The retirement of {name} came in {retired}."),
     ("When did {name} retire?", "In which year did {name} retire?", "When did {name} stop working?")),
    ("job", ("{name} works as a {job}.", "{name} is a {job} by trade.", "{name} earns a living as a {job}."),
     ("What is the job of {name}?", "What does {name} do for a living?", "What is the profession of {name}?")),
    ("company", ("{name} is employed by {company}.", "{name} works for {company}.", "{name} has a job at {company}."),
     ("Which company employs {name}?", "Who is the employer of {name}?", "For which firm does {name} work?")),
)


def _person(rng: random.Random, name: str, paraphrased: bool) -> Dict[str, str]:
    person = {"name": name, "city": rng.choice(CITIES), "year": str(rng.randint(1900, 2010)),
              "job": rng.choice(JOBS), "company": rng.choice(COMPANIES)}
    if paraphrased:
        person.update(home=rng.choice(CITIES), retired=str(rng.randint(2011, 2024)))
    return person


Fact = Tuple[str, str, str]  # sentence, question, answer


def _fact(rng: random.Random, person: Dict[str, str], index: int, paraphrased: bool, wordings: int = 0) -> Fact:
    if not paraphrased:
        sentence, question, field = FACTS[index]
        return sentence.format(**person), question.format(**person), person[field]
    field, sentences, questions = RELATIONS[index]
    if wordings:
        sentences, questions = sentences[:wordings], questions[:wordings]
    return rng.choice(sentences).format(**person), rng.choice(questions).format(**person), person[field]


def _paragraph(rng: random.Random, index: int, max_people: int, facts_per_person: int,
               paraphrased: bool = False, min_people: int = 2, wordings: int = 0) -> Dict[str, Any]:
    people = [_person(rng, n, paraphrased) for n in rng.sample(NAMES, rng.randint(min_people, max_people))]
    facts: List[Tuple[Fact, str]] = []
    for person in people:
        for fact_idx in rng.sample(range(len(RELATIONS if paraphrased else FACTS)), facts_per_person):
            facts.append((_fact(rng, person, fact_idx, paraphrased, wordings), person["name"]))
    rng.shuffle(facts)
    context, qas = "", []
    for s_idx, ((sentence, question, answer), name) in enumerate(facts):
        offset = len(context) + (1 if context else 0)
        context = f"{context} {sentence}" if context else sentence
        start = offset + sentence.index(answer, sentence.index(name) + len(name))
        qas.append({"id": f"syn-{index}-{s_idx}", "question": question,
                    "answers": [{"text": answer, "answer_start": start}], "is_impossible": False})
    return {"context": context, "qas": qas}


def make_squad_dataset(n_paragraphs: int = 100, seed: int = 0, title: str = "synthetic", max_people: int = 3,
                       facts_per_person: int = 3, paraphrased: bool = False, min_people: int = 2,
                       wordings: int = 0) -> Dict[str, Any]:
    """Return a SQuAD v2-format dict with ``n_paragraphs`` paragraphs of ``min_people``..``max_people`` people
    with ``facts_per_person`` facts each (one question per fact); ``paraphrased`` picks the harder task, whose
    sentences and questions use only their first ``wordings`` wordings if it is not 0 (all)."""
    n_facts = len(RELATIONS if paraphrased else FACTS)
    if not 1 <= min_people <= max_people <= len(NAMES) or not 1 <= facts_per_person <= n_facts:
        raise ValueError(f"need 1 <= min_people <= max_people <= {len(NAMES)} and facts_per_person in 1..{n_facts}, "
                         f"got min_people={min_people}, max_people={max_people}, facts_per_person={facts_per_person}.")
    if not 0 <= wordings <= 3:
        raise ValueError(f"wordings must be 0 (all) or 1..3, got {wordings}.")
    rng = random.Random(seed)
    paragraphs = [_paragraph(rng, i, max_people, facts_per_person, paraphrased, min_people, wordings)
                  for i in range(n_paragraphs)]
    return {"version": "v2.0", "data": [{"title": title, "paragraphs": paragraphs}]}


def _template_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)))


def wording_index(text: str) -> int:
    """Which of the three wordings (0-2) a sentence or question of the paraphrased task uses. Two relations may
    share a wording ("was born in" a city or a year); they must agree on its index.

    >>> wording_index("What is the birthplace of Wen?"), wording_index("Wen was born in 1988.")
    (1, 0)
    """
    found = {index for _, sentences, questions in RELATIONS for templates in (sentences, questions)
             for index, template in enumerate(templates) if _template_pattern(template).fullmatch(text)}
    if len(found) != 1:
        raise ValueError(f"not a sentence or question of the paraphrased task: {text!r}" if not found else
                         f"{text!r} matches wordings {sorted(found)} of different relations")
    return found.pop()
