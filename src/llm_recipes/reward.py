"""Reward-model evaluation that reports what it says: the share of eval pairs whose chosen reply scores above
the rejected one, over every pair scored, with the number scored, the number TRL's `max_length` filter dropped,
and a 95% Wilson interval.

TRL's RewardTrainer falls short here: its eval `accuracy` is the mean of per-batch means (with batches of 32 and
a last batch of 3, each of those 3 pairs weighs ten times more than the others), and pairs longer than
`max_length` are filtered out of the eval split without a count. `PairwiseRewardTrainer` keeps TRL's training
and its tokenization of the eval pairs, and replaces only the evaluation.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch
from datasets import Dataset
from trl import RewardTrainer

from llm_recipes.errors import DataError

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _wilson():
    """The Wilson score interval of the shipped `safety_rates` metric. Metric scripts are files loaded by path, and
    their `import evaluate` must find the package, not `scripts/evaluate.py` beside the running stage script
    (sys.path[0]): folders holding an `evaluate.py` are left off the path while the metric module loads."""
    metric = Path(__file__).parent / "evaluation" / "metrics" / "safety_rates" / "safety_rates.py"
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if not os.path.isfile(os.path.join(p or ".", "evaluate.py"))]
    try:
        spec = importlib.util.spec_from_file_location("llm_recipes_safety_rates", metric)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module.wilson


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a share (the one the evaluation metrics use)."""
    return _wilson()(successes, n)


def pairwise_metrics(chosen: list[float], rejected: list[float], dropped_too_long: int) -> dict[str, float | int]:
    """Accuracy (chosen scored strictly above rejected) over all scored pairs, its 95% Wilson interval, the mean
    margin and the counts."""
    n = len(chosen)
    if n == 0:
        raise DataError("eval split: no pair left to score")
    correct = sum(c > r for c, r in zip(chosen, rejected))
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": correct / n,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "pairs_scored": n,
        "pairs_correct": correct,
        "pairs_dropped_too_long": dropped_too_long,
    }


class PairwiseRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer whose evaluation scores every eval pair once (batched, no grad) and reports accuracy
    over all of them, the pairs dropped as longer than `max_length`, and a 95% interval."""

    def __init__(self, *args, eval_dataset: Dataset | None = None, **kwargs):
        self.eval_pairs_given = 0 if eval_dataset is None else len(eval_dataset)
        super().__init__(*args, eval_dataset=eval_dataset, **kwargs)
        if eval_dataset is not None:
            kept = len(self.eval_dataset)
            if kept == 0:
                raise DataError(f"eval split: all {self.eval_pairs_given} pairs are longer than max_length "
                                f"{self.args.max_length} tokens, none could be scored; raise max_length")
            if kept < self.eval_pairs_given:
                logger.warning("eval split: %d of the %d pairs are longer than max_length %s tokens and will not be scored",
                               self.eval_pairs_given - kept, self.eval_pairs_given, self.args.max_length)

    @torch.no_grad()
    def score_pairs(self, prepared: Dataset) -> tuple[list[float], list[float]]:
        """Rewards of the chosen and rejected sides of TRL-tokenized pairs, batched through TRL's collator. Every
        process scores every pair (the same forward passes on all ranks, as sharded models need). Not the project's
        text scorer (`rewards.score_with_reward_model`): it re-templates the text (evaluation's plain-text prompts
        become a chat turn), while these are the very token ids the model was trained on and TRL's `max_length`
        filter counted."""
        model = self.model
        chosen: list[float] = []
        rejected: list[float] = []
        step = self.args.per_device_eval_batch_size
        for start in range(0, len(prepared), step):
            batch = self.data_collator([prepared[i] for i in range(start, min(len(prepared), start + step))])
            with self.autocast_smart_context_manager():
                logits = model(input_ids=batch["input_ids"].to(self.accelerator.device),
                               attention_mask=batch["attention_mask"].to(self.accelerator.device), use_cache=False).logits
            c, r = logits[:, 0].float().chunk(2)
            chosen += c.tolist()
            rejected += r.tolist()
        return chosen, rejected

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if eval_dataset is not None and not isinstance(eval_dataset, Dataset):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # several eval sets: TRL's way
        given = self.eval_pairs_given if eval_dataset is None else len(eval_dataset)
        prepared = self.eval_dataset if eval_dataset is None else self._prepare_dataset(
            eval_dataset, self.processing_class, self.args, "eval")
        start = time.time()
        was_training = self.model.training
        self.model.eval()  # also makes TRL's `log` treat these as eval metrics
        chosen, rejected = self.score_pairs(prepared)
        pairs = pairwise_metrics(chosen, rejected, dropped_too_long=given - len(prepared))
        c, r = torch.tensor(chosen), torch.tensor(rejected)
        loss = -torch.nn.functional.logsigmoid(c - r).mean()  # TRL's loss, over all pairs
        if self.args.center_rewards_coefficient is not None:
            loss += self.args.center_rewards_coefficient * torch.mean((c + r) ** 2)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in {"loss": loss.item(), **pairs}.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        if self.accelerator.is_main_process:
            log_accuracy(pairs, given, self.args.max_length)
        self.log(metrics)
        self.model.train(was_training)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def log_accuracy(pairs: dict, given: int, max_length: int | None) -> None:
    logger.info("reward model: pairwise accuracy %.3f (%d of %d pairs ranked right; 95%% CI %.3f-%.3f), mean margin %.3f",
                pairs["accuracy"], pairs["pairs_correct"], pairs["pairs_scored"], pairs["accuracy_ci_low"],
                pairs["accuracy_ci_high"], pairs["margin"])
    if pairs["pairs_dropped_too_long"]:
        logger.info("reward model: %d of the %d eval pairs not scored: longer than max_length %s tokens",
                    pairs["pairs_dropped_too_long"], given, max_length)
