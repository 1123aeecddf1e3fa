"""Benchmark plug-ins of the evaluate stage: a measurement that is not an lm-eval task (several models at once, a
reference model, a reward model, figures of its own), written outside the library and named by a recipe.

A recipe names a plug-in under `benchmarks:`, with `type:` the import path of its class (a type without ':' is
one of the project's lm-eval task types):

    benchmarks:
      refusals:
        type: my_benchmarks.safety:RefusalBenchmark
        prompts: data/heldout_prompts.jsonl      # the plug-in's own options (its `Options` dataclass)

The class is imported when the stage runs, so the library imports a plug-in's package only because a recipe names
it. The interface (subclass `BenchmarkPlugin`):

- `Options`: a dataclass of the plug-in's own keys; the entry's other keys are built into it by the recipe parser's
  strict constructor (an unknown key, a missing one or a value of the wrong type is a one-line error naming
  `benchmarks.<name>.<key>`).
- `__init__(name, options, args)`: `args` is the stage's EvaluateArguments (models, batch_size, max_new_tokens, ...).
  Runs before any evaluated model loads: check and load the plug-in's data and helper models here, so that bad input
  stops the stage at once.
- `evaluate(model, tokenizer, name, path) -> {metric: number}`: called once per evaluated model, with the model and
  tokenizer the stage loaded (chat template and EOS as in training). The figures go to results.json under
  `benchmarks.<model>.<plug-in name>` and into the report's Benchmarks table; an `n` entry (examples scored) goes
  to `benchmark_n` instead.
- `details() -> dict`: JSON for results.json's `benchmark_details.<plug-in name>` (examples, figures that are not a
  model's); default none.
- `tables() -> [(title, header, rows)]`: extra tables for the report; default none.
- `summary_tables(results) -> [(title, header, rows)]`: tables that open the report, built once every model is
  evaluated from the whole results (every benchmark's figures, the bias audit, ...); default none.
- `decontamination_items() -> [BenchmarkItem(query, label)]`: the items the stage's contamination check looks for
  in each model's training data (llm_recipes.decontamination); default: the rows of every option that names a local
  data file (.jsonl, .jsonl.gz, .parquet, .csv) or a dataset folder with the stage's `dataset_split`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, ClassVar

from llm_recipes.errors import ConfigError


class BenchmarkPlugin:
    """Base class of a benchmark plug-in (see the module docstring)."""

    Options: ClassVar[type | None] = None

    def __init__(self, name: str, options: Any, args: Any) -> None:
        self.name, self.options, self.args = name, options, args

    def key(self, option: str) -> str:
        """How errors name one of this plug-in's options: `benchmarks.<name>.<option>`."""
        return f"benchmarks.{self.name}.{option}"

    def evaluate(self, model, tokenizer, name: str, path: str) -> dict[str, float]:
        raise NotImplementedError

    def details(self) -> dict:
        return {}

    def tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        return []

    def summary_tables(self, results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        return []

    def decontamination_items(self) -> list:
        from llm_recipes.evaluation.decontamination import option_items

        return option_items(self.options, getattr(self.args, "dataset_split", "test"))


def is_plugin_type(kind: object) -> bool:
    """A `type:` naming a plug-in class (`package.module:Class`) rather than a built-in task type."""
    return isinstance(kind, str) and ":" in kind


def import_plugin(dotted: str, key: str) -> type[BenchmarkPlugin]:
    module_name, _, class_name = dotted.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{key}: cannot import '{dotted}' ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, BenchmarkPlugin)):
        raise ConfigError(f"{key}: '{dotted}' is not a BenchmarkPlugin subclass")
    return cls


def load_plugin(name: str, spec: dict, args: Any) -> BenchmarkPlugin:
    """The plug-in a `benchmarks:` entry names, built with its options (see the module docstring)."""
    from llm_recipes.parser import build_options

    where = f"benchmarks.{name}"
    options = {k: v for k, v in spec.items() if k != "type"}
    cls = import_plugin(spec["type"], f"{where}.type")
    if cls.Options is None:
        if options:
            raise ConfigError(f"{where}: unknown key '{next(iter(options))}' (this plug-in takes no options)")
        return cls(name, None, args)
    for f in dataclasses.fields(cls.Options):
        if f.name not in options and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{f.name}: not set")
    return cls(name, build_options(cls.Options, options, where), args)
