"""KTO (Kahneman-Tversky optimisation) with TRL's KTOTrainer: full, LoRA or QLoRA, on unpaired examples (a
prompt, one completion and whether it is desirable), or on preference pairs, each split into one desirable
(chosen) and one undesirable (rejected) example. `desirable_weight`/`undesirable_weight` balance the two; the
counts and their weighted ratio are logged, with a warning outside the paper's advised [1, 4/3]. Data without a
held-out split gets one (`dataset_test_split_size`, default 5% of train) for the eval loss and KTO rewards.

It starts from an SFT output folder, a merged model, or an SFT adapter folder, and the reference is the starting
policy, as in scripts/dpo.py (`llm_recipes.alignment.load_policy`).

    accelerate launch scripts/kto.py --config recipes/toy/kto.yaml
"""

import logging

from trl import KTOTrainer

from llm_recipes import alignment, data, kto, models, training
from llm_recipes.alignment_config import KTOArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, KTOArguments, AlignmentModelArguments)


def main(data_args: DataArguments, training_args: KTOArguments, model_args: AlignmentModelArguments) -> None:
    training.setup(training_args)

    dataset = kto.load_unpaired_data(data_args, training_args)
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    model, peft_config, from_adapter = alignment.load_policy(model_args, tokenizer, training_args.trust_remote_code)
    ref_model = alignment.frozen_reference(model, model_args, training_args, from_adapter)

    trainer = KTOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test") if training_args.eval_strategy != "no" or "test" in dataset else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    balance = kto.desirable_balance(trainer.train_dataset["label"], training_args.desirable_weight,
                                    training_args.undesirable_weight)
    alignment.upcast_trainable(trainer.model, training_args)
    metrics = training.train_and_evaluate(trainer, training_args)
    alignment.drop_reference_adapter(trainer.model)

    training.save_stage(
        trainer,
        training_args,
        stage="kto",
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics={"loss_type": training_args.loss_type, "beta": training_args.beta,
                       "desirable_weight": training_args.desirable_weight,
                       "undesirable_weight": training_args.undesirable_weight, **balance},
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
