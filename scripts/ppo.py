"""RLHF with PPO against a reward model, on the project's own PPO trainer (`llm_recipes.ppo`; TRL removed
its PPOTrainer). Prompts may be text or conversations. Full, LoRA or QLoRA policies; the reference for the
KL penalty is the starting policy (LoRA: adapter disabled; no second copy).

    accelerate launch scripts/ppo.py --config recipes/toy/ppo.yaml
"""

import logging

from transformers import AutoModelForSequenceClassification

from llm_recipes import alignment, data, models, rewards, training
from llm_recipes.alignment_config import RewardSourceArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli
from llm_recipes.ppo.config import PPOArguments
from llm_recipes.errors import ConfigError
from llm_recipes.hub import mark_complete, push_folder, write_model_card
from llm_recipes.ppo import PPOTrainer, list_checkpoints
from llm_recipes.ppo.ptx import load_ptx_data

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, PPOArguments, AlignmentModelArguments, RewardSourceArguments)


def main(data_args: DataArguments, training_args: PPOArguments, model_args: AlignmentModelArguments, reward_args: RewardSourceArguments) -> None:
    training.setup(training_args)
    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed, kind="prompt")
    ptx, ptx_text = load_ptx_data(training_args)  # before any model loads: a bad key stops the run at once

    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)

    reward_model = reward_tokenizer = reward_function = None
    funcs, tokenizers = rewards.resolve_reward_funcs(reward_args.reward_funcs, reward_args.reward_model_path, tokenizer,
                                                     reward_args.allow_reward_tokenizer_mismatch)
    if len(funcs) != 1:
        raise ConfigError("reward_model_path/reward_funcs: PPO takes exactly one reward (a reward model or one function)")
    if tokenizers[0] is not None:
        reward_model, reward_tokenizer = funcs[0], tokenizers[0]
    else:
        reward_function = funcs[0]

    policy, peft_config, from_adapter = alignment.load_policy(model_args, tokenizer, training_args.trust_remote_code)
    ref_model = models.load_causal_lm(training_args.ref_model_path, key="ref_model_path",
                                       trust_remote_code=training_args.trust_remote_code) if training_args.ref_model_path else None
    value_model = None
    if training_args.value_model_path:
        rewards.check_reward_model(training_args.value_model_path, tokenizer, reward_args.allow_reward_tokenizer_mismatch,
                                   key="value_model_path")
        value_model = models.load_pretrained(AutoModelForSequenceClassification, training_args.value_model_path, "value_model_path")

    trainer = PPOTrainer(
        training_args, policy, tokenizer, dataset["train"], reward_model=reward_model, reward_tokenizer=reward_tokenizer,
        reward_function=reward_function, ref_model=ref_model, value_model=value_model, peft_config=peft_config,
        continue_adapter=from_adapter and model_args.use_peft, ptx_dataset=ptx, ptx_text_dataset=ptx_text,
    )
    checkpoints = list_checkpoints(training_args.output_dir)
    resume = training_args.resume_from_checkpoint or (checkpoints[-1] if checkpoints else None)
    metrics = trainer.train(resume_from_checkpoint=resume)
    final = training.staged_final_folder(training_args.output_dir, trainer.accelerator)  # published whole, marker last
    trainer.save_model(final)

    if trainer.accelerator.is_main_process:
        sources = data.dataset_sources(data_args)
        card_metrics = {k: v for k, v in metrics.items() if v is not None}
        card_metrics.update(kl_coef=training_args.kl_coef, reward=reward_args.reward_model_path or reward_args.reward_funcs[0])
        write_model_card(
            final, stage="ppo", base_model=model_args.model_name_or_path, datasets=sources,
            metrics=card_metrics, recipe_path=training.recipe_path(), tags=["ppo", "rlhf"],
            description="Policy trained with RLHF (PPO-clip, GAE, per-token KL penalty to the starting policy) by the "
            "llm-recipes `ppo` stage. Per-update curves (reward, KL, entropy, clip fraction, value loss, approx "
            "KL, response length) are in `ppo_log.jsonl`.",
        )
        mark_complete(final, "ppo", base_model=model_args.model_name_or_path, datasets=sources, metrics=card_metrics)
        training.publish_final_folder(training_args.output_dir)
        logger.info("ppo done: policy saved to %s", training_args.output_dir)
        if training_args.push_to_hub and training_args.hub_model_id:
            push_folder(training_args.output_dir, training_args.hub_model_id)
    trainer.end()


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
