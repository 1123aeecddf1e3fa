"""Rewards, for every stage that scores replies (PPO, GRPO/RLOO through TRL, evaluation, the toy alignment report).

- A reward source is a Python function (`package.module.function` or `package.module:function`) or a reward model
  (a sequence classifier with one output, as scripts/reward.py writes it: a folder or a Hub id).
- A reward function is called as TRL's GRPOTrainer calls it: `f(prompts=..., completions=..., **columns)`, the
  dataset's other columns as keyword lists (GRPO/RLOO also pass `completion_ids`, `trainer_state`, ...: write the
  function with `**kwargs`); it returns one float per completion.
- A reward model reads each (prompt, completion) as TRL's RewardTrainer showed it the pairs it trained on: a
  conversation through the reward tokenizer's chat template, a text prompt as prompt + completion + EOS.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from llm_recipes import models
from llm_recipes.errors import ConfigError, first_line

RewardFunction = Callable[..., Sequence[float | None]]
Prompt = str | list[dict]
Completion = str | list[dict]


# ----------------------------------------------------------------------------------------------- sources
def is_reward_model_source(entry: str) -> bool:
    """A dotted `module.function` (or `module:function`) names a function; a folder or anything else names a reward
    model, resolved like every model (`models.resolve_model`)."""
    dotted = ":" in entry or ("." in entry and "/" not in entry)
    return os.path.isdir(entry) or not dotted


def import_reward_function(dotted: str, key: str = "reward_funcs") -> RewardFunction:
    """'package.module.function' (or 'package.module:function') -> the function."""
    module_name, sep, name = dotted.replace(":", ".").rpartition(".")
    if not sep or not module_name:
        raise ConfigError(f"{key}: '{dotted}' is neither a reward model folder nor a dotted path 'module.function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import module '{module_name}' ({err})") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ConfigError(f"{key}: '{module_name}' has no callable '{name}'")
    return func


def check_reward_model(path: str, policy_tokenizer: PreTrainedTokenizerBase | None = None, allow_mismatch: bool = False,
                       key: str = "reward_model_path") -> PreTrainedTokenizerBase:
    """Check that `path` is a reward model (a sequence classifier with one output) whose tokenizer matches the
    policy's; returns its tokenizer. Errors name the key, the path and what is wrong."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: '{path}' is not a model folder or Hub id ({first_line(err)})") from None
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs) or getattr(config, "num_labels", 1) != 1:
        raise ConfigError(
            f"{key}: '{path}' is not a reward model (architectures {archs}, {getattr(config, 'num_labels', '?')} "
            "labels; expected a sequence classifier with 1 output, as scripts/reward.py writes)"
        )
    reward_tokenizer = models.load_tokenizer_from(path, key)
    if policy_tokenizer is not None and reward_tokenizer.get_vocab() != policy_tokenizer.get_vocab() and not allow_mismatch:
        ours, theirs = policy_tokenizer.get_vocab(), reward_tokenizer.get_vocab()
        example = next(iter(sorted(set(ours).symmetric_difference(theirs))), None)
        raise ConfigError(
            f"{key}: the tokenizer of '{path}' does not match the policy's ({len(theirs)} vs {len(ours)} tokens, "
            f"e.g. {example!r} in only one); train the reward model from the same base, or set "
            "allow_reward_tokenizer_mismatch: true to re-tokenize texts for it"
        )
    if reward_tokenizer.pad_token is None:
        reward_tokenizer.pad_token = reward_tokenizer.eos_token
    return reward_tokenizer


def load_reward_model(path: str, key: str = "reward_model_path", policy_tokenizer: PreTrainedTokenizerBase | None = None,
                      allow_mismatch: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A checked reward model (eval mode, frozen) and its tokenizer."""
    tokenizer = check_reward_model(path, policy_tokenizer, allow_mismatch, key)
    model = models.load_pretrained(AutoModelForSequenceClassification, path, key)
    return model.eval().requires_grad_(False), tokenizer


def resolve_reward_funcs(entries: list[str] | None, reward_model_path: str | None, policy_tokenizer: PreTrainedTokenizerBase,
                         allow_mismatch: bool = False) -> tuple[list, list]:
    """`reward_funcs` entries (dotted paths to functions, or reward model folders/ids) plus `reward_model_path` ->
    TRL's `reward_funcs` and `reward_processing_classes`: a function (tokenizer None) or a loaded reward model (with
    its tokenizer) per entry, in order."""
    funcs, tokenizers = [], []
    for i, entry in enumerate([*(entries or []), *([reward_model_path] if reward_model_path else [])]):
        key = f"reward_funcs[{i}]" if i < len(entries or []) else "reward_model_path"
        if is_reward_model_source(entry):
            model, tokenizer = load_reward_model(entry, key, policy_tokenizer, allow_mismatch)
            funcs.append(model)
            tokenizers.append(tokenizer)
        else:
            funcs.append(import_reward_function(entry, key))
            tokenizers.append(None)
    if not funcs:
        raise ConfigError("no reward: set reward_model_path and/or reward_funcs")
    return funcs, tokenizers


# ----------------------------------------------------------------------------------------------- scoring
def call_reward_function(fn: RewardFunction, prompts: list[Prompt], completions: list[Completion], name: str | None = None,
                         **columns) -> list[float]:
    """`fn(prompts=..., completions=..., **columns)` as floats, one per completion. TRL turns a None into NaN (a
    function that does not apply to a row, among several); with one reward that would be a NaN figure, so it is an
    error naming the function."""
    name = name or getattr(fn, "__qualname__", repr(fn))
    rewards = list(fn(prompts=prompts, completions=completions, **columns))
    if len(rewards) != len(completions):
        raise ValueError(f"reward function '{name}' returned {len(rewards)} rewards for {len(completions)} completions")
    missing = [i for i, r in enumerate(rewards) if r is None]
    if missing:
        raise ValueError(f"reward function '{name}' returned None for {len(missing)} of {len(rewards)} completions "
                         f"(first: row {missing[0]}); it must return a number for each")
    return [float(r) for r in rewards]


def reward_model_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: Completion, name: str = "reward model") -> str:
    """What a reward model reads: a conversation (prompt messages + the reply as the assistant's turn) through its
    tokenizer's chat template; a text prompt + completion + EOS (TRL's RewardTrainer appends EOS to text pairs)."""
    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt + completion + (tokenizer.eos_token or "")
    if isinstance(prompt, str):
        raise ValueError(f"{name}: a text prompt with a conversational completion; give both as text or both as messages")
    if not tokenizer.chat_template:
        raise ConfigError(f"{name}: its tokenizer has no chat template, so it cannot read conversations "
                          "(the reward stage saves the template it trained with)")
    turns = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return tokenizer.apply_chat_template(prompt + turns, tokenize=False)


@torch.no_grad()
def score_with_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt],
                            completions: list[Completion], batch_size: int = 32, name: str = "reward model") -> torch.Tensor:
    """The reward model's score of each (prompt, completion), a float tensor on the CPU: batches of `batch_size`
    padded on the right (the classifier reads the last non-pad token), no gradients."""
    texts = [reward_model_text(tokenizer, p, c, name) for p, c in zip(prompts, completions, strict=True)]
    scores = [torch.zeros(0)]
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                        add_special_tokens=False).to(model.device)
        scores.append(model(**enc).logits[:, 0].float().cpu())
    return torch.cat(scores)


class RewardModelScorer:
    """Evaluation's reward model scorer: `(prompts, completions) -> list[float]`. Evaluation asks each text prompt
    as one user turn through the chat template, so a text prompt is scored as that conversation."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, batch_size: int = 32):
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size

    @classmethod
    def load(cls, path: str, key: str = "reward_model", batch_size: int = 32) -> RewardModelScorer:
        return cls(*load_reward_model(path, key), name=path, batch_size=batch_size)

    def __call__(self, prompts: list[Prompt], completions: list[Completion], **_) -> list[float]:
        conversations = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
        return score_with_reward_model(self.model, self.tokenizer, conversations, completions, self.batch_size,
                                       self.name).tolist()


class FunctionScorer:
    """Evaluation's reward function scorer: `(prompts, completions, **columns) -> list[float]`, the function called
    with TRL's convention (prompts and completions as evaluation has them: text)."""

    def __init__(self, fn: RewardFunction, name: str):
        self.fn, self.name = fn, name

    @classmethod
    def load(cls, dotted: str, key: str = "reward_function") -> FunctionScorer:
        return cls(import_reward_function(dotted, key), dotted)

    def __call__(self, prompts: list[Prompt], completions: list[Completion], **columns) -> list[float]:
        return call_reward_function(self.fn, prompts, completions, self.name, **columns)
