"""What every training stage does around its TRL trainer: logging, CPU threads, resume, save + card."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import datasets
import torch
import transformers
from transformers import Trainer, TrainerState

from llm_recipes import integrity
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
    if not torch.cuda.is_available():  # (the CPU settings are applied and logged by llm_recipes.parser)
        torch.set_num_threads(cpu_threads())
    logger.info(
        "stage output: %s; world size %d (%s), process rank %d",
        training_args.output_dir, training_args.world_size, training_args.parallel_mode.value, training_args.process_index,
    )
    check_output_dir(training_args)


def check_output_dir(training_args) -> None:
    """Every training stage, before it loads anything: lock output_dir (main process), finish a final save a
    kill interrupted, refuse the finished output or the checkpoints of another recipe, and end here (exit 0)
    when output_dir already holds this recipe's finished output: a finished stage is never trained again."""
    main = training_args.process_index == 0
    with training_args.main_process_first(local=False, desc="checking the output folder"):
        complete = integrity.begin_training_stage(training_args.output_dir, main_process=main,
                                                  fallback_parsed=(training_args,))
    if complete:
        logger.info("%s: output complete with the same recipe; skipped (--force redoes it)", training_args.output_dir)
        raise SystemExit(0)


@contextlib.contextmanager
def main_process_loads_data_first(training_args) -> Iterator[None]:
    """Load (and cache) the stage's data on each machine's main process first; the other processes then reuse
    its datasets cache instead of building the same cache files at the same time."""
    with training_args.main_process_first(local=True, desc="loading data"):
        yield


def cpu_threads() -> int:
    """Torch threads on CPU: OMP_NUM_THREADS when set, else half the cores (a shared 2-core machine
    oversubscribes OpenMP with 2 threads and was measured 10-100x slower)."""
    return int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 2) // 2))


TRAINER_STATE = "trainer_state.json"  # Trainer writes it last into a checkpoint


def last_complete_checkpoint(output_dir: str) -> str | None:
    """transformers' `get_last_checkpoint` of output_dir, skipping one a kill cut off while saving."""
    return integrity.last_complete_checkpoint(output_dir, TRAINER_STATE)


def checkpoint_to_resume(training_args) -> str | None:
    """The checkpoint to continue from: the one asked for, else the last one in output_dir (a killed run
    continues where it stopped rather than starting again). Its files are checked whole first: a corrupted one
    is a one-line error naming it."""
    checkpoint = training_args.resume_from_checkpoint or last_complete_checkpoint(training_args.output_dir)
    if checkpoint is not None:
        integrity.check_checkpoint_files(checkpoint)
        if not training_args.resume_from_checkpoint:
            logger.info("resuming from checkpoint %s", checkpoint)
    return checkpoint


def finished_training(checkpoint: str | None) -> TrainerState | None:
    """The checkpoint's state when it is the end of training (its step reached its max_steps)."""
    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE))
    return state if state.max_steps and state.global_step >= state.max_steps else None


def metrics_from_history(state: TrainerState) -> dict[str, Any]:
    """The run's train metrics from a checkpoint's log history: train_loss is the mean loss over every step
    (each logged loss is the mean since the previous log), only when the logs cover every step."""
    metrics: dict[str, Any] = {"epoch": state.epoch, "total_flos": state.total_flos}
    logged = [(entry["step"], entry["loss"]) for entry in state.log_history if "loss" in entry and "step" in entry]
    if logged and logged[-1][0] == state.global_step:
        total, previous = 0.0, 0
        for step, loss in logged:
            total += loss * (step - previous)
            previous = step
        metrics["train_loss"] = total / state.global_step
    else:
        logger.warning("the logged losses do not cover every step; train_loss is not reported")
    return metrics


def recipe_path(argv: list[str] | None = None) -> str | None:
    argv = sys.argv if argv is None else argv
    return argv[argv.index("--config") + 1] if "--config" in argv else None


def train_and_evaluate(trainer: Trainer, training_args) -> dict[str, Any]:
    """Train (resuming when a checkpoint exists), then evaluate on the eval split if there is one. A checkpoint
    that is already the end of training is loaded, not trained on: Trainer would train one more step from it
    (or none, reporting train_loss 0)."""
    checkpoint = checkpoint_to_resume(training_args)
    if trainer.accelerator.is_main_process:
        integrity.record_run(training_args.output_dir)
    done = finished_training(checkpoint)
    if done is not None and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        logger.info("checkpoint %s ends the training (step %d of %d): saving it without another step",
                    checkpoint, done.global_step, done.max_steps)
        trainer._load_from_checkpoint(checkpoint)  # transformers' loader: full weights, sharded, or an adapter
        trainer.state = done
        metrics = metrics_from_history(done)
    else:
        metrics = dict(trainer.train(resume_from_checkpoint=checkpoint).metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def staged_final_folder(output_dir: str, accelerator) -> str:
    """The empty staging folder a stage writes its final files into (every process gets the same path), for
    `publish_final_folder` to move onto output_dir: see `llm_recipes.integrity`."""
    if accelerator.is_main_process:
        integrity.clear_staging(output_dir)
    accelerator.wait_for_everyone()
    return str(integrity.staging_dir(output_dir))


def publish_final_folder(output_dir: str) -> None:
    """Main process, after the marker is in the staging folder: it becomes output_dir, checkpoints included."""
    integrity.publish(output_dir)


def push_stage_folder(folder: str, training_args, commit_message: str) -> None:
    """Upload a finished stage folder to `hub_model_id` (the token comes from the environment: HF_TOKEN)."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(folder))
    repo_id = api.create_repo(repo_id, private=getattr(training_args, "hub_private_repo", None), exist_ok=True).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                      ignore_patterns=["_*", "checkpoint-*", ".*"], revision=getattr(training_args, "hub_revision", None))
    logger.info("pushed %s to %s", folder, repo_id)


def library_model_card(trainer: Trainer, folder: str, tags: list[str]) -> str | None:
    """The card the trainer's own `create_model_card` writes (transformers' Trainer, or TRL's override): training
    procedure, hyperparameters, framework versions, citations; `hub.write_model_card` extends it."""
    final_dir, hub_model_id = trainer.args.output_dir, getattr(trainer, "hub_model_id", None)
    trainer.args.output_dir = folder  # create_model_card writes README.md into args.output_dir: the staged folder
    # TRL's quick start loads `hub_model_id`, set only when pushing ('model="None"' otherwise): the pushed repo or
    # the published folder
    trainer.hub_model_id = hub_model_id or trainer.args.hub_model_id or final_dir
    try:
        trainer.create_model_card(model_name=os.path.basename(os.path.abspath(final_dir)), tags=tags)
    finally:
        trainer.args.output_dir, trainer.hub_model_id = final_dir, hub_model_id
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read()


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
    `extra_metrics` go into the card and the marker as they are. All of it is written to a staging folder
    and then moved onto output_dir (`integrity.publish`): a reader sees the final files together, marker
    included, or none."""
    final_dir = training_args.output_dir
    output_dir = staged_final_folder(final_dir, trainer.accelerator)
    # _internal_call: with push_to_hub, Trainer.save_model would push at once, saving the model into output_dir
    # again before the marker exists; the finished folder is pushed below
    trainer.save_model(output_dir, _internal_call=True)
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
            library_card=library_model_card(trainer, output_dir, ["llm-recipes", stage, *(tags or [])]),
        )
        mark_complete(output_dir, stage, base_model=base_model, datasets=datasets_used, metrics=card_metrics)
        publish_final_folder(final_dir)
        logger.info("%s done: model saved to %s", stage, final_dir)
    trainer.accelerator.wait_for_everyone()
    if training_args.push_to_hub and trainer.accelerator.is_main_process:
        # The published folder as it is. Trainer.push_to_hub would first save the model again into the finished
        # folder (a reader could find it half-written, marker present) and write TRL's generic card ("fine-tuned
        # version of [None]") over the project's; its ignore patterns are kept (no checkpoints, no private files).
        push_stage_folder(final_dir, training_args, commit_message=f"llm-recipes {stage}")
    if trainer.accelerator.num_processes > 1:
        # Free DDP's Reducer (it holds the gloo/NCCL group) while every process is still here. Freed only when
        # `main` returned, after the group was destroyed, its ProcessGroupGloo destructor joined a worker thread
        # that never returned: a 2-process DPO run on CPU hung at exit (2 of ~9 runs; py-spy: ~ProcessGroupGloo
        # <- ~Reducer <- run_cli).
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
        trainer.accelerator.wait_for_everyone()
    trainer.end()
