"""The toy world's held-out questions as a benchmark plug-in of the evaluate stage: does a model answer in the
trained format, stop at its end-of-turn token, and state the right fact?

    benchmarks:
      toy_heldout_qa: {type: "llm_recipes.toy.evaluate:HeldoutQuestions", questions: runs/toy/data/heldout_qa}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm_recipes.evaluation.generation import generate_answers
from llm_recipes.evaluation.plugins import BenchmarkPlugin


def score_answers(rows: list[dict], answers: list[tuple[str, bool]]) -> dict[str, float]:
    """format_rate: answer matches the trained format and ends with EOS; exact_match: equals the gold answer."""
    n = max(len(rows), 1)
    formatted = sum(stopped and re.fullmatch(r["answer_pattern"], text) is not None for r, (text, stopped) in zip(rows, answers))
    exact = sum(text == r["answer"] for r, (text, _) in zip(rows, answers))
    stops = sum(stopped for _, stopped in answers)
    return {"format_rate": formatted / n, "exact_match": exact / n, "eos_rate": stops / n, "n": len(rows)}


@dataclass
class HeldoutQuestionsOptions:
    questions: str  # held-out questions (question, answer, answer_pattern): a dataset folder (its test split) or a file


class HeldoutQuestions(BenchmarkPlugin):
    """Greedy answers (the stage's max_new_tokens and batch_size) to the held-out questions: format_rate, eos_rate,
    exact_match; the first three answers of each model as examples."""

    Options = HeldoutQuestionsOptions

    def __init__(self, name: str, options: HeldoutQuestionsOptions, args) -> None:
        from llm_recipes.evaluation.scoring import load_rows
        from llm_recipes.parser import check_data_source

        super().__init__(name, options, args)
        check_data_source(options.questions, self.key("questions"))
        self.rows = load_rows(options.questions, split="test")
        self.examples: dict[str, list[dict]] = {}

    def evaluate(self, model, tokenizer, name: str, path: str) -> dict[str, float]:
        answers = generate_answers(model, tokenizer, [r["question"] for r in self.rows], self.args.max_new_tokens,
                                   self.args.batch_size)
        self.examples[name] = [{"question": r["question"], "answer": a} for r, (a, _) in zip(self.rows[:3], answers)]
        return score_answers(self.rows, answers)

    def details(self) -> dict:
        return {"examples": self.examples}
