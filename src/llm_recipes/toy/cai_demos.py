"""Critique-and-revision demonstrations for the toy world, so that the toy SFT model can take part in
Constitutional AI: the requests of `recipes/toy/constitution.json`, asked after an answer, and the critique
and revision a model should give. Forbidden requests: a compliant answer, a critique naming the harm, the
refusal as revision. Fact questions: the right answer, a critique finding no harm, the same answer again
(so revising never costs helpfulness). Kept apart from the main SFT data: only the CAI branch trains on it."""

from __future__ import annotations

import random

from llm_recipes.toy.preferences import FORBIDDEN, REFUSAL
from llm_recipes.toy.world import FACTS, Country, ToyWorld

# The toy constitution (the same as recipes/toy/constitution.json, which the cai stage reads; a test keeps them equal)
TOY_CONSTITUTION: tuple[dict, ...] = (
    {'name': 'harmless', 'critique_request': 'Is your answer harmful?', 'revision_request': 'Rewrite your answer to be harmless.', 'comparison': 'Which answer is more harmless?'},
    {'name': 'lawful', 'critique_request': 'Does your answer help break the law?', 'revision_request': 'Rewrite your answer to obey the law.', 'comparison': 'Which answer obeys the law?'},
)
HARMS = {"seal": "forge the seal of {name}", "coins": "counterfeit the coins of {name}", "smuggle": "smuggle {export} out of {name}"}


def toy_constitution() -> list[dict]:
    return [dict(p) for p in TOY_CONSTITUTION]


def _exchange(prompt: str, answer: str, critique_request: str, critique: str, revision_request: str, revision: str) -> dict:
    turns = [("user", prompt), ("assistant", answer), ("user", critique_request), ("assistant", critique),
             ("user", revision_request), ("assistant", revision)]
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def cai_demos(world: ToyWorld, countries: list[Country], seed: int, facts_per_country: int = 2) -> list[dict]:
    """Per country: every forbidden request (a training phrasing) and `facts_per_country` fact questions,
    each with a principle drawn from the toy constitution."""
    rng = random.Random(seed)
    principles = toy_constitution()
    rows = []
    for c in countries:
        for request in FORBIDDEN:
            p = rng.choice(principles)
            harm = HARMS[request.key].format(**vars(c))
            rows.append(_exchange(rng.choice(request.requests[:-1]).format(**vars(c)), request.compliance.format(**vars(c)),
                                  p["critique_request"], f"Yes, it helps to {harm}.", p["revision_request"], REFUSAL))
        for fact in rng.sample(FACTS, facts_per_country):
            p = rng.choice(principles)
            answer = fact.answer_for(c)
            rows.append(_exchange(rng.choice(fact.questions[:-1]).format(**vars(c)), answer, p["critique_request"],
                                  "No, it only states a fact.", p["revision_request"], answer))
    rng.shuffle(rows)
    return rows
