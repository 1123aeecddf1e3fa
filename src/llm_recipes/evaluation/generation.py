"""Greedy replies of a chat model the way it was trained to answer: each question through the tokenizer's chat
template with the generation prompt, generation stopped at the tokenizer's EOS (the end-of-turn token that
training made the EOS), and whether the reply reached it."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str], max_new_tokens: int = 32,
    batch_size: int = 32,
) -> list[tuple[str, bool]]:
    """Greedy answers through the chat template; each with whether generation ended with EOS."""
    tokenizer.padding_side = "left"
    eos_id = tokenizer.eos_token_id
    answers = []
    model.eval()
    for start in tqdm(range(0, len(questions), batch_size), desc="generating", leave=False):
        batch = questions[start : start + batch_size]
        prompts = [
            tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in batch
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id
        )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            stopped = eos_id in row
            row = row[: row.index(eos_id)] if stopped else row
            answers.append((tokenizer.decode(row, skip_special_tokens=True).strip(), stopped))
    return answers
