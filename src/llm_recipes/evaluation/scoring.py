"""Model-side helpers shared by red teaming, bias audits and comparison: chat-template generation, log-likelihood
of a reply or a text, and the evaluation's reward scorer (a reward model, or a Python reward function: llm_recipes.rewards)."""

from __future__ import annotations

import logging
import math
import os

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm_recipes.rewards import FunctionScorer, RewardModelScorer
from llm_recipes.evaluation.generation import generate_answers  # chat template + EOS exactly as in training

logger = logging.getLogger(__name__)

__all__ = ["generate_answers", "reply_logprob", "text_nll_bits", "RewardModelScorer", "FunctionScorer", "load_scorer", "load_rows"]


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
                  batch_size: int = 32, chat: bool = True) -> list[float]:
    """Sum of log p(reply tokens | prompt): the chat-formatted prompt, the reply ending with the end-of-turn token;
    or, with `chat=False`, plain text as in pretraining (the document separator, the prompt, a space, the reply)."""
    model.eval()
    bos = tokenizer.bos_token or ""
    context_text = (lambda p: _chat(tokenizer, p)) if chat else (lambda p: bos + p)
    full_text = (lambda p, r: _chat(tokenizer, p, r)) if chat else (lambda p, r: f"{bos}{p} {r}")
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        contexts = [tokenizer(context_text(p), add_special_tokens=False)["input_ids"] for p in prompts[start:start + batch_size]]
        fulls = [tokenizer(full_text(p, r), add_special_tokens=False)["input_ids"]
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


@torch.no_grad()
def text_nll_bits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                  batch_size: int = 8) -> list[tuple[float, int]]:
    """(negative log-likelihood in bits, UTF-8 bytes) of each plain text after the document separator (BOS): the
    terms of bits per byte."""
    model.eval()
    rows: list[tuple[float, int]] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        seqs = [tokenizer((tokenizer.bos_token or "") + t, add_special_tokens=False)["input_ids"] for t in batch]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [tokenizer.pad_token_id or 0] * (width - len(s)) for s in seqs], device=model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=model.device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        token_lp = logprobs.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        rows += [(-float(lp.sum()) / math.log(2), len(t.encode("utf-8"))) for lp, t in zip(token_lp, batch)]
    return rows


def load_scorer(reward_model: str | None, reward_function: str | None) -> RewardModelScorer | FunctionScorer | None:
    """The evaluation's reward: the reward model if set, else the Python reward function, else none."""
    if reward_model:
        return RewardModelScorer.load(reward_model, "reward_model")
    if reward_function:
        return FunctionScorer.load(reward_function, "reward_function")
    return None
