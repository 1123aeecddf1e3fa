"""Bias audits on counterfactual pairs: two prompts that differ only in a demographic term (`prompt_a`/`prompt_b`,
`attribute`, `term_a`/`term_b`) and a reference reply (`response`). Per attribute, the gap between the two sides in

- log-likelihood of the reference reply (always),
- log-likelihood of the reference reply minus that of a `contrast` reply (rows that have one, e.g. the opposite
  trait): the group term alone shifts the likelihood of any reply (a term's tokens change the context), so that the
  plain log-likelihood gap of a model that never saw the two terms tied to anything can exclude 0; the difference
  between two replies cancels that shift and keeps what ties the term to one reply over the other,
- reward / sentiment score of the reference reply (when a scorer is given),
- answer correctness: the greedy answer equals the reference (when `answers` is on),

each with a bootstrap confidence interval from the shipped `bias_gap` metric. The log-likelihoods score the reply in
the chat format (`chat=True`), or as plain text after the prompt (`chat=False`), the way likelihood bias benchmarks
score a base model: an association learnt in pretraining shows there even when a chat model would never give the
reply."""

from __future__ import annotations

from collections import defaultdict

from llm_recipes.errors import DataError

REQUIRED = ("attribute", "prompt_a", "prompt_b", "response")


def check_pairs(rows: list[dict]) -> None:
    for i, row in enumerate(rows, 1):
        for key in REQUIRED:
            if not isinstance(row.get(key), str) or not row[key]:
                raise DataError(f"bias pairs: row {i} lacks '{key}'")
        if row.get("contrast") is not None and (not isinstance(row["contrast"], str) or not row["contrast"]):
            raise DataError(f"bias pairs: row {i}: 'contrast' must be a non-empty string")


def gaps_by_attribute(rows: list[dict], scores_a: list[float], scores_b: list[float], **metric_kwargs) -> dict:
    from llm_recipes.evaluation.metrics import compute

    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["attribute"]].append(i)
    out = {}
    for attribute, idx in groups.items():
        gap = compute("bias_gap", predictions=[scores_a[i] for i in idx], references=[scores_b[i] for i in idx], **metric_kwargs)
        gap["terms"] = [rows[idx[0]].get("term_a", "a"), rows[idx[0]].get("term_b", "b")]
        out[attribute] = gap
    return out


def bias_audit(model, tokenizer, rows: list[dict], scorer=None, answers: bool = True, max_new_tokens: int = 32,
               batch_size: int = 32, chat: bool = True) -> dict:
    from llm_recipes.evaluation.scoring import generate_answers, reply_logprob

    check_pairs(rows)
    a, b, ref = [r["prompt_a"] for r in rows], [r["prompt_b"] for r in rows], [r["response"] for r in rows]
    lik_a = reply_logprob(model, tokenizer, a, ref, batch_size, chat)
    lik_b = reply_logprob(model, tokenizer, b, ref, batch_size, chat)
    result = {"loglik": gaps_by_attribute(rows, lik_a, lik_b)}
    with_contrast = [i for i, r in enumerate(rows) if r.get("contrast")]
    if with_contrast:
        contrast = [rows[i]["contrast"] for i in with_contrast]
        con_a = reply_logprob(model, tokenizer, [a[i] for i in with_contrast], contrast, batch_size, chat)
        con_b = reply_logprob(model, tokenizer, [b[i] for i in with_contrast], contrast, batch_size, chat)
        result["loglik_contrast"] = gaps_by_attribute([rows[i] for i in with_contrast],
                                                      [lik_a[i] - c for i, c in zip(with_contrast, con_a)],
                                                      [lik_b[i] - c for i, c in zip(with_contrast, con_b)])
    if scorer is not None:
        result["reward"] = gaps_by_attribute(rows, scorer(a, ref), scorer(b, ref))
    if answers:
        ans_a = generate_answers(model, tokenizer, a, max_new_tokens, batch_size)
        ans_b = generate_answers(model, tokenizer, b, max_new_tokens, batch_size)
        result["answer"] = gaps_by_attribute(rows, [float(x == r) for (x, _), r in zip(ans_a, ref)],
                                             [float(x == r) for (x, _), r in zip(ans_b, ref)])
    return result
