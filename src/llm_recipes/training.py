"""What every training stage does around its TRL trainer: logging, CPU-safe defaults, resume, save + card."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import datasets
import torch
import transformers
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from llm_recipes.hub import mark_complete, write_model_card

logger = logging.getLogger("llm_recipes")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)]
    )
    for name in ("llm_recipes", "__main__"):
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(max(level, logging.WARNING))
    transformers.utils.logging.set_verbosity(max(level, logging.WARNING))


def setup(training_args) -> None:
    """Logging at the trainer's level, and defaults that are safe and fast where there is no GPU."""
    level = training_args.get_process_log_level()
    if training_args.log_level == "passive" and training_args.should_log:
        level = min(level, logging.INFO)  # the stage's own progress lines show by default on the main process
    setup_logging(level)
    # Seeded before the stage loads its model (as transformers' examples do): Trainer seeds only in its __init__,
    # after the reward stage had drawn its new score head from the global generator, seeded at random by then
    # (torch.initial_seed() differed per process). The head differed from run to run under one seed, and between
    # processes (DDP keeps rank 0's): a 2-process reward run's loss was 4e-3 off the 1-process one at step 1.
    transformers.set_seed(training_args.seed)
    if not torch.cuda.is_available():
        apply_cpu_defaults(training_args)
    logger.info(
        "stage output: %s; world size %d (%s), process rank %d",
        training_args.output_dir, training_args.world_size, training_args.parallel_mode.value, training_args.process_index,
    )


@contextlib.contextmanager
def main_process_loads_data_first(training_args) -> Iterator[None]:
    """Load (and cache) the stage's data on each machine's main process first; the other processes then reuse
    its datasets cache instead of building the same cache files at the same time."""
    with training_args.main_process_first(local=True, desc="loading data"):
        yield


def cpu_threads() -> int:
    """Torch threads on CPU: OMP_NUM_THREADS when set, else half the cores (a shared 2-core machine
    oversubscribes OpenMP with 2 threads and runs 10-100x slower; FACTS.md)."""
    return int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 2) // 2))


def apply_cpu_defaults(training_args) -> None:
    """fp32, no gradient checkpointing, no pinned memory: bf16 autocast and checkpointing only slow a CPU."""
    torch.set_num_threads(cpu_threads())
    changed = []
    for name, value in (("use_cpu", True), ("bf16", False), ("fp16", False), ("gradient_checkpointing", False), ("dataloader_pin_memory", False)):
        if hasattr(training_args, name) and getattr(training_args, name) != value:
            setattr(training_args, name, value)
            changed.append(f"{name}={value}")
    if changed:
        logger.info("no GPU: set %s", ", ".join(changed))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in output_dir that was saved to the end. Trainer writes trainer_state.json
    last, so a folder without a readable one was cut off while saving (a killed run) and is skipped. Nothing is
    moved or deleted: every process of a distributed run calls this at once, and the folder is rewritten when
    training reaches that step again."""
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, path in sorted(steps, reverse=True):
        try:
            with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as fh:
                json.load(fh)
            return path
        except (OSError, ValueError):
            logger.warning("checkpoint %s is incomplete (killed while saving?); skipped", path)
    return None


def checkpoint_to_resume(training_args) -> str | None:
    """The checkpoint to continue from: the one asked for, else the last one in output_dir (a killed run
    continues where it stopped rather than starting again)."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    last = last_complete_checkpoint(training_args.output_dir)
    if last is not None:
        logger.info("resuming from checkpoint %s", last)
    return last


def recipe_path(argv: list[str] | None = None) -> str | None:
    argv = sys.argv if argv is None else argv
    return argv[argv.index("--config") + 1] if "--config" in argv else None


def train_and_evaluate(trainer: Trainer, training_args) -> dict[str, Any]:
    """Train (resuming when a checkpoint exists), then evaluate on the eval split if there is one."""
    result = trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def save_stage(
    trainer: Trainer,
    training_args,
    *,
    stage: str,
    base_model: str | None,
    datasets_used: list[str],
    metrics: dict[str, Any],
    tags: list[str] | None = None,
    extra_metrics: dict[str, Any] | None = None,
    description: str = "",
) -> None:
    """Save model (or adapter) and tokenizer in the Hub format, the card, the completion marker; push.
    `extra_metrics` go into the card and the marker as they are."""
    output_dir = training_args.output_dir
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(output_dir)
        keep = ("train_loss", "eval_loss", "train_runtime", "train_samples_per_second", "epoch")
        card_metrics = {k: v for k, v in metrics.items() if k in keep or k.startswith("eval_")}
        card_metrics.update(extra_metrics or {})
        write_model_card(
            output_dir,
            stage=stage,
            base_model=base_model,
            datasets=datasets_used,
            metrics=card_metrics,
            recipe_path=recipe_path(),
            tags=tags,
            description=description,
        )
        mark_complete(output_dir, stage, base_model=base_model, datasets=datasets_used, metrics=card_metrics)
        logger.info("%s done: model saved to %s", stage, output_dir)
    trainer.accelerator.wait_for_everyone()
    if training_args.push_to_hub:  # Trainer's push skips checkpoint-* folders
        trainer.push_to_hub(commit_message=f"llm-recipes {stage}")
    if trainer.accelerator.num_processes > 1:
        # Free DDP's Reducer (it holds the gloo/NCCL group) while every process is still here. Freed only when
        # `main` returned, after the group was destroyed, its ProcessGroupGloo destructor joined a worker thread
        # that never returned: a 2-process DPO run on CPU hung at exit (2 of ~9 runs; py-spy: ~ProcessGroupGloo
        # <- ~Reducer <- run_cli).
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
        trainer.accelerator.wait_for_everyone()
    trainer.end()
