"""Stage configuration: TRL's config dataclasses, extended, parsed from a YAML recipe plus CLI overrides.

YAML keys are field names. A key that no dataclass knows, or a value of the wrong type, is an error that
names the key and the file, before any model or dataset is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import yaml
from trl import ModelConfig, TrlParser

from llm_recipes.errors import ConfigError, RecipeError


@dataclass
class DataArguments:
    """Where the stage's data comes from (see `llm_recipes.data`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "One dataset: a Hub id, a local save_to_disk or Hub-layout folder, or a data file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Config (subset) name of `dataset_name`."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split used for evaluation, if present."})
    dataset_mixture: dict | None = field(
        default=None,
        metadata={
            "help": "Weighted mixture: {datasets: [{id|path, config, split, columns, weight}], seed, "
            "test_split_size}. Replaces `dataset_name` when set."
        },
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "Row format of the data; 'auto' detects it from the columns.",
            "choices": ["auto", "messages", "alpaca", "sharegpt", "prompt_completion", "text"],
        },
    )
    on_bad_row: str = field(
        default="error",
        metadata={
            "help": "What to do with a malformed row (bad JSON line, missing field, empty text): 'error' stops with "
            "file and row; 'drop' drops it, counts it and logs the count.",
            "choices": ["error", "drop"],
        },
    )
    eval_max_samples: int | None = field(
        default=None, metadata={"help": "Cap on the evaluation rows used (keeps evaluation cheap)."}
    )


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ModelConfig with the project's defaults: automatic attention choice, LoRA on all linear layers."""

    attn_implementation: str | None = field(
        default="auto",
        metadata={
            "help": "'auto' picks flash_attention_2 when flash-attn is installed and CUDA is present, else sdpa; "
            "or name one (sdpa, eager, flash_attention_2)."
        },
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "LoRA target modules; 'all-linear' by default."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load, when it is not the model's own folder or id."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template: a built-in name (chatml) or an inline Jinja string. Unset keeps the tokenizer's "
            "own template, or chatml when it has none."
        },
    )


def _field_types(dataclass_types: Sequence[type]) -> dict[str, str]:
    return {f.name: dc.__name__ for dc in dataclass_types for f in fields(dc)}


def _check_value(parser: argparse.ArgumentParser, key: str, value: Any, path: str) -> None:
    """Check a YAML value the way argparse would check it on the command line."""
    action = next(a for a in parser._actions if a.dest == key)
    values = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
    for item in values:
        if item is None or action.type in (None, dict) or isinstance(item, dict):
            continue
        if isinstance(item, list):
            raise ConfigError(f"{path}: key '{key}' takes one value, got a list {item!r}")
        try:
            converted = action.type(str(item))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ConfigError(
                f"{path}: key '{key}' expects {getattr(action.type, '__name__', action.type)}, got {item!r}"
            ) from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(f"{path}: key '{key}' must be one of {list(action.choices)}, got {item!r}")


# Settings that only make sense on a GPU; where there is none they are turned off, so GPU recipes parse and
# run (slowly) on a CPU instead of failing in TrainingArguments (bf16 autocast and checkpointing slow a CPU).
CPU_OVERRIDES = {"bf16": False, "fp16": False, "use_cpu": True, "gradient_checkpointing": False}


def _load_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path) as fh:
        try:
            config = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of key: value")
    return config


def parse_config(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `--config recipe.yaml [--key value ...]` into one instance of each dataclass.

    As with TRL's TrlParser: the YAML gives defaults, CLI flags override them, an `env:` block sets
    environment variables. Unknown keys and badly typed values fail first, naming key and file.
    """
    args = list(sys.argv[1:] if args is None else args)
    parser = TrlParser(list(dataclass_types))
    known = _field_types(dataclass_types)
    config: dict = {}
    if "--config" in args:
        i = args.index("--config")
        path = args[i + 1] if i + 1 < len(args) else ""
        del args[i : i + 2]
        config = _load_yaml(path)
        env = config.pop("env", {}) or {}
        if not isinstance(env, dict):
            raise ConfigError(f"{path}: 'env' must be a mapping of variable: value")
        os.environ.update({k: str(v) for k, v in env.items()})
        for key, value in config.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key '{key}' (not a field of {', '.join(sorted(set(known.values())))})")
            _check_value(parser, key, value, path)
    flags = [a[2:].split("=")[0] for a in args if a.startswith("--")]
    unknown = [f for f in flags if f not in known and not (f.startswith("no_") and f[3:] in known) and f != "help"]
    if unknown:
        raise ConfigError(f"command line: unknown option '--{unknown[0]}'")
    parser.set_defaults_with_config(**config)
    if not torch.cuda.is_available():
        parser.set_defaults(**{k: v for k, v in CPU_OVERRIDES.items() if k in known})
    try:
        return tuple(parser.parse_args_into_dataclasses(args=args))
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def run_cli(main, dataclass_types: Sequence[type]) -> None:
    """Entry point for a stage script: parse, run, and turn a ConfigError into a one-line message and exit 2."""
    try:
        parsed = parse_config(dataclass_types)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        main(*parsed)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass
class ToyDataArguments:
    """The toy world generator (`scripts/toy_data.py`)."""

    output_dir: str = field(default="runs/toy/data", metadata={"help": "Folder that receives one dataset per subfolder."})
    seed: int = field(default=0, metadata={"help": "World seed: the same seed gives the same world."})
    n_entities: int = field(default=200, metadata={"help": "Number of invented countries."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "Share of countries kept out of SFT data."})


@dataclass
class TokenizerArguments:
    """Byte-level BPE training (`scripts/tokenizer.py`)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Text dataset: Hub id, local folder or file."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config (subset) name of the dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split the tokenizer is trained on."})
    dataset_test_split: str | None = field(
        default="validation", metadata={"help": "Held-out split for the bytes-per-token report (skipped if absent)."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    streaming: bool = field(default=False, metadata={"help": "Stream a large Hub dataset instead of downloading it."})
    max_texts: int | None = field(default=None, metadata={"help": "Train on at most this many texts."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})
    chat_template: str = field(default="chatml", metadata={"help": "Built-in template name or inline Jinja."})
    model_max_length: int = field(default=2048, metadata={"help": "Longest sequence the tokenizer reports."})
    output_dir: str = field(default="runs/toy/tokenizer", metadata={"help": "Where the tokenizer is saved."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the tokenizer to `hub_model_id`."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo for the push."})


@dataclass
class InitModelArguments:
    """A new, randomly initialised Llama-style model (`scripts/init_model.py`)."""

    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer the model is built for."})
    model_size: str | None = field(default="toy", metadata={"help": "Named size: tiny, toy, 20m, 125m, 350m, 1b, 8b."})
    num_layers: int | None = field(default=None, metadata={"help": "Override: decoder layers."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override: hidden size."})
    num_heads: int | None = field(default=None, metadata={"help": "Override: attention heads."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "Override: key/value heads (GQA)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Override: MLP width."})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "Override: context length."})
    seed: int = field(default=0, metadata={"help": "Initialisation seed."})
    output_dir: str = field(default="runs/toy/base", metadata={"help": "Where the model is saved."})


@dataclass
class ToyEvalArguments:
    """Held-out toy questions: format-following and exact match per model (`scripts/toy_eval.py`)."""

    models: list[str] | None = field(default=None, metadata={"help": "Model folders or Hub ids, compared side by side."})
    questions: str = field(default="runs/toy/data/heldout_qa", metadata={"help": "Held-out question dataset."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation budget per answer."})
    batch_size: int = field(default=50, metadata={"help": "Questions per generation batch."})
    output_dir: str = field(default="runs/toy/eval", metadata={"help": "Where results.json is written."})
