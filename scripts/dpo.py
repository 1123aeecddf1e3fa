"""Direct preference optimisation with TRL's DPOTrainer: full, LoRA or QLoRA; any loss type TRL offers
(`loss_type: [sigmoid]`, ipo, apo_zero, ...); precomputed reference log-probs when asked. Data without a
held-out split gets one (`dataset_test_split_size`, default 5% of train) for the eval loss and reward accuracy.

It starts from an SFT output folder, a merged model, or an SFT adapter folder (its base resolved: see
`llm_recipes.alignment`). The reference is always the starting policy: with LoRA, the model with the new
adapter disabled (no second copy); continuing an SFT adapter, a frozen copy of that adapter; full
fine-tuning, a copy of the starting weights (or none, with `precompute_ref_log_probs`).

    accelerate launch scripts/dpo.py --config recipes/toy/dpo.yaml
"""

import logging


from llm_recipes import alignment, data, models, training
from llm_recipes.alignment_config import DPOArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, DPOArguments, AlignmentModelArguments)


def main(data_args: DataArguments, training_args: DPOArguments, model_args: AlignmentModelArguments) -> None:
    training.setup(training_args)

    dataset = alignment.load_preference_data(data_args, training_args, "no eval loss or reward accuracy")
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    model, peft_config, from_adapter = alignment.load_policy(model_args, tokenizer, training_args.trust_remote_code)
    ref_model = alignment.frozen_reference(model, model_args, training_args, from_adapter)

    trainer = alignment.PairWeightedDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test") if training_args.eval_strategy != "no" or "test" in dataset else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    alignment.upcast_trainable(trainer.model, training_args)
    metrics = training.train_and_evaluate(trainer, training_args)
    alignment.drop_reference_adapter(trainer.model)

    training.save_stage(
        trainer,
        training_args,
        stage="dpo",
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics={"loss_type": ",".join(training_args.loss_type), "beta": training_args.beta},
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
