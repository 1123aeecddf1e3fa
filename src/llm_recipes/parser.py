"""The recipe parser: a YAML recipe plus CLI overrides -> the stage's config dataclasses, or a one-line error.

`RecipeParser` is TRL's TrlParser (config file, `env:` block, CLI over YAML) plus only what TrlParser lacks: an
unknown YAML key or a badly typed value names the key and the file, numbers are range-checked, chat templates must
compile, argparse's usage dump becomes one line, and GPU-only settings are switched off, with a log line, where
there is no CUDA. Nested options (a mixture's datasets, curation's sources, pii, dedup and routes, pipeline
stages, CAI principles) are typed dataclasses built by the one strict constructor `build_options`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

import torch
import yaml
from trl import TrlParser

from llm_recipes.errors import ConfigError, RecipeError, first_line

logger = logging.getLogger("llm_recipes.parser")
T = TypeVar("T")


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


# Settings that only make sense on a GPU. Where there is no CUDA they are changed, so GPU recipes parse and run
# (slowly) on a CPU instead of failing in TrainingArguments (bf16 autocast, checkpointing and pinned memory only
# slow a CPU), and each change is logged. transformers 5 renamed gradient checkpointing to
# `activation_checkpointing` (the old name is an alias).
CPU_DEFAULTS = {
    "use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False, "activation_checkpointing": False,
    "dataloader_pin_memory": False,
}


def _load_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path) as fh:
        try:
            config = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({first_line(err)})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of key: value")
    return config


class RecipeParser(TrlParser):
    """TrlParser with the checks it lacks (see the module docstring); stage scripts use it through `run_cli`."""

    def __init__(self, dataclass_types: Sequence[type]):
        super().__init__(list(dataclass_types))
        self.known = _field_types(dataclass_types)
        self.list_ok = _fields_accepting(dataclass_types, list)
        self.dict_ok = _fields_accepting(dataclass_types, dict)
        self.config_path: str | None = None
        self.config_keys: set[str] = set()
        self.cpu_changes: list[str] = []  # "key before -> after", one per value the CPU defaults changed
        self._before_cpu: dict[str, Any] = {}

    def error(self, message: str):  # argparse would print the whole usage (hundreds of options) and exit
        raise ConfigError(f"command line: {message}")

    def parse_args_and_config(self, args: Sequence[str] | None = None, **kwargs) -> tuple[Any, ...]:
        args = list(sys.argv[1:] if args is None else args)
        args = [part for a in args for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
        if "--config" in args:
            i = args.index("--config")
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError("command line: --config needs the path of a recipe YAML")
            # TrlParser opens the file unchecked: a missing file, bad YAML or a bad `env:` would be a traceback
            self.config_path = args[i + 1]
            config = _load_yaml(self.config_path)
            if not isinstance(config.get("env", {}), dict):
                raise ConfigError(f"{self.config_path}: 'env' must be a mapping of variable: value")
            if not config:  # an empty recipe: all defaults (TrlParser refuses a file that is not a mapping)
                del args[i : i + 2]
        flags = [a[2:].split("=")[0].replace("-", "_") for a in args if a.startswith("--") and a != "--config"]
        unknown = [f for f in flags if f not in self.known and not (f.startswith("no_") and f[3:] in self.known)
                   and f != "help"]
        if unknown:  # HfArgumentParser raises a ValueError listing every unused string
            raise ConfigError(f"command line: unknown option '--{unknown[0]}'")
        try:
            parsed = tuple(super().parse_args_and_config(args=args, **kwargs))
        except RecipeError:
            raise
        except (ValueError, TypeError) as err:  # raised by the dataclasses' __post_init__ checks
            raise ConfigError(f"{self.config_path or 'command line'}: {first_line(err)}") from None
        from_cli = set(flags) | {f[3:] for f in flags if f.startswith("no_")}
        check_values(parsed, lambda key: self.config_path if key in self.config_keys - from_cli else "command line")
        changed = {  # a value the command line set again is not the CPU defaults' doing; None -> False is no change
            key: f"{key} {self._before_cpu[key]} -> {getattr(one, key)}"
            for key in CPU_DEFAULTS if key in self._before_cpu and key not in from_cli for one in parsed
            if hasattr(one, key) and getattr(one, key) == CPU_DEFAULTS[key] != bool(self._before_cpu[key])
        }
        self.cpu_changes = list(changed.values())
        return parsed

    def set_defaults_with_config(self, **config: Any) -> list[str]:
        """The recipe's values become the defaults, each checked and converted first: TrlParser takes them
        unchecked and reports unknown keys only as `--key value` strings."""
        if self.config_path:  # an input named beside the recipe (constitution.json) is taken from there
            from llm_recipes.pipeline import resolve_recipe_paths

            config = resolve_recipe_paths(config, self.config_path)
        for key, value in config.items():
            if key not in self.known:
                raise ConfigError(f"{self.config_path}: unknown key '{key}' "
                                  f"(not a field of {', '.join(sorted(set(self.known.values())))})")
            config[key] = _check_value(self, key, value, self.config_path, key in self.list_ok, key in self.dict_ok)
        self.config_keys = set(config)
        return super().set_defaults_with_config(**config)

    def parse_args_into_dataclasses(self, *args: Any, **kwargs: Any):
        if not torch.cuda.is_available():  # after the recipe's values, before the command line's
            overrides = {k: v for k, v in CPU_DEFAULTS.items() if k in self.known}
            self._before_cpu = {a.dest: a.default for a in reversed(self._actions) if a.dest in overrides}
            self.set_defaults(**overrides)
        return super().parse_args_into_dataclasses(*args, **kwargs)


def parse_config(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `--config recipe.yaml [--key value ...]` into one instance of each dataclass.

    As with TRL's TrlParser: the YAML gives defaults, CLI flags override them, an `env:` block sets environment
    variables. Unknown keys and badly typed values fail first, naming key and file. Where there is no CUDA the
    GPU-only settings are switched off, and each one changed is logged.
    """
    parser = RecipeParser(dataclass_types)
    parsed = parser.parse_args_and_config(args)
    if parser.cpu_changes:
        logger.info("no CUDA: CPU settings applied: %s", ", ".join(parser.cpu_changes))
    return parsed


# ----------------------------------------------------------------------------------------------- nested options
def build_options(cls: type[T], mapping: Any, where: str) -> T:
    """The one strict constructor of a recipe's nested options (a mixture's datasets, curation's sources, pii,
    dedup and routes, pipeline stages, CAI principles): `mapping` -> `cls`. An unknown or missing key, a value of
    the wrong type or one the dataclass's `__post_init__` refuses is a ConfigError naming its path (`where`, e.g.
    `dataset_mixture.datasets[1]`); nested dataclass, list and dict fields are built the same way. (HfArgumentParser
    cannot parse a dataclass-typed field, so recipes keep these as mappings and the stage builds them.)"""
    if isinstance(mapping, cls):
        return mapping
    known = [f.name for f in fields(cls) if f.init and f.metadata.get("recipe", True)]
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: must be a mapping of {', '.join(known)}; got {mapping!r}")
    unknown = sorted(str(k) for k in set(mapping) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(known)})")
    missing = [f.name for f in fields(cls) if f.name in known and mapping.get(f.name) is None
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing '{missing[0]}'")
    hints = typing.get_type_hints(cls)
    values = {key: _convert(hints[key], value, where, key) for key, value in mapping.items()
              if not (value is None and not _admits_none(hints[key]))}  # `key:` left empty keeps the default
    try:
        return cls(**values)
    except RecipeError:
        raise
    except (TypeError, ValueError) as err:  # the dataclass's own __post_init__ checks
        raise ConfigError(f"{where}: {first_line(err)}") from None


def _type_name(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return names.get(origin or hint) or getattr(hint, "__name__", str(hint))


def _convert(hint: Any, value: Any, where: str, key: str) -> Any:
    """`value` of `key` as the type `hint` says (a YAML number for a str field becomes a str), or a ConfigError
    `<where>: <key> must be ...`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = sorted((a for a in args if a is not type(None)), key=lambda a: not _is_instance(value, a))
        for option in options:  # the option the value already is first: `int | float` keeps 50 an int
            try:
                return _convert(option, value, where, key)
            except ConfigError:
                if len(options) == 1:
                    raise
        raise ConfigError(f"{where}: {key} must be {' or '.join(_type_name(a) for a in options)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build_options(hint, value, f"{where}.{key}")
    if origin in (list, frozenset, tuple) or hint in (list, frozenset, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        items = [_convert(args[0] if args else Any, item, where, f"{key}[{i}]") for i, item in enumerate(value)]
        return (origin or hint)(items)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, f"{where}.{key}", str(k)) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        try:
            converted = hint(value) if not isinstance(value, (bool, list, dict)) and value is not None else None
        except (TypeError, ValueError):
            converted = None
        if converted is None or (hint is int and converted != float(value)):
            raise ConfigError(f"{where}: {key} must be {_type_name(hint)}, got {value!r}")
        return converted
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        return str(value)
    return value


def _admits_none(hint: Any) -> bool:
    return hint is Any or type(None) in typing.get_args(hint)


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if not isinstance(origin, type) or (origin in (int, float) and isinstance(value, bool)):
        return False
    return isinstance(value, origin) or (origin in (frozenset, tuple) and isinstance(value, list))


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
        "n_entities", "docs_per_entity", "code_timeout", "code_memory_mb", "code_max_processes", "revision_rounds", "kl_samples",
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
        "save_total_limit", "heldout_texts", "min_frequency", "n_late", "n_unknown",
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
             "redteam_prompts", "jailbreaks", "bias_pairs", "comparison_prompts", "constitution", "few_shot",
             "feedback_log", "original_preferences")
REQUIRED = {
    "ModelArguments": ("model_name_or_path",), "AlignmentModelArguments": ("model_name_or_path",),
    "CAIArguments": ("model_name_or_path",), "EvaluateArguments": ("models",), "TokenizerArguments": ("dataset_name",),
    "UpdateArguments": ("feedback_log", "model_name_or_path"),
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
    from llm_recipes.data_config import DatasetMixtureArguments
    from llm_recipes.evaluation.config import EvaluateArguments
    from llm_recipes.models import check_local_weights, check_tokenizer_source
    from llm_recipes.pretrain_config import PretrainArguments

    for args in parsed:
        values = vars(args)
        for key in REQUIRED.get(type(args).__name__, ()):
            if not values.get(key):
                raise ConfigError(f"{key}: not set")
        if "dataset_mixture" in values and not (values.get("dataset_name") or values.get("dataset_mixture")):
            raise ConfigError("dataset_name: not set (name a dataset, or a dataset_mixture)")
        if isinstance(args, PretrainArguments) and not (args.tokenizer_name_or_path or args.model_name_or_path):
            raise ConfigError("tokenizer_name_or_path: not set (train one with scripts/tokenizer.py)")
        if isinstance(args, PretrainArguments) and not (args.model_size or args.model_name_or_path):
            raise ConfigError("model_size: not set (a named size: tiny, toy, 20m, 125m, 350m, 1b, 8b; or "
                              "model_name_or_path to continue pretraining a model)")
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
        if values.get("dataset_mixture"):  # its keys and types too, before anything loads
            mixture = build_options(DatasetMixtureArguments, values["dataset_mixture"], "dataset_mixture")
            for i, spec in enumerate(mixture.datasets):
                if spec.path:
                    check_data_source(spec.path, f"dataset_mixture.datasets[{i}].path")


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
    from llm_recipes import integrity
    from llm_recipes.redaction import hide_secret_arguments, redact_text, scrub_logs
    from llm_recipes.training import setup_logging

    scrub_logs()
    setup_logging()  # before parsing, so that the CPU settings line shows (the stage sets its own level later)
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
