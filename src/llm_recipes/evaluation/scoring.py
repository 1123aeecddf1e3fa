"""Model-side helpers shared by red teaming, bias audits and comparison: chat-template generation, log-likelihood
of a reply, and the evaluation's reward scorer (a reward model, or a Python reward function: llm_recipes.rewards)."""

from __future__ import annotations

import logging
import os

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm_recipes.rewards import FunctionScorer, RewardModelScorer
from llm_recipes.evaluation.generation import generate_answers  # chat template + EOS exactly as in training

logger = logging.getLogger(__name__)

__all__ = ["generate_answers", "reply_logprob", "RewardModelScorer", "FunctionScorer", "load_scorer", "load_rows"]


def load_rows(source: str, split: str = "test") -> list[dict]:
    """Rows of a prompt set: a .jsonl/.json/.csv/.parquet file, a local dataset folder, or a Hub id."""
    from llm_recipes.data import load_source

    return list(load_source(source, split="train" if os.path.isfile(source) else split))


def _chat(tokenizer: PreTrainedTokenizerBase, prompt: str, reply: str | None = None) -> str:
    messages = [{"role": "user", "content": prompt}]
    if reply is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=False)


@torch.no_grad()
def reply_logprob(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], replies: list[str],
                  batch_size: int = 32) -> list[float]:
    """Sum of log p(reply tokens | chat-formatted prompt), the reply ending with the end-of-turn token."""
    model.eval()
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        contexts = [tokenizer(_chat(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts[start:start + batch_size]]
        fulls = [tokenizer(_chat(tokenizer, p, r), add_special_tokens=False)["input_ids"]
                 for p, r in zip(prompts[start:start + batch_size], replies[start:start + batch_size])]
        width = max(len(f) for f in fulls)
        pad = tokenizer.pad_token_id or 0
        ids = torch.tensor([f + [pad] * (width - len(f)) for f in fulls])
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in fulls])
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        token_lp = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
        for row, (ctx, full) in enumerate(zip(contexts, fulls)):
            scores.append(float(token_lp[row, len(ctx) - 1 : len(full) - 1].sum()))
    return scores


def load_scorer(reward_model: str | None, reward_function: str | None) -> RewardModelScorer | FunctionScorer | None:
    """The evaluation's reward: the reward model if set, else the Python reward function, else none."""
    if reward_model:
        return RewardModelScorer.load(reward_model, "reward_model")
    if reward_function:
        return FunctionScorer.load(reward_function, "reward_function")
    return None
