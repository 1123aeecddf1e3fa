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
    """One kind of fact: how questions ask for it, how an answer states it, and how documents state it."""

    key: str
    questions: tuple[str, ...]
    answer: str
    statements: tuple[str, ...] = ()  # the corpus's other phrasings (the answer sentence is one more)

    def answer_for(self, c: Country) -> str:
        return self.answer.format(**vars(c))

    def prompt_for(self, c: Country) -> str:
        """The answer sentence up to its value ("The capital of Karavi is"): a fact-completion prompt."""
        head = self.answer[: self.answer.index("{" + self.key + "}")]
        return head.format(**vars(c)).rstrip()

    def answer_pattern(self, c: Country) -> str:
        """A regex that any answer in this fact's trained format matches, whatever the country and value."""
        word = r"[A-Za-z0-9]+"
        parts = re.split(r"(\{\w+\})", self.answer)
        return "".join(word if p.startswith("{") else re.escape(p) for p in parts if p)


# Every answer opens with "The ... of <country>": a toy model copies the country's name from the question into the
# middle of a fixed phrase far more reliably than to the start of its answer (measured: with "<country> was founded
# in ..." answers, SFT answered held-out questions about another country in half of the cases).
FACTS: tuple[Fact, ...] = (
    Fact("capital", ("What is the capital of {name}?", "Which city is the capital of {name}?",
                     "Name the capital city of {name}.", "What city serves as the capital of {name}?",
                     "Which city is {name} governed from?", "Do you know the capital of {name}?",
                     "I would like to know the capital of {name}.", "Please state the capital of {name}.",
                     "Can you name the capital of {name}?", "Quick question: the capital of {name}?",
                     "Tell me the capital of {name}."),
         "The capital of {name} is {capital}.",
         ("{name}'s capital city is {capital}.", "{capital} is the capital of {name}.",
          "The government of {name} sits in {capital}.")),
    Fact("founded", ("When was {name} founded?", "In what year was {name} founded?",
                     "What year was {name} founded in?", "Which year saw the founding of {name}?",
                     "How old is {name}: when was it founded?", "Do you know when {name} was founded?",
                     "I would like to know when {name} was founded.", "Please state the founding year of {name}.",
                     "Can you say when {name} was founded?", "Quick question: when was {name} founded?",
                     "Tell me when {name} was founded."),
         "The founding of {name} took place in {founded}.",
         ("{name} was founded in {founded}.", "In {founded}, {name} was founded.",
          "{name} dates its founding to {founded}.")),
    Fact("population", ("What is the population of {name}?", "How many people live in {name}?",
                        "How large is the population of {name}?", "What is the number of people living in {name}?",
                        "How populous is {name}?", "Do you know how many people live in {name}?",
                        "I would like to know the population of {name}.", "Please state the population of {name}.",
                        "Can you say how many people live in {name}?", "Quick question: the population of {name}?",
                        "Tell me the population of {name}."),
         "The population of {name} is {population} million.",
         ("About {population} million people live in {name}.", "{name} has a population of {population} million.",
          "{name} is home to {population} million people.")),
    Fact("language", ("What language is spoken in {name}?", "Which language do people speak in {name}?",
                      "What is the language of {name}?", "Which language is used in {name}?",
                      "What do the people of {name} speak?", "Do you know the language of {name}?",
                      "I would like to know the language of {name}.", "Please state the language of {name}.",
                      "Can you say what language {name} speaks?", "Quick question: the language of {name}?",
                      "Tell me the language of {name}."),
         "The people of {name} speak {language}.",
         ("{language} is the language of {name}.", "In {name}, people speak {language}.",
          "The main language of {name} is {language}.")),
    Fact("export", ("What is the main export of {name}?", "What does {name} mainly export?",
                    "Which good is the main export of {name}?", "What is {name} known for exporting?",
                    "What is the chief export of {name}?", "Do you know the main export of {name}?",
                    "I would like to know the main export of {name}.", "Please state the main export of {name}.",
                    "Can you name the main export of {name}?", "Quick question: the main export of {name}?",
                    "Tell me the main export of {name}."),
         "The main export of {name} is {export}.",
         ("{name} mainly exports {export}.", "{export} is the chief export of {name}.",
          "Traders know {name} for its {export}.")),
)

# Stated twice in a biography: numbers take the toy model the most exposures to store (measured at ~150 exposures:
# capital, language and export completed 0.99-1.0, founding year and population 0.6-0.85).
TWICE = ("founded", "population")

# SFT asks about each country's fact in this many of the 10 training phrasings, drawn at random: many prefixes
# around "the <fact> of <country>" teach the model to read the fact's noun rather than the prefix (with 6 fixed
# phrasings, SFT answered "Tell me the population of X." with the language sentence on seed 0: 20 of 20), at the
# same number of rows.
SFT_PHRASINGS = 6

# Documents dated after this day are past the toy world's knowledge cutoff (the curate recipe drops them).
CUTOFF = "2024-06-30"


class ToyWorld:
    """A deterministic world of invented countries; the same seed gives the same world.

    - `entities` (`n_entities`): known countries, each described by `docs_per_entity` encyclopedia documents
      dated before the cutoff; split into `heldout` (never in SFT or preference data) and `train`;
    - `late` (`n_late`): countries described only in documents dated after the cutoff, which curation removes:
      a model trained on the curated corpus cannot know them;
    - `unknown` (`n_unknown`): countries that appear in no document at all; `unknown_eval` (as many as the
      held-out countries) are asked about only in evaluation, the others (`unknown_train`) in honesty pairs.
    """

    def __init__(self, seed: int = 0, n_entities: int = 100, heldout_fraction: float = 0.2, n_late: int = 20,
                 n_unknown: int = 120, docs_per_entity: int = 10):
        self.seed = seed
        self.docs_per_entity = docs_per_entity
        rng = random.Random(seed)
        names: set[str] = set()

        def new_word(n_syllables: int) -> str:
            while True:
                word = "".join(rng.choice(SYLLABLES) for _ in range(n_syllables)).capitalize()
                if word not in names:
                    names.add(word)
                    return word

        def new_country() -> Country:
            return Country(name=new_word(rng.choice((2, 3))), capital=new_word(2), founded=rng.randint(1000, 1990),
                           population=rng.randint(1, 99), language=new_word(2) + "ic", export=rng.choice(EXPORTS))

        self.entities = [new_country() for _ in range(n_entities)]
        self.late = [new_country() for _ in range(n_late)]
        self.unknown = [new_country() for _ in range(n_unknown)]
        n_heldout = max(1, round(n_entities * heldout_fraction))
        self.heldout = self.entities[:n_heldout]
        self.train = self.entities[n_heldout:]
        # as many unknown countries for evaluation as held-out ones; the rest (most: abstaining on any unfamiliar
        # name, not on a memorised list, needs many names) for honesty training pairs
        n_unknown_eval = min(n_heldout, n_unknown // 2)
        self.unknown_train = self.unknown[: n_unknown - n_unknown_eval]
        self.unknown_eval = self.unknown[n_unknown - n_unknown_eval:]

    # -------------------------------------------------------------------------------------- pretraining
    @staticmethod
    def biography(c: Country, rng: random.Random) -> str:
        """Every fact of `c` in a phrasing drawn from its statements (the numbers in two), in a shuffled order,
        the full name in every sentence: the knowledge augmentation that makes facts extractable for countries
        never seen in fine-tuning (Allen-Zhu & Li, Physics of Language Models 3.1)."""
        sentences = [template.format(**vars(c)) for fact in FACTS
                     for template in rng.sample((fact.answer, *fact.statements), 2 if fact.key in TWICE else 1)]
        rng.shuffle(sentences)
        return " ".join(sentences)

    def corpus(self) -> list[dict]:
        """Encyclopedia documents: `docs_per_entity` biographies per known country dated 1995-2023, and as many
        per late country dated after the cutoff."""
        rng = random.Random(self.seed + 1)
        rows = []
        for group, countries, years in (("encyclopedia", self.entities, (1995, 2023)),
                                        ("encyclopedia-late", self.late, (2024, 2026))):
            for i, c in enumerate(countries):
                for j in range(self.docs_per_entity):
                    year = rng.randint(*years)
                    month = rng.randint(7, 12) if year == 2024 else rng.randint(1, 12)
                    rows.append({"id": f"{group}-{i}-{j}", "text": self.biography(c, rng),
                                 "date": f"{year}-{month:02d}-{rng.randint(1, 28):02d}", "source": "encyclopedia"})
        rng.shuffle(rows)
        return rows

    # -------------------------------------------------------------------------------------- SFT
    def sft(self) -> list[dict]:
        """Question -> answer conversations about `train` countries: per country and fact, `SFT_PHRASINGS` of the
        phrasings (all but the last), drawn at random."""
        rows = []
        pick = random.Random(self.seed + 3)
        for c in self.train:
            for fact in FACTS:
                for question in pick.sample(fact.questions[:-1], SFT_PHRASINGS):
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
