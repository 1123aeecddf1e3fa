"""Online DPO on TRL's experimental OnlineDPOTrainer, with the pairs it samples written out for reading back.

Each step the policy samples two completions per prompt (transformers' `generate`, or vLLM with `use_vllm`), the
reward sources score both, the higher one is `chosen` (TRL keeps the first on a tie) and the DPO loss against the
reference (the starting policy) is taken on that pair.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from accelerate.utils import gather_object
from trl.experimental.online_dpo import OnlineDPOTrainer

PAIRS_FILE = "sampled_pairs.jsonl"


def completion_tokens(ids: list[int], stop_ids: list[int]) -> list[int]:
    """The tokens of one sampled completion: up to and including its first stop token (TRL pads after it), or all
    of them when it ran to `max_new_tokens`."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[: i + 1]
    return list(ids)


def completion_text(completion: str | list[dict]) -> str:
    """A decoded completion as TRL hands it to reward functions: text, or one assistant message."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


class PairRecordingOnlineDPOTrainer(OnlineDPOTrainer):
    """TRL's OnlineDPOTrainer that also appends the pairs of every `log_pairs_steps`-th step to
    `<output_dir>/sampled_pairs.jsonl`: TRL logs only their means (scores, margins, log-probs), so what the policy
    sampled and how the rewards ranked it could not be read back. One line per pair: step (1-based), prompt, the two
    completions (text and token ids), their rewards (the weighted sum of the reward sources, before the missing-EOS
    penalty) and `chosen` (0 or 1: TRL's rule, the higher penalised reward, the first on a tie). Training is TRL's."""

    def _calculate_rewards_from_functions(self, prompts, completions, completion_ids_list,
                                          **reward_kwargs) -> torch.Tensor:
        rewards = super()._calculate_rewards_from_functions(prompts, completions, completion_ids_list, **reward_kwargs)
        every = getattr(self.args, "log_pairs_steps", 0)
        if every and self.state.global_step % every == 0:
            self._record_pairs(prompts, completions, completion_ids_list, rewards)
        return rewards

    def _record_pairs(self, prompts: list, completions: list, completion_ids: list[list[int]],
                      rewards: torch.Tensor) -> None:
        # TRL's layout: prompts are the batch twice, completion i and i + batch are the pair of prompt i
        batch = len(prompts) // 2
        penalty = self.args.missing_eos_penalty
        records: list[dict[str, Any]] = []
        for i in range(batch):
            pair = [completion_tokens(completion_ids[j], self.eos_token_ids) for j in (i, i + batch)]
            scores = [float(rewards[j]) for j in (i, i + batch)]
            ranked = [s - (penalty if penalty is not None and ids[-1] not in self.eos_token_ids else 0.0)
                      for s, ids in zip(scores, pair)]
            records.append({
                "step": self.state.global_step + 1,
                "prompt": prompts[i],
                "completions": [completion_text(completions[j]) for j in (i, i + batch)],
                "completion_ids": pair,
                "rewards": scores,
                "chosen": 0 if ranked[0] >= ranked[1] else 1,
            })
        records = gather_object(records)
        if self.accelerator.is_main_process:
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(os.path.join(self.args.output_dir, PAIRS_FILE), "a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in records)
