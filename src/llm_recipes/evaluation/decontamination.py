"""The evaluate stage's contamination check, run before any model is evaluated: for each model, the training sets
its lineage lists (`llm_recipes.release.lineage`: completion markers and recipes back to the data), and for each
benchmark, how many of its items share an n-gram with those training sets (`llm_recipes.decontamination`).

A model whose lineage cannot be read to its data (a Hub id, a folder without a completion marker) has training
data "unknown"; one whose lineage reaches a Hub model or dataset as well as local data is "partial".
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.decontamination import (DATA_SUFFIXES, BenchmarkItem, Hit, ItemIndex, NGramHasher, check_ngrams,
                                         item_of_row, strings_of)
from llm_recipes.errors import RecipeError, first_line

logger = logging.getLogger(__name__)

EXAMPLES = 3  # contaminated items shown per model and benchmark
MODEL_FILES = ("config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json")
SAVED_DATASET_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
# stages whose inputs no model trains on: the curated corpus is read, not the raw sources curation filtered
NOT_TRAINING = ("tokenizer", "curate", "toy_data", "cai", "evaluate", "export")
DATA_STAGES = ("curate", "toy_data", "cai")  # stages whose output is data, not a model


@dataclass
class TrainingData:
    """The training sets a model's lineage lists, and what in its lineage hides data we cannot read."""

    datasets: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.datasets:
            return "unknown"
        return "partial" if self.unknown else "known"


def _is_model_or_tokenizer(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in MODEL_FILES)


def training_data(model: str) -> TrainingData:
    """Every local dataset an ancestor stage of `model` read (tokenizer training aside), and the ancestors whose
    data is out of reach: Hub ids, model folders without a completion marker."""
    from llm_recipes.hub import read_marker
    from llm_recipes.release import _local, lineage

    found = TrainingData()
    try:
        nodes = lineage(model)
    except (OSError, ValueError) as err:  # an unreadable marker or recipe: what the model saw is not known
        found.unknown.append(f"{model} (lineage unreadable: {first_line(err)})")
        return found
    if nodes[-1]["kind"] != "stage":  # the model itself: a Hub id, or a folder no stage of ours made
        found.unknown.append(f"{model} ({'Hub model' if nodes[-1]['kind'] == 'hub' else 'no completion marker'})")
        return found
    for node in nodes:
        if node["kind"] != "stage" or node.get("stage") in NOT_TRAINING:
            continue
        for ref in node["inputs"]:
            path = _local(ref)
            marker = read_marker(path) if path is not None and path.is_dir() else None
            if marker is not None and marker.get("stage") not in DATA_STAGES:
                continue  # a model (or tokenizer) made by a stage of this lineage: its own inputs are walked
            if path is None:
                entry = f"{ref} (Hub)"
            elif _is_model_or_tokenizer(path):
                if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
                    continue  # a tokenizer
                entry = f"{ref} (model without completion marker)"
            else:
                if path.resolve() not in {_local(d).resolve() for d in found.datasets}:
                    found.datasets.append(ref)
                continue
            if entry not in found.unknown:
                found.unknown.append(entry)
    return found


def _rows_of_files(files: list[str]) -> Iterator[dict]:
    from llm_recipes.evaluation.tasks import _rows

    for path in files:
        for _, row in _rows(path):
            yield row


def folder_rows(path: Path, split: str | None) -> Iterator[dict]:
    """The rows of a dataset folder (any layout the data loader reads): `split`, none where it lacks it; or, with
    split None, its train split where it has one, else every split."""
    from llm_recipes.data import load_source

    loaded = load_source(str(path), split=None)
    names = [split] if split is not None else (["train"] if "train" in loaded else list(loaded))
    for name in names:
        yield from loaded[name] if name in loaded else ()


def training_rows(ref: str) -> Iterator[dict]:
    """The rows of a local training set: its train split where it has one, else every split."""
    from llm_recipes.data import load_source
    from llm_recipes.evaluation.tasks import _builder
    from llm_recipes.release import _local

    path = _local(ref)
    if path.is_file():
        yield from (_rows_of_files([str(path)]) if _builder(str(path)) else load_source(str(path)))
    else:
        yield from folder_rows(path, None)


def _limited(items: list, limit: float | None) -> list:
    """The items lm-eval scores under `limit`: the first N, or the first ceil(fraction * len)."""
    if limit is None:
        return items
    return items[: int(math.ceil(len(items) * limit)) if limit < 1.0 else int(limit)]


def local_task_items(spec: dict, limit: float | None) -> list[BenchmarkItem]:
    """The scored items of one of the project's lm-eval task entries ({type, data_files, split, ...})."""
    from llm_recipes.evaluation.tasks import _data_splits

    data = spec["data_files"]
    if data == "humaneval":
        from llm_recipes.evaluation.code import humaneval_path

        data = str(humaneval_path())
    files = _data_splits(os.path.abspath(data))[spec.get("split") or "test"]
    return _limited([item for item in map(item_of_row, _rows_of_files(files)) if item is not None], limit)


def _is_dataset_folder(path: Path) -> bool:
    if any((path / name).is_file() for name in SAVED_DATASET_FILES):
        return True
    return not _is_model_or_tokenizer(path) and any(
        str(f).endswith(DATA_SUFFIXES) for f in path.rglob("*") if f.is_file())


def option_items(options: Any, split: str) -> list[BenchmarkItem]:
    """A plug-in's items by default: the rows of every option that names a local data file (.jsonl, .jsonl.gz,
    .parquet, .csv) or a dataset folder with `split`."""
    import dataclasses

    from llm_recipes.data import load_source

    items: list[BenchmarkItem] = []
    if options is None or not dataclasses.is_dataclass(options):
        return items
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if not isinstance(value, str) or not os.path.exists(value):
            continue
        path = Path(value)
        if path.is_file() and value.endswith(DATA_SUFFIXES):
            rows = list(_rows_of_files([value])) if not value.endswith(".csv") else list(load_source(value))
        elif path.is_dir() and _is_dataset_folder(path):
            rows = list(folder_rows(path, split))  # none where the folder has no such split (a training corpus)
        else:
            continue
        items += [item for item in map(item_of_row, rows) if item is not None]
    return items


def evaluated_items(args, plugins: list, prompt_sets: dict[str, list[dict]] | None = None
                    ) -> tuple[dict[str, list[BenchmarkItem]], dict[str, str]]:
    """Items of every benchmark the stage runs (and of its prompt sets: red-team and comparison prompts), and the
    benchmarks that cannot be checked (why)."""
    from llm_recipes.evaluation.plugins import is_plugin_type

    items: dict[str, list[BenchmarkItem]] = {}
    not_checked: dict[str, str] = {}
    for task in args.tasks or []:
        not_checked[task] = "lm-eval task by name: its data is not read here"
    for name, spec in (args.benchmarks or {}).items():
        if not is_plugin_type(spec.get("type")):
            items[name] = local_task_items(spec, args.limit)
    for plugin in plugins:
        found = plugin.decontamination_items()
        if found:
            items[plugin.name] = found
        else:
            not_checked[plugin.name] = "the plug-in names no local benchmark data"
    for name, rows in (prompt_sets or {}).items():
        found = [item for item in map(item_of_row, rows) if item is not None]
        if found:
            items[name] = found
    return items, not_checked


def check_contamination(args, names: list[str], paths: list[str], plugins: list,
                        prompt_sets: dict[str, list[dict]] | None = None) -> dict:
    """results.json's `decontamination`: per model, its training data and, per benchmark (and prompt set), the
    items that share an n-gram with it (count, share of the items, examples with the n-gram)."""
    start = time.monotonic()
    n = check_ngrams(args.decontamination_ngrams, "decontamination_ngrams")
    items, not_checked = evaluated_items(args, plugins, prompt_sets)
    index = ItemIndex(NGramHasher(n, args.decontamination_query_ngrams), items)
    hits_by_dataset: dict[str, dict[tuple[str, int], Hit]] = {}
    section: dict[str, Any] = {
        "n_grams": n, "query_ngrams": args.decontamination_query_ngrams,
        "benchmarks": {b: {"items": len(its), "checkable": index.checkable[b]} for b, its in items.items()},
        "not_checked": not_checked, "models": {},
    }
    for name, path in zip(names, paths):
        data = training_data(path)
        for ref in list(data.datasets):
            if ref not in hits_by_dataset:
                try:
                    hits_by_dataset[ref] = index.scan((s for row in training_rows(ref) for s in strings_of(row)), ref)
                except (RecipeError, OSError, ValueError) as err:  # a lineage dataset we cannot read
                    logger.warning("contamination check: cannot read %s (%s)", ref, first_line(err))
                    hits_by_dataset[ref] = None
            if hits_by_dataset[ref] is None:
                data.datasets.remove(ref)
                data.unknown.append(f"{ref} (unreadable)")
        entry: dict[str, Any] = {"training_data": data.status, "datasets": data.datasets, "unknown": data.unknown,
                                 "benchmarks": {}}
        if data.datasets:
            hits: dict[tuple[str, int], Hit] = {}
            for ref in data.datasets:
                for key, hit in hits_by_dataset[ref].items():
                    hits.setdefault(key, hit)
            for bench, its in items.items():
                found = sorted(i for b, i in hits if b == bench)
                entry["benchmarks"][bench] = {
                    "contaminated": len(found), "share": len(found) / len(its) if its else 0.0,
                    "examples": [{"item": i, "text": its[i].text(), "ngram": hits[(bench, i)].ngram,
                                  "dataset": hits[(bench, i)].source} for i in found[:EXAMPLES]],
                }
        section["models"][name] = entry
        logger.info("contamination check of %s: training data %s (%d sets)", name, data.status, len(data.datasets))
    section["seconds"] = round(time.monotonic() - start, 2)
    return section


def report_tables(section: dict | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's contamination tables: contaminated items per benchmark and model, the training data searched,
    and example items (each once, with the models whose data hold it)."""
    if not section:
        return []
    models = list(section["models"])
    counts = []
    for bench, sizes in section["benchmarks"].items():
        cells = []
        for model in models:
            figures = section["models"][model]["benchmarks"].get(bench)
            cells.append("unknown" if figures is None else f"{figures['contaminated']} ({figures['share']:.1%})")
        counts.append([bench, str(sizes["items"]), str(sizes["checkable"]), *cells])
    for bench, why in section.get("not_checked", {}).items():
        counts.append([f"{bench} (not checked: {why})", "-", "-", *["-"] * len(models)])
    data = [[model, entry["training_data"], ", ".join(entry["datasets"]) or "-", "; ".join(entry["unknown"]) or "-"]
            for model, entry in section["models"].items()]
    examples: dict[tuple[str, int, str, str], list[str]] = {}
    for model, entry in section["models"].items():
        for bench, figures in entry["benchmarks"].items():
            for ex in figures["examples"]:
                examples.setdefault((bench, f"#{ex['item']}: {ex['text']}", ex["ngram"], ex["dataset"]), []).append(model)
    n = section["n_grams"]
    out = [(f"Contamination: benchmark items sharing a {n}-gram with the model's training data (count, share)",
            ["benchmark", "items", "items with a " + f"{n}-gram", *models], counts),
           ("Training data searched for benchmark items (from each model's lineage)",
            ["model", "training data", "training sets", "not searched"], data)]
    if examples:
        out.append(("Contaminated items (examples)", ["benchmark", "item", "n-gram", "found in", "models"],
                    [[*key, ", ".join(names)] for key, names in examples.items()]))
    return out
