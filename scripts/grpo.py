"""GRPO (group-relative policy optimisation) with TRL's GRPOTrainer: rewards from the reward model of scripts/reward.py
and/or Python reward functions given by dotted path (`reward_funcs`, weighted by `reward_weights`).
Prompts: text or conversations (a `prompt` column; other columns reach reward functions). Full, LoRA or QLoRA.

    accelerate launch scripts/grpo.py --config recipes/toy/grpo.yaml

Starting from an SFT adapter folder, the adapter is merged into its base first, so the KL reference (the
model with the new adapter disabled) is the SFT policy and not the bare base; the result is then saved
merged, since its base exists only in this run.
"""

import logging

from trl import GRPOTrainer

from llm_recipes import alignment, data, models, training
from llm_recipes.configs import AlignmentModelArguments, DataArguments, GRPOStageConfig, RewardSourceArguments, run_cli

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, GRPOStageConfig, AlignmentModelArguments, RewardSourceArguments)


def main(data_args: DataArguments, training_args: GRPOStageConfig, model_args: AlignmentModelArguments,
         reward_args: RewardSourceArguments) -> None:
    training.setup(training_args)

    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed, kind="prompt")
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    reward_funcs, reward_tokenizers = alignment.resolve_reward_funcs(
        reward_args.reward_funcs, reward_args.reward_model_path, tokenizer, reward_args.allow_reward_tokenizer_mismatch)
    from_adapter = alignment.is_adapter_folder(model_args.model_name_or_path)
    start_args = alignment.start_model_args(model_args, tokenizer, training_args.trust_remote_code)
    model = models.load_model(start_args, tokenizer, trust_remote_code=training_args.trust_remote_code)

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test") if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        reward_processing_classes=reward_tokenizers,
        peft_config=models.peft_config(model_args),
    )
    alignment.upcast_trainable(trainer.model, training_args)
    metrics = training.train_and_evaluate(trainer, training_args)
    if from_adapter and model_args.use_peft:
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        logger.info("started from an adapter: saving the merged policy")

    training.save_stage(
        trainer,
        training_args,
        stage="grpo",
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics={"rewards": ", ".join(str(r) for r in [*(reward_args.reward_funcs or []), reward_args.reward_model_path] if r)},
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
