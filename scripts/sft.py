"""Supervised fine-tuning: full, LoRA or QLoRA, with packing and assistant-only loss, on TRL's SFTTrainer.

    accelerate launch scripts/sft.py --config recipes/toy/sft.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml scripts/sft.py \
        --config recipes/llama-3.1-8b/sft/config_full.yaml
"""

from trl import SFTConfig, SFTTrainer

from llm_recipes import data, models, training
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import ModelArguments
from llm_recipes.parser import run_cli
from llm_recipes.errors import ConfigError


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, SFTConfig, ModelArguments)


def main(data_args: DataArguments, training_args: SFTConfig, model_args: ModelArguments) -> None:
    training.setup(training_args)

    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed)
    if training_args.eval_strategy != "no" and "test" not in dataset:
        raise ConfigError(
            f"eval_strategy: '{training_args.eval_strategy.value}' needs an eval split, and the data has none "
            f"(set dataset_test_split, dataset_test_split_size, or eval_strategy: \"no\")"
        )
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    model = models.load_model(model_args, tokenizer, trust_remote_code=training_args.trust_remote_code)

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test") if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=models.peft_config(model_args),
    )
    metrics = training.train_and_evaluate(trainer, training_args)

    training.save_stage(
        trainer,
        training_args,
        stage="sft",
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
