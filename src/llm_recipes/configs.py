"""Stage configuration: TRL's config dataclasses, extended, parsed from a YAML recipe plus CLI overrides.

YAML keys are field names. A key that no dataclass knows, or a value of the wrong type, is an error that
names the key and the file, before any model or dataset is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import yaml
from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, ModelConfig, RewardConfig, RLOOConfig, TrlParser

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
    dataset_test_split: str | None = field(
        default=None,
        metadata={
            "help": "Held-out split used for evaluation. Unset: `validation`, else `test` (the same rule in every "
            "stage); 'none': no held-out split. A split named here that the data lacks is an error."
        },
    )
    dataset_test_split_size: float | None = field(
        default=None,
        metadata={
            "help": "When the data has no held-out split: hold out this share (< 1) or number of rows (>= 1) of "
            "train for evaluation, drawn with the stage's seed (logged)."
        },
    )
    text_sample_by: str = field(
        default="paragraph",
        metadata={
            "help": "Plain-text (.txt) files: one document per paragraph (blank line), per line, or per file.",
            "choices": ["paragraph", "line", "document"],
        },
    )
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
            "help": "Row format of the data; 'auto' detects it from the columns among the formats of the kind the "
            "stage needs (SFT: messages, sharegpt, alpaca, prompt_completion, text; reward/DPO: ultrafeedback, "
            "preference (explicit or implicit prompt, hh-rlhf text recognised), hh_rlhf; PPO/GRPO/RLOO: prompt, "
            "prompt_from_messages).",
            "choices": ["auto", "messages", "alpaca", "sharegpt", "prompt_completion", "text",
                        "preference", "hh_rlhf", "ultrafeedback", "prompt", "prompt_from_messages"],
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


def _fields_accepting(dataclass_types: Sequence[type], container: type) -> set[str]:
    """Fields whose annotation admits a list (or dict), whatever argparse was told (`report_to: str | list[str]`)."""
    out = set()
    for dc in dataclass_types:
        for name, hint in typing.get_type_hints(dc).items():
            hints = (hint, *typing.get_args(hint))
            hints += tuple(a for h in hints[1:] for a in typing.get_args(h))  # list[dict] items may be mappings
            if any(h is container or typing.get_origin(h) is container for h in hints):
                out.add(name)
    return out


def _check_value(
    parser: argparse.ArgumentParser, key: str, value: Any, path: str, list_ok: bool = False, dict_ok: bool = False
) -> Any:
    """Check a YAML value the way argparse would check it on the command line, and return it converted to the
    field's type: a YAML `2024` for a str field becomes '2024', a single value for a list field a one-item list
    (argparse leaves YAML defaults as they are, so the dataclass would otherwise get the wrong type)."""
    action = next(a for a in parser._actions if a.dest == key)
    many = action.nargs in ("+", "*")
    if many and value is not None and not isinstance(value, list):
        value = [value]
    if isinstance(value, list) and not (many or list_ok):
        raise ConfigError(f"{path}: key '{key}' takes one value, got a list {value!r}")
    converted_items = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and not dict_ok:
            raise ConfigError(f"{path}: key '{key}' takes a single value, got a mapping {item!r}")
        if item is None or action.type is None or isinstance(item, dict):
            converted_items.append(item)
            continue
        if isinstance(item, list):
            raise ConfigError(f"{path}: key '{key}' takes a list of single values, got a nested list {item!r}")
        try:
            converted = action.type(str(item))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ConfigError(
                f"{path}: key '{key}' expects {getattr(action.type, '__name__', action.type)}, got {item!r}"
            ) from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(f"{path}: key '{key}' must be one of {list(action.choices)}, got {item!r}")
        converted_items.append(converted)
    return converted_items if isinstance(value, list) else converted_items[0]


# Settings that only make sense on a GPU; where there is none they are turned off, so GPU recipes parse and
# run (slowly) on a CPU instead of failing in TrainingArguments (bf16 autocast and checkpointing slow a CPU).
# transformers 5 renamed gradient checkpointing to `activation_checkpointing` (the old name is an alias).
CPU_OVERRIDES = {
    "bf16": False, "fp16": False, "use_cpu": True, "gradient_checkpointing": False,
    "activation_checkpointing": False,
}


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

    def command_line_error(message: str):  # argparse would print the whole usage (hundreds of options) and exit
        raise ConfigError(f"command line: {message}")

    parser.error = command_line_error
    known = _field_types(dataclass_types)
    list_ok, dict_ok = _fields_accepting(dataclass_types, list), _fields_accepting(dataclass_types, dict)
    config: dict = {}
    path = None
    args = [part for a in args for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            raise ConfigError("command line: --config needs the path of a recipe YAML")
        path = args[i + 1]
        del args[i : i + 2]
        config = _load_yaml(path)
        env = config.pop("env", {}) or {}
        if not isinstance(env, dict):
            raise ConfigError(f"{path}: 'env' must be a mapping of variable: value")
        os.environ.update({k: str(v) for k, v in env.items()})
        for key, value in config.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key '{key}' (not a field of {', '.join(sorted(set(known.values())))})")
            config[key] = _check_value(parser, key, value, path, key in list_ok, key in dict_ok)
    flags = [a[2:].split("=")[0].replace("-", "_") for a in args if a.startswith("--")]
    unknown = [f for f in flags if f not in known and not (f.startswith("no_") and f[3:] in known) and f != "help"]
    if unknown:
        raise ConfigError(f"command line: unknown option '--{unknown[0]}'")
    parser.set_defaults_with_config(**config)
    if not torch.cuda.is_available():
        parser.set_defaults(**{k: v for k, v in CPU_OVERRIDES.items() if k in known})
    try:
        parsed = tuple(parser.parse_args_into_dataclasses(args=args))
    except (ValueError, TypeError) as err:  # raised by the dataclasses' __post_init__ checks
        raise ConfigError(f"{path or 'command line'}: {str(err).strip().splitlines()[0]}") from None
    from_cli = set(flags) | {f[3:] for f in flags if f.startswith("no_")}
    check_values(parsed, lambda key: "command line" if key in from_cli or key not in config else path)
    return parsed


# ----------------------------------------------------------------------------------------------- value checks
# Checked for every stage right after parsing, by field name (TRL's and transformers' own dataclasses included), so
# that a bad number stops the stage before anything loads: TrainingArguments takes a negative learning rate or a
# batch size of 0 and fails only after the model loaded (or, as `max_length: -5` did, trains and reports success).
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


VALUE_RULES: dict[str, tuple[Any, str]] = {
    **{key: (lambda v: v > 0, "must be > 0") for key in (
        "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
        "batch_size", "block_size", "vocab_size", "model_max_length", "max_new_tokens", "max_gen_toks",
        "response_length", "eval_max_length", "num_ppo_epochs", "num_mini_batches", "local_rollout_forward_batch_size",
        "n_entities", "code_timeout", "code_memory_mb", "code_max_processes", "revision_rounds", "kl_samples",
        "extract_timeout", "tasks", "mix_max_repeat", "cliprange", "cliprange_value", "temperature",
        "max_length", "max_prompt_length", "max_completion_length", "max_seq_length", "eval_max_samples", "max_texts",
        "max_prompts", "comparison_limit", "total_episodes", "max_tokens", "num_layers", "hidden_size", "num_heads",
        "num_kv_heads", "intermediate_size", "max_position_embeddings", "dataset_num_proc", "peak_flops",
        "mix_total_documents", "limit", "lora_r", "lora_alpha", "logging_steps", "save_steps", "eval_steps",
        "num_generations",
    )},
    **{key: (lambda v: v >= 0, "must be >= 0") for key in (
        "weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm", "kl_coef", "beta", "ptx_coef", "vf_coef",
        "num_fewshot", "label_smoothing_factor", "value_head_init_std", "missing_eos_penalty", "seed",
        "save_total_limit", "heldout_texts", "min_frequency",
    )},
    **{key: (lambda v: 0 <= v < 1, "must be in [0, 1)") for key in (
        "test_fraction", "heldout_fraction", "validation_fraction", "lora_dropout",
    )},
    **{key: (lambda v: 0 <= v <= 1, "must be in [0, 1]") for key in ("gamma", "lam")},
    "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "max_steps": (lambda v: v >= -1, "must be -1 (train by epochs) or a number of steps"),
}


def check_values(parsed: Sequence[Any], where) -> None:
    """Numbers in range and chat templates that compile, for every parsed dataclass; `where(key)` names the file or
    the command line the value came from."""
    for args in parsed:
        values = vars(args)
        for key, (ok, rule) in VALUE_RULES.items():
            value = values.get(key)
            if _number(value) and not ok(value):
                raise ConfigError(f"{where(key)}: key '{key}' {rule}, got {value!r}")
        if _number(values.get("num_train_epochs")) and values["num_train_epochs"] <= 0 and values.get("max_steps", -1) <= 0:
            raise ConfigError(f"{where('num_train_epochs')}: key 'num_train_epochs' must be > 0 (or set max_steps), "
                              f"got {values['num_train_epochs']!r}")
        template = values.get("chat_template")
        if isinstance(template, str):
            _check_chat_template(template, where("chat_template"))


def _check_chat_template(template: str, where: str) -> None:
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from llm_recipes.chat_templates import resolve_template

    try:
        resolve_template(template)  # a built-in name, or Jinja
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if "{%" in template or "{{" in template:
        try:  # compiled as transformers compiles it (sandboxed, with the {% generation %} extension)
            _compile_jinja_template(template)
        except TemplateError as err:
            line = f"line {err.lineno}: " if getattr(err, "lineno", None) else ""
            raise ConfigError(f"{where}: key 'chat_template' is not valid Jinja ({line}{err.message or err})") from None


# ----------------------------------------------------------------------------------------------- input checks
# Models, tokenizers and datasets named by a stage, checked before anything loads (run_cli; not in parse_config,
# which also parses recipes whose inputs an earlier stage has yet to write). Model keys: whether the folder must hold
# a tokenizer too (the stage loads it from there).
MODEL_KEYS = {
    "model_name_or_path": True, "base_model_name_or_path": False, "ref_model_path": False, "value_model_path": True,
    "reward_model_path": True, "reward_model": True, "judge_model": True, "judge_model_name_or_path": True,
    "reference_model": True, "models": True,
}
DATA_KEYS = ("dataset_name", "questions", "preferences", "prompts", "ptx_dataset_name", "eval_dataset",
             "redteam_prompts", "jailbreaks", "bias_pairs", "comparison_prompts", "constitution", "few_shot")
REQUIRED = {
    "ModelArguments": ("model_name_or_path",), "AlignmentModelArguments": ("model_name_or_path",),
    "InitModelArguments": ("tokenizer_name_or_path",), "CAIArguments": ("model_name_or_path",),
    "ToyEvalArguments": ("models",), "EvaluateArguments": ("models",), "ToyAlignmentEvalArguments": ("models",),
    "TokenizerArguments": ("dataset_name",),
}
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".yaml", ".yml")


def check_data_source(source: str, key: str) -> None:
    """A local data file or folder must exist and not be empty (a Hub id is checked when it loads)."""
    from llm_recipes.errors import DataError
    from llm_recipes.models import looks_local

    path = os.path.expanduser(source)
    if not os.path.exists(path):
        if looks_local(path) or path.lower().endswith(DATA_FILE_SUFFIXES):
            raise DataError(f"{key}: {source}: no such file or folder")
        return
    if os.path.isdir(path):
        if not os.listdir(path):
            raise DataError(f"{key}: {source}: empty folder (no data)")
        return
    if path.lower().endswith(".parquet"):
        return
    with open(path, "rb") as fh:  # reads only up to the first non-blank byte
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return
    raise DataError(f"{key}: {source}: empty file (no rows)")


def check_inputs(parsed: Sequence[Any]) -> None:
    """Every model, tokenizer and dataset a stage names: there, of the right kind, not truncated (see models)."""
    from llm_recipes.models import check_local_weights, check_tokenizer_source

    for args in parsed:
        values = vars(args)
        for key in REQUIRED.get(type(args).__name__, ()):
            if not values.get(key):
                raise ConfigError(f"{key}: not set")
        if "dataset_mixture" in values and not (values.get("dataset_name") or values.get("dataset_mixture")):
            raise ConfigError("dataset_name: not set (name a dataset, or a dataset_mixture)")
        if isinstance(args, PretrainConfig) and not (args.tokenizer_name_or_path or args.model_name_or_path):
            raise ConfigError("tokenizer_name_or_path: not set (train one with scripts/tokenizer.py)")
        own_tokenizer = values.get("tokenizer_name_or_path")
        if own_tokenizer:
            check_tokenizer_source(own_tokenizer, "tokenizer_name_or_path")
        for key, needs_tokenizer in MODEL_KEYS.items():
            value = values.get(key)
            for i, path in enumerate(value if isinstance(value, list) else [value] if value else []):
                name = f"{key}[{i}]" if isinstance(value, list) and len(value) > 1 else key
                tokenizer = needs_tokenizer and not (key == "model_name_or_path" and own_tokenizer)
                override = values.get("base_model_name_or_path") if key == "model_name_or_path" else None
                check_local_weights(path, name, tokenizer=tokenizer, base_override=override,
                                    tokenizer_from_base=isinstance(args, EvaluateArguments))  # (load_for_eval falls back)
        for i, entry in enumerate(values.get("reward_funcs") or []):
            if os.path.isdir(entry):
                check_local_weights(entry, f"reward_funcs[{i}]", tokenizer=True)
        for key in DATA_KEYS:
            if isinstance(values.get(key), str):
                check_data_source(values[key], key)
        mixture = values.get("dataset_mixture")
        for i, spec in enumerate(mixture.get("datasets") or [] if isinstance(mixture, dict) else []):
            if isinstance(spec, dict) and isinstance(spec.get("path"), str):
                check_data_source(spec["path"], f"dataset_mixture.datasets[{i}].path")


def _output_dirs(parsed: Sequence[Any]) -> list[str]:
    return [args.output_dir for args in parsed if isinstance(getattr(args, "output_dir", None), str)]


def _remove_left_behind(output_dirs: list[str], existed: set[str]) -> None:
    """A stage that stopped on a user error leaves no output folder it created and put no file in."""
    import shutil

    for folder in output_dirs:
        if folder not in existed and os.path.isdir(folder) and not any(files for _, _, files in os.walk(folder)):
            shutil.rmtree(folder, ignore_errors=True)


def run_cli(main, dataclass_types: Sequence[type]) -> None:
    """Entry point for a stage script: parse, check every value and input, run; a user error (RecipeError) is one
    line on stderr and exit status 2, with no output folder left behind. Secrets are kept out of saved arguments
    and scrubbed from logs (see llm_recipes.redaction)."""
    from llm_recipes.redaction import hide_secret_arguments, redact_text, scrub_logs

    from llm_recipes import integrity

    scrub_logs()
    argv = sys.argv[1:]
    try:
        parsed = parse_config(dataclass_types, [a for a in argv if a != integrity.FORCE_FLAG])
        hide_secret_arguments(*parsed)
        check_inputs(parsed)
        integrity.register(parsed, force=integrity.FORCE_FLAG in argv)  # the recipe record a marker keeps
    except RecipeError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        raise SystemExit(2) from None
    existed = {folder for folder in _output_dirs(parsed) if os.path.exists(folder)}
    try:
        main(*parsed)
    except RecipeError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        _remove_left_behind(_output_dirs(parsed), existed)
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
        default=None,
        metadata={
            "help": "Held-out split for the bytes-per-token report. Unset: `validation`, else `test` (the same rule "
            "in every stage), else `heldout_texts` texts of train; 'none': those texts of train. A split named here "
            "that the data lacks is an error."
        },
    )
    text_sample_by: str = field(
        default="paragraph",
        metadata={
            "help": "Plain-text (.txt) files: one text per paragraph (blank line), per line, or per file.",
            "choices": ["paragraph", "line", "document"],
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    streaming: bool = field(default=False, metadata={"help": "Stream a large Hub dataset instead of downloading it."})
    max_texts: int | None = field(default=None, metadata={"help": "Train on at most this many texts."})
    heldout_texts: int = field(
        default=500,
        metadata={"help": "Without a held-out split: texts kept out of training (from the train split) for the "
                  "bytes-per-token report."},
    )
    extra_special_tokens: list[str] | None = field(
        default=None, metadata={"help": "Special tokens added to <|endoftext|>, <|pad|>, <|im_start|>, <|im_end|>."}
    )
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


@dataclass
class PretrainConfig(TrainingArguments):
    """Pretraining from scratch (`scripts/pretrain.py`): transformers' TrainingArguments plus the model to
    build, the text to pack and the tokens budget. Defaults are the usual LLM ones (AdamW, betas 0.9/0.95,
    weight decay 0.1, clipping 1.0, warmup + cosine)."""

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Trained tokenizer (folder or Hub id); the model is built for it."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pretraining this model instead of building a new one."}
    )
    model_size: str | None = field(default="toy", metadata={"help": "Named size: tiny, toy, 20m, 125m, 350m, 1b, 8b."})
    num_layers: int | None = field(default=None, metadata={"help": "Override: decoder layers."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override: hidden size."})
    num_heads: int | None = field(default=None, metadata={"help": "Override: attention heads."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "Override: key/value heads (GQA)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Override: MLP width."})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "Override: context length."})
    attn_implementation: str = field(
        default="auto",
        metadata={"help": "'auto': flash_attention_2 on CUDA when flash-attn is installed, else sdpa; or sdpa/eager."},
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the documents' text."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (data larger than memory or disk)."})
    block_size: int = field(default=2048, metadata={"help": "Tokens per packed training sequence."})
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Tokens budget: sets max_steps = max_tokens / (global batch x block_size). Wins over epochs."},
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization (datasets.map)."})
    peak_flops: float | None = field(
        default=None, metadata={"help": "Device peak FLOP/s for MFU; default: datasheet (GPU) or a measured matmul (CPU)."}
    )
    eval_before_training: bool = field(
        default=True,
        metadata={"help": "Evaluate the untrained model first, to report loss before and after. Needs held-out "
                  "documents (a held-out split, or dataset_test_split_size): without them it is an error, unless "
                  "dataset_test_split is 'none'."},
    )
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "cosine, or warmup_stable_decay (WSD; lr_scheduler_kwargs: num_decay_steps)."}
    )
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of the steps when < 1."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    output_dir: str | None = field(default="runs/toy/pretrain", metadata={"help": "Checkpoints and the final model."})


# ----------------------------------------------------------------------------------------------- alignment
@dataclass
class AlignmentModelArguments(ModelArguments):
    """ModelArguments for stages that start from an earlier stage's output, which may be an adapter folder."""

    base_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Base model of the adapter folder in `model_name_or_path`. Unset: the adapter's own "
            "`base_model_name_or_path`, tried as written and relative to the adapter folder."
        },
    )


@dataclass
class RewardStageConfig(RewardConfig):
    """Reward modelling (`scripts/reward.py`): TRL's RewardConfig with the project's defaults. The model becomes
    a sequence classifier with one output; pairwise accuracy and margin are measured on the eval split."""

    output_dir: str | None = field(default="runs/reward", metadata={"help": "Checkpoints and the final reward model."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Pairs with a longer side are dropped (eval pairs dropped are counted in the card)."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    eval_strategy: str = field(default="no", metadata={"help": "Evaluate during training too ('steps'/'epoch')."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class DPOStageConfig(DPOConfig):
    """Direct preference optimisation (`scripts/dpo.py`): TRL's DPOConfig with the project's defaults. With LoRA
    the reference is the model with its adapter disabled (no second copy); `precompute_ref_log_probs` computes
    the reference log-probs once, before training, and frees the reference model."""

    output_dir: str | None = field(default="runs/dpo", metadata={"help": "Checkpoints and the final policy."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate (AdamW)."})
    max_length: int | None = field(default=1024, metadata={"help": "Prompt + completion tokens (longer is truncated)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class RewardSourceArguments:
    """Where on-policy RL stages get their rewards from."""

    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (the output of scripts/reward.py): folder or Hub id."}
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions: dotted paths to Python callables `f(prompts, completions, **columns) -> "
            "list[float]` (dataset columns arrive as keyword lists), or reward model folders/Hub ids; added to "
            "`reward_model_path`. PPO takes one reward: a reward model or one function."
        },
    )
    allow_reward_tokenizer_mismatch: bool = field(
        default=False,
        metadata={
            "help": "Accept a reward model whose tokenizer differs from the policy's: texts are decoded and "
            "re-tokenized for it. Off: a mismatch is an error (it usually means the wrong reward model)."
        },
    )


@dataclass
class GRPOStageConfig(GRPOConfig):
    """GRPO (`scripts/grpo.py`): TRL's GRPOConfig; rewards from `RewardSourceArguments` (reward model and/or
    Python functions, weighted by `reward_weights`)."""

    output_dir: str | None = field(default="runs/grpo", metadata={"help": "Checkpoints and the final policy."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class RLOOStageConfig(RLOOConfig):
    """RLOO (`scripts/rloo.py`): TRL's RLOOConfig; rewards from `RewardSourceArguments`."""

    output_dir: str | None = field(default="runs/rloo", metadata={"help": "Checkpoints and the final policy."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class PPOConfig(TrainingArguments):
    """RLHF with PPO (`scripts/ppo.py`, the project's own trainer: `llm_recipes.ppo`). Names follow TRL's last
    PPOConfig. One update: sample `rollout_batch_size = per_device_train_batch_size x gradient_accumulation_steps
    x num_mini_batches` prompts, generate, score with the reward model, then `num_ppo_epochs` passes over the
    rollouts in `num_mini_batches` minibatches."""

    output_dir: str | None = field(default="runs/ppo", metadata={"help": "Checkpoints and the final policy."})
    learning_rate: float = field(default=3e-6, metadata={"help": "Peak learning rate (AdamW), policy and value."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Prompts to roll out in all; unset: num_train_epochs x the dataset."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches per rollout batch (one step each)."})
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per forward pass when generating and scoring rollouts."}
    )
    response_length: int = field(default=53, metadata={"help": "Most tokens generated per response."})
    max_prompt_length: int = field(default=512, metadata={"help": "Longer prompts are cut from the left."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probs use it too)."})
    stop_token: str | None = field(
        default="eos", metadata={"help": "'eos': a response ends at the tokenizer's EOS (end of turn); None: never."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a response that does not end with EOS."}
    )
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty coefficient (beta)."})
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "Per-token KL estimate: k1 (log-ratio, unbiased, can be negative per token) or k3 "
            "((r - 1) - log r, never negative, lower variance).",
            "choices": ["k1", "k3"],
        },
    )
    cliprange: float = field(default=0.2, metadata={"help": "PPO clip range of the probability ratio."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value update."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards (no mean shift)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages per rollout batch."})
    value_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Separate value model (e.g. the reward model: a sequence classifier whose head scores every "
            "token). Unset: a value head on the policy (shared trunk), initialised to zero."
        },
    )
    value_head_init_std: float = field(
        default=0.0, metadata={"help": "Std of the value head's initial weights (0: zero, so first values are 0)."}
    )
    ref_model_path: str | None = field(
        default=None,
        metadata={"help": "Frozen reference policy for the KL penalty. Unset: the starting policy (with LoRA: the "
                  "policy with its adapter disabled, no second copy)."},
    )
    num_sample_generations: int = field(
        default=4, metadata={"help": "Sample responses printed at each logging step (0: none)."}
    )
    ptx_coef: float = field(
        default=0.0,
        metadata={"help": "PPO-ptx (InstructGPT): weight of a log-likelihood term on `ptx_dataset_name` added to "
                  "every PPO step; 0: pure PPO. It keeps behaviour the policy never samples (and so PPO can never "
                  "reinforce) within reach, e.g. a refusal absent from the SFT data."},
    )
    ptx_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Demonstrations for the ptx term: a preference dataset (its chosen replies), or "
                  "conversations / prompt-completion pairs (split `train`)."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints (per update), so a killed run resumes."})
    save_steps: float = field(default=20, metadata={"help": "Checkpoint every this many updates."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})
    logging_steps: float = field(default=1, metadata={"help": "Log every this many updates."})

    @property
    def rollout_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches


@dataclass
class ToyAlignmentEvalArguments:
    """Compare policies on the toy alignment test set (`scripts/toy_alignment_eval.py`)."""

    models: list[str] | None = field(default=None, metadata={"help": "Policies: folders (full or adapter) or Hub ids."})
    reference_model: str | None = field(
        default=None, metadata={"help": "The policy KL is measured against (the SFT model); default: the first model."}
    )
    reward_model_path: str | None = field(default=None, metadata={"help": "Reward model scoring the answers."})
    preferences: str | None = field(
        default=None, metadata={"help": "Preference dataset whose test split gives the reward model's pairwise accuracy."}
    )
    questions: str = field(default="runs/toy/data/alignment_heldout", metadata={"help": "Alignment test set."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation budget per answer."})
    kl_samples: int = field(default=1, metadata={"help": "Sampled answers per prompt for the KL estimate."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (KL estimate)."})
    output_dir: str = field(default="runs/toy/alignment_eval", metadata={"help": "Where results.json is written."})


@dataclass
class ExportArguments:
    """Merge, quantize, measure and release a model (`scripts/export.py`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model or PEFT adapter (LoRA/QLoRA) to export: a local folder or Hub id."}
    )
    model_candidates: list[str] | None = field(
        default=None,
        metadata={"help": "Used when model_name_or_path is unset: the first of these folders holding a finished stage "
                  "(completion marker) is exported, e.g. [runs/toy/ppo, runs/toy/dpo, runs/toy/sft]."},
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base of the adapter, replacing the one named in its adapter_config.json."}
    )
    base_quantization: str = field(
        default="auto",
        metadata={"help": "How the adapter's base was quantized in training: the base is loaded so, dequantised and the "
                  "adapter merged into the full-precision weights. 'auto' reads the adapter's marker or recipe.",
                  "choices": ["auto", "none", "nf4", "fp4", "int8"]},
    )
    base_double_quant: bool | None = field(
        default=None, metadata={"help": "Whether that 4-bit base used nested (double) quantization; unset: from the recipe."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "dtype of the merged model; 'auto' keeps the base's saved dtype.",
                                  "choices": ["auto", "float32", "bfloat16", "float16"]}
    )
    max_shard_size: str = field(default="2GB", metadata={"help": "Largest safetensors shard of the merged model."})
    quantize: list[str] = field(
        default_factory=lambda: ["bnb-nf4", "bnb-int8", "torchao-int8"],
        metadata={"help": "Quantized variants, each saved in a subfolder: bnb-nf4, bnb-int8 (bitsandbytes), "
                  "torchao-int8 (torchao int8 weight-only, a serving format).",
                  "choices": ["bnb-nf4", "bnb-int8", "torchao-int8"]},
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Text dataset for the held-out perplexity of each variant (unset: none)."}
    )
    eval_split: str = field(default="validation", metadata={"help": "Split of eval_dataset."})
    eval_text_column: str = field(default="text", metadata={"help": "Text column of eval_dataset."})
    eval_max_samples: int | None = field(default=200, metadata={"help": "At most this many texts are measured."})
    eval_max_length: int = field(default=512, metadata={"help": "Texts are cut to this many tokens."})
    pipeline: str | None = field(
        default=None, metadata={"help": "Pipeline YAML naming the recipe of each folder in the lineage (for folders "
                                "whose marker and card name none)."}
    )
    output_dir: str = field(default="runs/release", metadata={"help": "Release folder: merged model, variants, card."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the release (and its lineage datasets) to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Model repo of the push, e.g. me/toy-chat."})
    hub_private: bool | None = field(default=None, metadata={"help": "Create the repos private."})
    push_datasets: bool = field(
        default=True, metadata={"help": "With push_to_hub: push each local dataset of the lineage, with its card, as "
                                "<namespace>/<model name>-<dataset folder>."}
    )
    hub_dataset_namespace: str | None = field(
        default=None, metadata={"help": "Namespace of the dataset repos (default: that of hub_model_id)."}
    )


@dataclass
class CurationArguments:
    """Data collection and curation on datatrove (`scripts/curate.py`); see llm_recipes.curation."""

    sources: list[dict] | None = field(
        default=None,
        metadata={"help": "Sources: [{name, kind: text|jsonl|parquet|html|warc|code|hub, path | dataset, weight, "
                  "glob, text_key, id_key, date_key, url_key, language_key, language, date, split, config, limit, "
                  "document_boundary: file|blank_line|line (text)}]. A row's own fields are kept in `row_metadata`."},
    )
    output_dir: str = field(default="runs/toy/curated", metadata={"help": "Hub-format output folder (train/validation)."})
    work_dir: str | None = field(default=None, metadata={"help": "Intermediate files; default '<output_dir>.work'."})
    keep_work_dir: bool = field(default=False, metadata={"help": "Keep intermediate files (exclusions per stage, logs)."})
    executor: str = field(default="local", metadata={"help": "datatrove executor.", "choices": ["local", "ray", "slurm"]})
    tasks: int = field(default=2, metadata={"help": "datatrove tasks (shards) of the per-document stages."})
    workers: int = field(default=2, metadata={"help": "Tasks run at once (local/ray)."})
    ray: dict | None = field(default=None, metadata={"help": "Ray: {address, num_cpus, cpus_per_task, mem_per_cpu_gb}."})
    slurm: dict | None = field(
        default=None,
        metadata={"help": "Slurm: SlurmPipelineExecutor options {partition, time, cpus_per_task, mem_per_cpu_gb, "
                  "qos, venv_path, sbatch_args, ...}."},
    )
    on_bad_row: str = field(
        default="error",
        metadata={"help": "Bad JSON line, missing text, undecodable bytes: 'error' stops with file and line; 'exclude' "
                  "drops the row and records it (stage ingest).", "choices": ["error", "exclude"]},
    )
    filters: dict | None = field(
        default=None,
        metadata={"help": "The filters that run (only those listed), each {params, route: {sources, kinds, languages, "
                  "not_*}} or true: length, language, gopher_repetition, gopher_quality, c4_quality, fineweb_quality, "
                  "url, toxicity, code."},
    )
    word_tokenizer: str = field(
        default="spacy", metadata={"help": "Word splitting for quality filters and MinHash.", "choices": ["spacy", "whitespace"]}
    )
    extract_timeout: float = field(default=5.0, metadata={"help": "Seconds per HTML page for text extraction."})
    pii: dict | None = field(
        default=None,
        metadata={"help": "{enabled, types: [email, ip, ipv6, phone, credit_card, national_id], placeholders, "
                  "only_public_ips, route}."},
    )
    dedup: dict | None = field(
        default=None,
        metadata={"help": "{exact: true, near: true, n_grams: 5, num_buckets: 50, hashes_per_bucket: 10, seed: 1}."},
    )
    cutoff_date: str | None = field(default=None, metadata={"help": "Knowledge cutoff (YYYY-MM-DD); later documents dropped."})
    undated_policy: str = field(
        default="keep", metadata={"help": "Documents without a date.", "choices": ["keep", "drop"]}
    )
    mix_total_documents: int | None = field(
        default=None, metadata={"help": "Output rows; unset: the largest mix needing at most mix_max_repeat repeats."}
    )
    mix_max_repeat: float = field(default=1.0, metadata={"help": "Most times a source may be repeated (up-sampling)."})
    validation_fraction: float = field(default=0.05, metadata={"help": "Share of rows in the validation split."})
    validation_sources: list[str] | None = field(
        default=None, metadata={"help": "Sources the validation split is drawn from (default: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling and split seed."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the dataset to `hub_dataset_id`."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repo for the push."})


@dataclass
class EvaluateArguments:
    """Evaluation (`scripts/evaluate.py`): lm-eval benchmarks, red teaming, bias audits, win rates, and a report."""

    models: list[str] | None = field(
        default=None, metadata={"help": "Models compared side by side: Hub ids or local folders (full or LoRA adapter)."}
    )
    model_names: list[str] | None = field(default=None, metadata={"help": "Display names, one per model (default: the paths)."})
    chat_template: str | None = field(
        default=None, metadata={"help": "Chat template as in training: a built-in name or Jinja; unset keeps the tokenizer's."}
    )
    tasks: list[str] | None = field(
        default=None, metadata={"help": "lm-eval tasks by name: built-in (mmlu, gsm8k, ...: need the Hub) or from task_dirs."}
    )
    task_dirs: list[str] | None = field(default=None, metadata={"help": "Folders of lm-eval task YAML files."})
    benchmarks: dict | None = field(
        default=None,
        metadata={"help": "The project's own tasks over local files: {name: {type: multiple_choice|generate_until|"
                  "perplexity|code, data_files: .jsonl/.jsonl.gz/.parquet file or Hub-layout folder, split, fewshot_split, "
                  "answer_regex: gsm8k|regex, filter_list (lm-eval's), until, max_gen_toks: n, k: [1], samples: n}}."},
    )
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples per prompt (None: the task's own)."})
    limit: float | None = field(default=None, metadata={"help": "Examples per task: a count, or a fraction below 1."})
    batch_size: int = field(default=16, metadata={"help": "Batch size for scoring and generation."})
    apply_chat_template: bool = field(default=True, metadata={"help": "Wrap benchmark prompts in the chat template."})
    max_gen_toks: int = field(default=64, metadata={"help": "Generation budget of generate_until and code tasks."})
    log_samples: bool = field(
        default=False, metadata={"help": "Write lm-eval's per-example samples (prompt, generation, target) to samples/<model>/<task>.jsonl."}
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Generation budget for red-team, bias and comparison replies."})
    code_timeout: float = field(default=10.0, metadata={"help": "Seconds per generated program in the sandbox."})
    code_memory_mb: int = field(
        default=1024, metadata={"help": "Memory limit of a generated program's whole process tree (cgroup; MiB)."}
    )
    code_max_processes: int = field(default=64, metadata={"help": "Process-count limit per generated program (pids cgroup)."})
    allow_unsandboxed_code: bool = field(
        default=False, metadata={"help": "Run generated code without bubblewrap when bwrap is missing (UNSAFE)."}
    )
    allow_weaker_sandbox: bool = field(
        default=False,
        metadata={"help": "Run generated code even where the sandbox cannot enforce every limit (no writable cgroup, "
                  "not root); the results say which limits held."},
    )
    redteam_prompts: str | None = field(
        default=None, metadata={"help": "Adversarial prompts (column `prompt`, optional `harmful_markers`): file, folder or Hub id."}
    )
    jailbreaks: str | None = field(
        default=None, metadata={"help": "Jailbreak wrappers (columns `name`, `template` with {prompt}): a file; each multiplies the prompts."}
    )
    judge: str = field(
        default="keyword", metadata={"help": "Red-team judge.", "choices": ["keyword", "reward_model", "llm"]}
    )
    judge_model: str | None = field(default=None, metadata={"help": "Judge LLM (for judge: llm, and for win rates)."})
    refusal_markers: list[str] | None = field(default=None, metadata={"help": "Phrases that mark a refusal (keyword judge)."})
    harmful_markers: list[str] | None = field(default=None, metadata={"help": "Phrases that mark harmful compliance."})
    refusal_sentence: str | None = field(
        default=None, metadata={"help": "The reference refusal the reward-model judge compares replies with."}
    )
    bias_pairs: str | None = field(
        default=None, metadata={"help": "Counterfactual pairs (attribute, term_a, term_b, prompt_a, prompt_b, response)."}
    )
    bias_answers: bool = field(default=True, metadata={"help": "Also compare the greedy answers of each side of a pair."})
    comparison_prompts: str | None = field(
        default=None, metadata={"help": "Prompts (column `question` or `prompt`) for the win rates; other columns reach a reward function."}
    )
    comparison_limit: int | None = field(default=100, metadata={"help": "At most this many comparison prompts."})
    baseline: str | None = field(default=None, metadata={"help": "Model every other is compared with (default: the first)."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward model (sequence classification) for win rates and bias."})
    reward_function: str | None = field(
        default=None, metadata={"help": "Or a Python reward function `module:function` (TRL reward_funcs style)."}
    )
    dataset_split: str = field(default="test", metadata={"help": "Split read from dataset folders or Hub ids."})
    title: str = field(default="Evaluation report", metadata={"help": "Report title."})
    output_dir: str = field(default="runs/eval", metadata={"help": "Where results.json, report.md and report.html go."})


@dataclass
class CAIArguments:
    """Constitutional AI data generation (`scripts/cai.py`): critique and revision, and AI feedback."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Model that answers, critiques and revises: Hub id or folder."})
    prompts: str = field(
        default="HuggingFaceH4/cai-conversation-harmless",
        metadata={"help": "Prompt dataset (red-team prompts by default): Hub id, folder or json/jsonl/parquet/csv file."},
    )
    prompts_config: str | None = field(default=None, metadata={"help": "Config name of the prompt dataset."})
    prompts_split: str | None = field(
        default=None, metadata={"help": "Split of the prompt dataset; default: its only split (one with several must be named)."}
    )
    prompt_column: str | None = field(
        default=None, metadata={"help": "Column holding the prompt (text, or messages whose first user turn is used); default: detected."}
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most this many prompts (the first ones)."})
    constitution: str | None = field(
        default=None, metadata={"help": "YAML/JSON list of principles (critique_request, revision_request, comparison); default: built in."}
    )
    few_shot: str | None = field(
        default=None, metadata={"help": "YAML/JSON list of examples (prompt, answer, critique, revision) prepended as turns."}
    )
    mode: str = field(
        default="revision", metadata={"help": "What to generate.", "choices": ["revision", "feedback", "both"]}
    )
    revision_rounds: int = field(default=1, metadata={"help": "Critique -> revision rounds per prompt."})
    judge_model_name_or_path: str | None = field(
        default=None, metadata={"help": "AI-feedback judge (default: the model itself)."}
    )
    backend: str = field(default="transformers", metadata={"help": "Generation backend.", "choices": ["transformers", "vllm"]})
    batch_size: int = field(default=16, metadata={"help": "Prompts per chunk (one generation batch; the unit of resume)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Generation budget per reply."})
    do_sample: bool = field(default=False, metadata={"help": "Sample answers, critiques and revisions (else greedy)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (sampled replies, AI-feedback answers)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold."})
    dtype: str = field(default="auto", metadata={"help": "Model weights dtype (auto, float32, bfloat16, float16)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    test_fraction: float = field(default=0.05, metadata={"help": "Share of rows in each output's test split (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed for principles, answer order and sampling: same seed, same data."})
    output_dir: str = field(default="runs/cai", metadata={"help": "Receives sft/, preferences/ (and feedback/) datasets."})

    def __post_init__(self):
        if self.revision_rounds < 1:
            raise ValueError("revision_rounds must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 <= self.test_fraction < 1:
            raise ValueError("test_fraction must be in [0, 1)")
