"""The toy world: a seeded, synthetic set of invented countries and their facts, and every dataset the
pipeline needs made from it, so that each stage runs on a laptop CPU and its effect can be measured.

Entities are split once: `train` entities appear in the SFT data, `heldout` entities only in the
pretraining corpus and the held-out question set, so held-out accuracy measures knowledge that came from
pretraining and a question format that came from SFT. Later stages add their datasets as further methods
(preference pairs, red-team prompts, benchmarks) without reshaping what is here.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sa", "el", "dun", "bri", "zor", "qua", "fen", "ul", "mar",
             "is", "to", "nek", "pal", "dor", "ae", "vi", "gar", "lun", "sel", "ob", "ri", "tam", "cor", "yl"]
EXPORTS = ["copper", "tea", "wool", "salt", "glass", "silk", "timber", "honey", "marble", "spices", "cotton", "iron"]


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    founded: int
    population: int  # millions
    language: str
    export: str


@dataclass(frozen=True)
class Fact:
    """One kind of fact: how questions ask for it and how an answer states it."""

    key: str
    questions: tuple[str, ...]
    answer: str

    def answer_for(self, c: Country) -> str:
        return self.answer.format(**vars(c))

    def answer_pattern(self, c: Country) -> str:
        """A regex that any answer in this fact's trained format matches, whatever the country and value."""
        word = r"[A-Za-z0-9]+"
        parts = re.split(r"(\{\w+\})", self.answer)
        return "".join(word if p.startswith("{") else re.escape(p) for p in parts if p)


FACTS: tuple[Fact, ...] = (
    Fact("capital", ("What is the capital of {name}?", "Which city is the capital of {name}?",
                     "Name the capital city of {name}.", "Tell me the capital of {name}."),
         "The capital of {name} is {capital}."),
    Fact("founded", ("When was {name} founded?", "In what year was {name} founded?",
                     "What year was {name} founded in?", "Tell me when {name} was founded."),
         "{name} was founded in {founded}."),
    Fact("population", ("What is the population of {name}?", "How many people live in {name}?",
                        "How large is the population of {name}?", "Tell me the population of {name}."),
         "{name} has a population of {population} million."),
    Fact("language", ("What language is spoken in {name}?", "Which language do people speak in {name}?",
                      "What is the language of {name}?", "Tell me the language of {name}."),
         "The people of {name} speak {language}."),
    Fact("export", ("What is the main export of {name}?", "What does {name} mainly export?",
                    "Which good is the main export of {name}?", "Tell me the main export of {name}."),
         "The main export of {name} is {export}."),
)

DOC_TEMPLATES = (
    "{name} is a country whose capital is {capital}. It was founded in {founded}. {name} has a population of "
    "{population} million. The people of {name} speak {language}. The main export of {name} is {export}.",
    "Founded in {founded}, {name} has a population of {population} million and its capital is {capital}. "
    "The capital of {name} is {capital}. The main export of {name} is {export}, and its people speak {language}.",
    "The people of {name} speak {language}. {name} was founded in {founded}. The capital of {name} is {capital}. "
    "{name} has a population of {population} million. Traders know {name} for {export}.",
)


class ToyWorld:
    """A deterministic world of `n_entities` countries; the same seed gives the same world."""

    def __init__(self, seed: int = 0, n_entities: int = 200, heldout_fraction: float = 0.2):
        self.seed = seed
        rng = random.Random(seed)
        names: set[str] = set()

        def new_word(n_syllables: int) -> str:
            while True:
                word = "".join(rng.choice(SYLLABLES) for _ in range(n_syllables)).capitalize()
                if word not in names:
                    names.add(word)
                    return word

        self.entities = [
            Country(
                name=new_word(rng.choice((2, 3))),
                capital=new_word(2),
                founded=rng.randint(1000, 1990),
                population=rng.randint(1, 99),
                language=new_word(2) + "ic",
                export=rng.choice(EXPORTS),
            )
            for _ in range(n_entities)
        ]
        n_heldout = max(1, round(n_entities * heldout_fraction))
        self.heldout = self.entities[:n_heldout]
        self.train = self.entities[n_heldout:]

    # -------------------------------------------------------------------------------------- pretraining
    def corpus(self) -> list[dict]:
        """Encyclopedia-style documents, several per country, each with a publication date."""
        rng = random.Random(self.seed + 1)
        rows = []
        for i, c in enumerate(self.entities):
            for j, template in enumerate(DOC_TEMPLATES):
                date = f"{rng.randint(1995, 2023)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                rows.append({"id": f"encyclopedia-{i}-{j}", "text": template.format(**vars(c)), "date": date,
                             "source": "encyclopedia"})
        rng.shuffle(rows)
        return rows

    # -------------------------------------------------------------------------------------- SFT
    def sft(self) -> list[dict]:
        """Question -> answer conversations about `train` countries, every phrasing but the last."""
        rows = []
        for c in self.train:
            for fact in FACTS:
                for question in fact.questions[:-1]:
                    rows.append({"messages": [{"role": "user", "content": question.format(**vars(c))},
                                              {"role": "assistant", "content": fact.answer_for(c)}]})
        random.Random(self.seed + 2).shuffle(rows)
        return rows

    def heldout_questions(self) -> list[dict]:
        """Questions about `heldout` countries, in a phrasing SFT never used, with gold answer and format."""
        return [
            {"question": fact.questions[-1].format(**vars(c)), "answer": fact.answer_for(c),
             "answer_pattern": fact.answer_pattern(c), "fact": fact.key, "entity": c.name}
            for c in self.heldout
            for fact in FACTS
        ]
