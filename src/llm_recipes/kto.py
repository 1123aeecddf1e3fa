"""KTO's data: unpaired examples (or preference pairs split into them), shuffled for TRL's in-order reading, and
the balance of desirable to undesirable examples that KTO's paper advises."""

from __future__ import annotations

import logging

from datasets import DatasetDict

from llm_recipes import alignment, data, training

logger = logging.getLogger(__name__)

ADVISED_RATIO = (1.0, 4 / 3)  # KTO paper: desirable_weight * n_desirable / (undesirable_weight * n_undesirable)


def load_unpaired_data(data_args, training_args) -> DatasetDict:
    """The stage's examples (prompt, completion, label) with an eval split (`alignment.ensure_eval_split`), each
    split shuffled once with the seed: TRL's KTOTrainer reads them in order and estimates its KL term from each
    example's prompt with its neighbour's completion, which must not be the other half of the same pair."""
    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed, kind="unpaired")
        dataset = alignment.ensure_eval_split(dataset, data_args, training_args.seed, "no eval loss or KTO rewards")
        return DatasetDict({name: split.shuffle(seed=training_args.seed) for name, split in dataset.items()})


def desirable_balance(labels: list[bool], desirable_weight: float, undesirable_weight: float) -> dict[str, float]:
    """Counts of desirable and undesirable training examples and their weighted ratio, logged; a warning when the
    ratio is outside the paper's advised [1, 4/3] or a side is missing (TRL warns only when the counts differ)."""
    desirable = sum(bool(label) for label in labels)
    undesirable = len(labels) - desirable
    figures: dict[str, float] = {"desirable_examples": desirable, "undesirable_examples": undesirable}
    if desirable == 0 or undesirable == 0:
        logger.warning("training examples: %d desirable, %d undesirable: KTO needs both", desirable, undesirable)
        return figures
    ratio = desirable_weight * desirable / (undesirable_weight * undesirable)
    figures["weighted_desirable_ratio"] = ratio
    logger.info("training examples: %d desirable, %d undesirable; weighted ratio (desirable_weight %g x %d) / "
                "(undesirable_weight %g x %d) = %.3f", desirable, undesirable, desirable_weight, desirable,
                undesirable_weight, undesirable, ratio)
    low, high = ADVISED_RATIO
    if not low <= ratio <= high:
        logger.warning("weighted desirable/undesirable ratio %.3f is outside [1, 4/3] (KTO paper's advice): set "
                       "desirable_weight in [%.3g, %.3g] with undesirable_weight %g", ratio,
                       low * undesirable_weight * undesirable / desirable,
                       high * undesirable_weight * undesirable / desirable, undesirable_weight)
    return figures
