"""What the alignment stages (reward, DPO, PPO, GRPO, RLOO) share: starting from an earlier stage's output
that may be a LoRA adapter folder (with its base resolved correctly), loading and checking a reward model,
and turning `reward_funcs` entries into callables or reward models.

The classic chaining bug (a user's complaint about peers): an SFT-LoRA adapter whose `adapter_config.json`
names a base path that does not exist where the next stage runs, or a DPO reference that is the base model
instead of the SFT policy. Here the base is resolved (as written, relative to the adapter folder, or given),
a missing one is a one-line error, and the reference is always the starting policy.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from trl import DPOTrainer

from llm_recipes import data, models, training
from llm_recipes.errors import ConfigError
from llm_recipes.reward import wilson_interval

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def adapter_base(adapter_dir: str, override: str | None = None) -> str:
    """The base model of a LoRA adapter folder: `override`, else the adapter's `base_model_name_or_path` as
    written (a local folder or a Hub id) or relative to the adapter folder. A local path that is not there is
    an error naming the adapter, the path and the key to set."""
    config = json.loads(Path(adapter_dir, ADAPTER_CONFIG).read_text())
    named = override or config.get("base_model_name_or_path")
    if not named:
        raise ConfigError(
            f"{adapter_dir}: adapter without its base ({ADAPTER_CONFIG} names no base_model_name_or_path); "
            "set base_model_name_or_path"
        )
    for candidate in (named, os.path.join(adapter_dir, named)):
        if os.path.isdir(candidate) and os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    looks_local = os.path.isabs(named) or named.startswith(".") or named.count("/") != 1 or os.path.exists(named)
    if looks_local:
        where = "base_model_name_or_path" if override else f"{ADAPTER_CONFIG}: base_model_name_or_path"
        raise ConfigError(
            f"{adapter_dir}: adapter without its base: '{named}' ({where}) is not a model folder here; "
            "set base_model_name_or_path to the base model the adapter was trained on"
        )
    return named  # a Hub id


def _with_model(model_args, path: str):
    return dataclasses.replace(model_args, model_name_or_path=path)


def _merged_folder(model_args, adapter_dir: str, base: str, tokenizer, trust_remote_code: bool) -> str:
    """Merge an adapter into its (full precision) base, saved to a temporary folder removed at exit."""
    full_args = dataclasses.replace(model_args, model_name_or_path=base, load_in_4bit=False, load_in_8bit=False)
    base_model = models.load_model(full_args, tokenizer, trust_remote_code=trust_remote_code)
    merged = models.load_adapter(base_model, adapter_dir).merge_and_unload()
    folder = tempfile.mkdtemp(prefix="llm-recipes-merged-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    merged.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    logger.info("merged adapter %s into its base %s (temporary folder %s)", adapter_dir, base, folder)
    return folder


def start_model_args(model_args, tokenizer, trust_remote_code: bool = False):
    """ModelArguments whose `model_name_or_path` is a full model: an adapter folder is merged into its base
    first (for stages that change the head or add a new adapter: reward, PPO)."""
    path = model_args.model_name_or_path
    if not is_adapter_folder(path):
        return model_args
    base = adapter_base(path, getattr(model_args, "base_model_name_or_path", None))
    return _with_model(model_args, _merged_folder(model_args, path, base, tokenizer, trust_remote_code))


def load_policy(model_args, tokenizer, trust_remote_code: bool = False):
    """The policy to align. Returns (model, peft_config, started_from_adapter):

    - a full model folder/id: the model, and a LoRA config when `use_peft` (reference: adapter disabled);
    - an adapter folder with `use_peft`: the base (quantized for QLoRA) with that adapter, trainable, and no
      new LoRA config: training continues the SFT adapter and the reference is a frozen copy of it;
    - an adapter folder without `use_peft`: the adapter merged into its base, trained in full.
    """
    path = model_args.model_name_or_path
    if not is_adapter_folder(path):
        return models.load_model(model_args, tokenizer, trust_remote_code=trust_remote_code), models.peft_config(model_args), False
    base = adapter_base(path, getattr(model_args, "base_model_name_or_path", None))
    if model_args.use_peft:
        base_model = models.load_model(_with_model(model_args, base), tokenizer, trust_remote_code=trust_remote_code)
        if getattr(base_model, "is_loaded_in_4bit", False) or getattr(base_model, "is_loaded_in_8bit", False):
            from peft import prepare_model_for_kbit_training

            base_model = prepare_model_for_kbit_training(base_model, use_gradient_checkpointing=False)
        model = models.load_adapter(base_model, path, is_trainable=True)
        logger.info("continuing adapter %s on base %s", path, base)
        return model, None, True
    merged = _merged_folder(model_args, path, base, tokenizer, trust_remote_code)
    return models.load_model(_with_model(model_args, merged), tokenizer, trust_remote_code=trust_remote_code), None, True


def load_causal_lm(path: str, base_override: str | None = None, key: str = "model_name_or_path", **kwargs):
    """A causal LM for inference from a full folder/id or an adapter folder (merged into its base)."""
    if not is_adapter_folder(path):
        return models.load_pretrained(AutoModelForCausalLM, path, key, **kwargs)
    base = models.load_pretrained(AutoModelForCausalLM, adapter_base(path, base_override), f"{key} (adapter base)", **kwargs)
    tokenizer = models.load_tokenizer_from(path, key)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    return models.load_adapter(base, path, key).merge_and_unload()


DEFAULT_HELD_OUT = 0.05  # share of the pairs a preference stage holds out when the data has no test split


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


# ----------------------------------------------------------------------------------------------- rewards
def check_reward_model(path: str, policy_tokenizer: PreTrainedTokenizerBase | None = None, allow_mismatch: bool = False,
                       key: str = "reward_model_path") -> PreTrainedTokenizerBase:
    """Check that `path` is a reward model (a sequence classifier with one output) whose tokenizer matches the
    policy's; returns its tokenizer. Errors name the key, the path and what is wrong."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: '{path}' is not a model folder or Hub id ({str(err).splitlines()[0]})") from None
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs) or getattr(config, "num_labels", 1) != 1:
        raise ConfigError(
            f"{key}: '{path}' is not a reward model (architectures {archs}, {getattr(config, 'num_labels', '?')} "
            "labels; expected a sequence classifier with 1 output, as scripts/reward.py writes)"
        )
    try:
        reward_tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: '{path}' has no tokenizer ({str(err).splitlines()[0]})") from None
    if policy_tokenizer is not None and reward_tokenizer.get_vocab() != policy_tokenizer.get_vocab() and not allow_mismatch:
        ours, theirs = policy_tokenizer.get_vocab(), reward_tokenizer.get_vocab()
        example = next(iter(sorted(set(ours).symmetric_difference(theirs))), None)
        raise ConfigError(
            f"{key}: the tokenizer of '{path}' does not match the policy's ({len(theirs)} vs {len(ours)} tokens, "
            f"e.g. {example!r} in only one); train the reward model from the same base, or set "
            "allow_reward_tokenizer_mismatch: true to re-tokenize texts for it"
        )
    if reward_tokenizer.pad_token is None:
        reward_tokenizer.pad_token = reward_tokenizer.eos_token
    return reward_tokenizer


def resolve_reward_funcs(entries: list[str] | None, reward_model_path: str | None, policy_tokenizer,
                         allow_mismatch: bool = False) -> tuple[list, list]:
    """`reward_funcs` entries (dotted paths to callables, or reward model folders/ids) plus `reward_model_path`
    -> (reward functions for TRL, their processing classes; None for callables)."""
    funcs, tokenizers = [], []
    for i, entry in enumerate([*(entries or []), *([reward_model_path] if reward_model_path else [])]):
        key = f"reward_funcs[{i}]" if i < len(entries or []) else "reward_model_path"
        if os.path.isdir(entry) or (entry.count("/") == 1 and not _is_dotted_callable(entry)):
            tokenizers.append(check_reward_model(entry, policy_tokenizer, allow_mismatch, key))
            funcs.append(entry)
        else:
            funcs.append(import_callable(entry, key))
            tokenizers.append(None)
    if not funcs:
        raise ConfigError("no reward: set reward_model_path and/or reward_funcs")
    return funcs, tokenizers


def _is_dotted_callable(entry: str) -> bool:
    return "." in entry and "/" not in entry and ":" not in entry


def import_callable(dotted: str, key: str = "reward_funcs"):
    """'package.module.function' (or 'package.module:function') -> the function."""
    module_name, sep, name = dotted.replace(":", ".").rpartition(".")
    if not sep or not module_name:
        raise ConfigError(f"{key}: '{dotted}' is neither a reward model folder nor a dotted path 'module.function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import module '{module_name}' ({err})") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ConfigError(f"{key}: '{module_name}' has no callable '{name}'")
    return func


def train_online_rl(trainer_class: type, stage: str, data_args, training_args, model_args, reward_args) -> None:
    """GRPO and RLOO differ only in TRL's trainer class: prompts -> rewards (reward model and/or Python
    functions) -> policy, saved in the Hub format with its card. Starting from an SFT adapter folder, the
    adapter is merged into its base first, so the KL reference (the model with the new adapter disabled) is
    the SFT policy and not the bare base; the result is then saved merged, since its base exists only here."""
    training.setup(training_args)

    with training.main_process_loads_data_first(training_args):
        dataset = data.load_stage_data(data_args, seed=training_args.seed, kind="prompt")
    tokenizer = models.load_tokenizer(model_args, training_args.trust_remote_code)
    reward_funcs, reward_tokenizers = resolve_reward_funcs(
        reward_args.reward_funcs, reward_args.reward_model_path, tokenizer, reward_args.allow_reward_tokenizer_mismatch)
    from_adapter = is_adapter_folder(model_args.model_name_or_path)
    start_args = start_model_args(model_args, tokenizer, training_args.trust_remote_code)
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
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        logger.info("started from an adapter: saving the merged policy")

    rewards = [*(reward_args.reward_funcs or []), reward_args.reward_model_path]
    training.save_stage(
        trainer,
        training_args,
        stage=stage,
        base_model=model_args.model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics={"rewards": ", ".join(str(r) for r in rewards if r)},
    )


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
