"""Pretrain a Llama-style model from scratch on a text dataset with transformers' Trainer.

    accelerate launch scripts/pretrain.py --config recipes/toy/pretrain.yaml
    accelerate launch scripts/pretrain.py --config recipes/llama-125m/pretrain/config.yaml
    accelerate launch --config_file accelerate_configs/fsdp2.yaml scripts/pretrain.py \
        --config recipes/llama-1b/pretrain/config_fsdp2.yaml

Documents are packed into fixed blocks without attention across documents (see llm_recipes.pretrain);
logs carry loss, learning rate, tokens seen, tokens/s and MFU; a killed run resumes from its last checkpoint.
"""

import logging

from llm_recipes import data, training
from llm_recipes.data_config import DataArguments
from llm_recipes.parser import run_cli
from llm_recipes.pretrain import build_trainer, initial_evaluation, perplexity
from llm_recipes.pretrain_config import PretrainArguments

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, PretrainArguments)


def main(data_args: DataArguments, training_args: PretrainArguments) -> None:
    training.setup(training_args)
    trainer = build_trainer(data_args, training_args)
    resume = training.checkpoint_to_resume(training_args)
    loss_before = initial_evaluation(trainer, training_args.output_dir, resuming=resume is not None)

    metrics = training.train_and_evaluate(trainer, training_args)

    state = trainer.state
    tokens_seen = state.global_step * trainer.tokens_per_step
    loss_after = metrics.get("eval_loss")
    train_logs = [entry for entry in state.log_history if "loss" in entry]
    summary = {
        "tokens_seen": tokens_seen,
        "steps": state.global_step,
        "compute_flops": float(tokens_seen * trainer.flops_per_token),
        "flops_per_token": trainer.flops_per_token,
        "parameters": trainer.model.num_parameters(),
        "final_train_loss": train_logs[-1]["loss"] if train_logs else None,
        "eval_loss_before": loss_before,
        "eval_perplexity_before": perplexity(loss_before),
        "eval_loss_after": loss_after,
        "eval_perplexity_after": perplexity(loss_after),
        "mfu_last": train_logs[-1].get("mfu") if train_logs else None,
        "tokens_per_sec_last": train_logs[-1].get("tokens_per_sec") if train_logs else None,
        "peak_flops": trainer.peak_flops,
        "peak_flops_source": trainer.peak_source,
        "attention": trainer.model.config._attn_implementation,
        "block_size": training_args.block_size,
    }
    if loss_before is not None and loss_after is not None:
        logger.info("validation loss before pretraining %.4f (perplexity %.1f) -> after %.4f (perplexity %.2f)",
                    loss_before, perplexity(loss_before), loss_after, perplexity(loss_after))
    logger.info("pretraining: %d steps, %.3g tokens, %.3g FLOPs", state.global_step, tokens_seen,
                summary["compute_flops"])
    trainer.save_state()  # trainer_state.json with the whole log history, beside the model
    training.save_stage(
        trainer,
        training_args,
        stage="pretrain",
        base_model=training_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics=summary,
        description=f"Pretrained from scratch with the llm-recipes `pretrain` stage on {tokens_seen:.3g} tokens "
        f"({summary['compute_flops']:.3g} FLOPs, block size {training_args.block_size}).",
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
