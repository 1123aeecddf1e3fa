"""Model comparison: each model's greedy replies to the same prompts, scored by a reward model (or reward function,
or a judge LLM asked which of two replies is better), turned into the win rate of each model over the baseline by
the shipped `win_rate` metric."""

from __future__ import annotations


def judge_preferences(judge_model, tokenizer, prompts: list[str], a: list[str], b: list[str]) -> tuple[list[float], list[float]]:
    """A judge LLM's preference as scores: log p('A') vs log p('B') after showing both replies (both orders,
    averaged, to cancel position bias)."""
    from llm_recipes.evaluation.scoring import reply_logprob

    q = "Question: {p}\nReply A: {x}\nReply B: {y}\nWhich reply is better? Answer A or B."
    first = [q.format(p=p, x=x, y=y) for p, x, y in zip(prompts, a, b)]
    second = [q.format(p=p, x=y, y=x) for p, x, y in zip(prompts, a, b)]
    n = len(prompts)
    a1, b1 = reply_logprob(judge_model, tokenizer, first, ["A"] * n), reply_logprob(judge_model, tokenizer, first, ["B"] * n)
    a2, b2 = reply_logprob(judge_model, tokenizer, second, ["B"] * n), reply_logprob(judge_model, tokenizer, second, ["A"] * n)
    return [x + y for x, y in zip(a1, a2)], [x + y for x, y in zip(b1, b2)]


def win_rates(replies: dict[str, list[str]], prompts: list[str], columns: dict[str, list], baseline: str,
              scorer=None, judge=None) -> dict:
    """{model: {"reward": win_rate result, "judge": ...}} for every model but the baseline, against the baseline."""
    from llm_recipes.evaluation.metrics import compute

    out: dict[str, dict] = {}
    scores = {m: scorer(prompts, r, **columns) for m, r in replies.items()} if scorer is not None else {}
    for model, reply in replies.items():
        if model == baseline:
            continue
        entry = {}
        if scorer is not None:
            entry["reward"] = compute("win_rate", predictions=scores[model], references=scores[baseline])
            entry["reward"]["mean_score"] = sum(scores[model]) / max(1, len(scores[model]))
            entry["reward"]["baseline_mean_score"] = sum(scores[baseline]) / max(1, len(scores[baseline]))
        if judge is not None:
            sa, sb = judge_preferences(*judge, prompts, reply, replies[baseline])
            entry["judge"] = compute("win_rate", predictions=sa, references=sb)
        out[model] = entry
    return out
