"""What the alignment stages (reward, DPO, PPO, GRPO, RLOO, ORPO, SimPO) share: starting from an earlier stage's
output that may be a LoRA adapter folder (with its base resolved correctly), GRPO/RLOO on TRL's trainers (rewards:
llm_recipes.rewards), and the reference-free preference stages (ORPO, SimPO).

The classic chaining bug (a user's complaint about peers): an SFT-LoRA adapter whose `adapter_config.json`
names a base path that does not exist where the next stage runs, or a DPO reference that is the base model
instead of the SFT policy. Here the base is resolved (as written, relative to the adapter folder, or given),
a missing one is a one-line error, and the reference is always the starting policy.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from datasets import DatasetDict
from trl import DPOTrainer

from llm_recipes import data, models, rewards, training
from llm_recipes.reward import wilson_interval

logger = logging.getLogger(__name__)


def start_model_args(model_args, tokenizer=None, trust_remote_code: bool = False):
    """ModelArguments whose `model_name_or_path` is a full model: an adapter is merged into the base it was
    trained on first (models.merge_adapter; for stages that change the head or add a new adapter: reward, GRPO,
    RLOO), into a temporary folder removed at exit."""
    source = models.resolve_model(model_args.model_name_or_path, "model_name_or_path",
                                  getattr(model_args, "base_model_name_or_path", None))
    if source.kind != "adapter":
        return model_args
    folder = models.merged_folder(source, dtype=models.resolve_dtype(model_args.dtype), tokenizer=tokenizer,
                                  trust_remote_code=trust_remote_code)
    return dataclasses.replace(model_args, model_name_or_path=folder)


def load_policy(model_args, tokenizer, trust_remote_code: bool = False):
    """The policy to align. Returns (model, peft_config, started_from_adapter):

    - a full model folder/id: the model, and a LoRA config when `use_peft` (reference: adapter disabled);
    - an adapter with `use_peft`: the base (quantized for QLoRA) with that adapter, trainable, and no new LoRA
      config: training continues the SFT adapter and the reference is a frozen copy of it;
    - an adapter without `use_peft`: the adapter merged into its base (models.merge_adapter), trained in full.
    """
    source = models.resolve_model(model_args.model_name_or_path, "model_name_or_path",
                                  getattr(model_args, "base_model_name_or_path", None))
    if source.kind != "adapter":
        return models.load_model(model_args, tokenizer, trust_remote_code=trust_remote_code), models.peft_config(model_args), False
    if not model_args.use_peft:
        merged_args = start_model_args(model_args, tokenizer, trust_remote_code)
        return models.load_model(merged_args, tokenizer, trust_remote_code=trust_remote_code), None, True
    base_args = dataclasses.replace(model_args, model_name_or_path=source.base)
    base_model = models.load_model(base_args, tokenizer, trust_remote_code=trust_remote_code)
    if getattr(base_model, "is_loaded_in_4bit", False) or getattr(base_model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        base_model = prepare_model_for_kbit_training(base_model, use_gradient_checkpointing=False)
    model = models.load_adapter(base_model, source.path, is_trainable=True)
    logger.info("continuing adapter %s on base %s", source.path, source.base)
    return model, None, True




def frozen_reference(model, model_args, training_args, from_adapter: bool):
    """The reference of a DPO or KTO stage started from an adapter merged into its base: a frozen copy of the
    merged policy (TRL would rebuild it from the config's path, i.e. the bare base); None otherwise (TRL's own)."""
    if from_adapter and not model_args.use_peft and not training_args.precompute_ref_log_probs:
        return copy.deepcopy(model).eval().requires_grad_(False)
    return None


def drop_reference_adapter(model) -> None:
    """TRL's frozen copy of a continued SFT adapter ("ref"): not part of the output."""
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")


DEFAULT_HELD_OUT = 0.05  # share of the pairs a preference stage holds out when the data has no test split


def load_preference_data(data_args, training_args, measures: str) -> DatasetDict:
    """The preference pairs of a reward or DPO stage, with their eval split (`ensure_eval_split`), loaded by the
    main process first."""
    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed, kind="preference")
        return ensure_eval_split(dataset, data_args, training_args.seed, measures)


def ensure_eval_split(dataset: DatasetDict, data_args, seed: int, measures: str) -> DatasetDict:
    """The eval split of a preference stage: the data's own held-out split; else `dataset_test_split_size` of the
    training pairs, by default DEFAULT_HELD_OUT (held out with `seed`, logged), so that the stage's figures are
    measured. `dataset_test_split_size: 0` holds out nothing, and the log says that `measures` will not be
    measured."""
    if "test" in dataset:
        return dataset
    size = data_args.dataset_test_split_size
    if size == 0:
        logger.warning("no eval split (the data has none and dataset_test_split_size is 0): %s will be measured", measures)
        return dataset
    source = ", ".join(data.dataset_sources(data_args))
    train, test = data.hold_out(dataset["train"], DEFAULT_HELD_OUT if size is None else size, seed, f"{source}: no held-out split")
    logger.info("eval split: the %d pairs held out (dataset_test_split_size: 0 trains on all pairs; then %s is measured)",
                len(test), measures)
    if data_args.eval_max_samples and len(test) > data_args.eval_max_samples:
        test = test.select(range(data_args.eval_max_samples))
        logger.info("eval split capped at %d pairs (eval_max_samples)", data_args.eval_max_samples)
    return DatasetDict({"train": train, "test": test})


def upcast_trainable(model, training_args) -> None:
    """TRL casts a quantized model's trainable (LoRA) weights to bf16; without bf16 autocast (a CPU) their
    inputs stay fp32 and the matmul fails: train them in fp32 there instead."""
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if quantized and not (training_args.bf16 or training_args.fp16):
        for param in model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()


def train_online_rl(trainer_class: type, stage: str, data_args, training_args, model_args, reward_args) -> None:
    """GRPO, RLOO and online DPO differ only in TRL's trainer class: prompts -> rewards (reward model and/or Python
    functions) -> policy, saved in the Hub format with its card. Starting from an SFT adapter folder, the
    adapter is merged into its base first, so the KL reference (the model with the new adapter disabled) is
    the SFT policy and not the bare base; the result is then saved merged, since its base exists only here."""
    training.setup(training_args)

    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed, kind="prompt")
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    reward_funcs, reward_tokenizers = rewards.resolve_reward_funcs(
        reward_args.reward_funcs, reward_args.reward_model_path, tokenizer, reward_args.allow_reward_tokenizer_mismatch)
    start_args = start_model_args(model_args, tokenizer, training_args.trust_remote_code)
    from_adapter = start_args is not model_args
    model = models.load_model(start_args, tokenizer, trust_remote_code=training_args.trust_remote_code)

    trainer = trainer_class(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test") if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        reward_processing_classes=reward_tokenizers,
        peft_config=models.peft_config(model_args),
    )
    upcast_trainable(trainer.model, training_args)
    metrics = training.train_and_evaluate(trainer, training_args)
    if from_adapter and model_args.use_peft:
        trained = trainer.accelerator.unwrap_model(trainer.model)
        trainer.model = models.merge_trained_adapter(trained, start_args, tokenizer, dtype=trained.dtype,
                                                     trust_remote_code=training_args.trust_remote_code)
        logger.info("started from an adapter: saving the merged policy")

    sources = [*(reward_args.reward_funcs or []), reward_args.reward_model_path]
    training.save_stage(
        trainer,
        training_args,
        stage=stage,
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics={"rewards": ", ".join(str(r) for r in sources if r)},
    )


def train_reference_free(trainer_class: type, stage: str, data_args, training_args, model_args,
                         extra_metrics: dict) -> None:
    """ORPO and SimPO differ only in TRL's trainer class and loss: preference pairs -> policy, with no reference
    model (the policy alone scores both replies), saved in the Hub format with its card. The start may be the SFT
    model, the pretrained model (the tokenizer needs a chat template) or an adapter folder (`load_policy`)."""
    training.setup(training_args)

    dataset = load_preference_data(data_args, training_args, "no eval loss or reward accuracy")
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    model, peft_config, _ = load_policy(model_args, tokenizer, training_args.trust_remote_code)
    trainer = pair_weighted(trainer_class)(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset.get("test") if training_args.eval_strategy != "no" or "test" in dataset else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    upcast_trainable(trainer.model, training_args)
    metrics = training.train_and_evaluate(trainer, training_args)

    training.save_stage(
        trainer,
        training_args,
        stage=stage,
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics=extra_metrics,
    )


def pair_weighted(trainer_class: type) -> type:
    """A TRL pair trainer (experimental ORPO/CPO) whose eval figures are means over all eval pairs, with the count
    scored and a 95% interval for the reward accuracy. Those trainers average per-batch means (35 pairs in batches
    of 32 and 3: each of the 3 weighed ten times more), as DPOTrainer does (PairWeightedDPOTrainer)."""

    class PairWeighted(trainer_class):
        def get_batch_loss_metrics(self, model, batch, train_eval="train"):
            loss, metrics = super().get_batch_loss_metrics(model, batch, train_eval)
            if train_eval == "eval":  # the pairs of this batch over every process, as TRL gathered its figures
                ones = torch.ones(batch["chosen_labels"].shape[0], device=self.accelerator.device)
                metrics["pairs"] = int(self.accelerator.gather_for_metrics(ones).numel())
            return loss, metrics

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            stored = self._stored_metrics["eval"]
            if "loss" not in logs and stored.get("pairs"):  # an eval log (TRL's test)
                weights = stored.pop("pairs")
                total = sum(weights)
                for key, values in stored.items():
                    if len(values) == len(weights):
                        stored[key] = [sum(v * w for v, w in zip(values, weights)) / total]
                logs["eval_pairs_scored"] = total
                correct = round(stored["eval_rewards/accuracies"][0] * total)
                low, high = wilson_interval(correct, total)
                logs["eval_rewards/accuracies_ci_low"], logs["eval_rewards/accuracies_ci_high"] = low, high
            super().log(logs, start_time)

    PairWeighted.__name__ = PairWeighted.__qualname__ = f"PairWeighted{trainer_class.__name__}"
    return PairWeighted


class PairWeightedDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with eval figures that are means over all eval pairs, the count scored and a 95% interval
    for the reward accuracy. TRL averages per-batch means (35 pairs in batches of 32 and 3: each of the 3 weighed
    ten times more), so its figure changed with the eval batch size. Training and its logs are TRL's."""

    PER_PAIR = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._eval_batch_pairs: list[int] = []

    def _compute_loss(self, model, inputs, return_outputs):
        outputs = super()._compute_loss(model, inputs, return_outputs)
        if not self.model.training:  # the batch is [chosen..., rejected...]; TRL gathered every process's pairs
            pairs = torch.tensor(inputs["input_ids"].shape[0] // 2, device=self.accelerator.device)
            self._eval_batch_pairs.append(int(self.accelerator.gather(pairs).sum()))
        return outputs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        weights, self._eval_batch_pairs = self._eval_batch_pairs, []
        stored = self._metrics["eval"]
        if not self.model.training and weights and len(stored.get("rewards/accuracies", [])) == len(weights):
            total = sum(weights)
            for key in self.PER_PAIR:
                if len(stored.get(key, [])) == len(weights):
                    stored[key] = [sum(v * w for v, w in zip(stored[key], weights)) / total]
            correct = round(stored["rewards/accuracies"][0] * total)
            logs["eval_pairs_scored"] = total
            logs["eval_rewards/accuracies_ci_low"], logs["eval_rewards/accuracies_ci_high"] = wilson_interval(correct, total)
        super().log(logs, start_time)
