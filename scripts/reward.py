"""Reward modelling on preference pairs with TRL's RewardTrainer: full, LoRA or QLoRA. Reports pairwise
accuracy over every eval pair scored (with the count scored, the count longer than `max_length` and not scored,
and a 95% interval) and the mean margin, and saves a sequence classifier (one output) in the Hub format, with
its card (those figures in it) and the completion marker. Data without a held-out split gets one
(`dataset_test_split_size`, default 5% of train). A LoRA reward model is saved merged, so PPO, GRPO and RLOO can
load it as it is.

    accelerate launch scripts/reward.py --config recipes/toy/reward.yaml
"""

import torch

from llm_recipes import alignment, data, models, training
from llm_recipes.alignment_config import RewardArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli
from llm_recipes.reward import PairwiseRewardTrainer

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, RewardArguments, AlignmentModelArguments)


def main(data_args: DataArguments, training_args: RewardArguments, model_args: AlignmentModelArguments) -> None:
    training.setup(training_args)

    dataset = alignment.load_preference_data(data_args, training_args, "no pairwise accuracy")
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    start_args = alignment.start_model_args(model_args, tokenizer, training_args.trust_remote_code)
    model = models.load_model(start_args, tokenizer, task="sequence-classification",
                              trust_remote_code=training_args.trust_remote_code)
    peft_config = models.peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"
        peft_config.modules_to_save = sorted({*(peft_config.modules_to_save or []), "score"})

    trainer = PairwiseRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test"),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    alignment.upcast_trainable(trainer.model, training_args)
    metrics = training.train_and_evaluate(trainer, training_args)
    if peft_config is not None:
        trainer.model = merged_reward_model(trainer.model, start_args, tokenizer, training_args)

    training.save_stage(
        trainer,
        training_args,
        stage="reward",
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        tags=["reward-model"],
        description="A reward model (sequence classifier with one output) trained on preference pairs with the "
        "llm-recipes `reward` stage. `eval_accuracy` is the share of the `eval_pairs_scored` eval pairs whose chosen "
        "reply scores above the rejected one (pairwise accuracy; `eval_pairs_correct` of them), with its 95% Wilson "
        "interval `eval_accuracy_ci_low`-`eval_accuracy_ci_high`; `eval_pairs_dropped_too_long` eval pairs had a side "
        "longer than `max_length` tokens and were not scored; `eval_margin` is the mean score difference.",
    )


def merged_reward_model(peft_model, start_args, tokenizer, training_args):
    """The LoRA reward model merged into the base it was trained on (models.merge_trained_adapter: a QLoRA one into
    the dequantised 4-bit base; a 4-bit model cannot be saved for plain loading), in float32, so that later stages
    load one folder."""
    return models.merge_trained_adapter(peft_model, start_args, tokenizer, dtype=torch.float32,
                                        trust_remote_code=training_args.trust_remote_code)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
