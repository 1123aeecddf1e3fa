"""Evaluate one or several models side by side: lm-eval benchmarks (built-in by name, and the project's own task
types over local files), benchmark plug-ins named by the recipe (see llm_recipes.evaluation.plugins), red teaming
with jailbreak wrappers, counterfactual bias audits, win rates under a reward model or judge, and the training
curves from each model's logs -> results.json, report.md, report.html.

    accelerate launch scripts/evaluate.py --config recipes/toy/evaluate.yaml
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

# This file shares its name with the `evaluate` package: keep scripts/ off the import path so that
# `import evaluate` (lm-eval, our metric modules) finds the package, not this script.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.parser import run_cli
from llm_recipes.errors import ConfigError
from llm_recipes.evaluation.bias import bias_audit
from llm_recipes.evaluation.compare import win_rates
from llm_recipes.evaluation.curves import read_curves
from llm_recipes.evaluation.decontamination import check_contamination
from llm_recipes.decontamination import check_ngrams
from llm_recipes.evaluation.generation import generate_answers
from llm_recipes.evaluation.models import check_model_source, load_for_eval
from llm_recipes.evaluation.plugins import is_plugin_type, load_plugin
from llm_recipes.evaluation.report import markdown_tables, write_report
from llm_recipes.evaluation.safety import make_judge, red_team
from llm_recipes.evaluation.sandbox import Sandbox
from llm_recipes.evaluation.scoring import load_rows, load_scorer
from llm_recipes.evaluation.tasks import local_task_config, run_lm_eval
from llm_recipes.hub import mark_complete, write_text_atomic
from llm_recipes.training import cpu_threads, setup_logging

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (EvaluateArguments,)


def main(args: EvaluateArguments) -> None:
    setup_logging()
    import torch

    torch.set_num_threads(cpu_threads())
    if not args.models:
        raise ConfigError("models: name at least one model (Hub id or local folder)")
    names = args.model_names or args.models
    if len(names) != len(args.models):
        raise ConfigError(f"model_names: {len(names)} names for {len(args.models)} models")
    for path in args.models:
        check_model_source(path)
    if args.decontamination:
        check_ngrams(args.decontamination_ngrams, "decontamination_ngrams")
    baseline = args.baseline or names[0]
    if baseline not in names:
        raise ConfigError(f"baseline: '{baseline}' is not one of the models {names}")

    # 1. everything shared by all models, checked before any model is loaded
    sandbox = dict(timeout=args.code_timeout, memory_mb=args.code_memory_mb, max_processes=args.code_max_processes,
                   allow_unsandboxed=args.allow_unsandboxed_code, allow_weaker_sandbox=args.allow_weaker_sandbox)
    tasks = list(args.tasks or [])
    sandbox_limits = None
    plugin_specs = {name: spec for name, spec in (args.benchmarks or {}).items()
                    if isinstance(spec, dict) and is_plugin_type(spec.get("type"))}
    for name, spec in (args.benchmarks or {}).items():
        if name in plugin_specs:
            continue
        tasks.append(local_task_config({"name": name, **spec}, sandbox, args.max_gen_toks))
        if spec.get("type") == "code" and sandbox_limits is None:
            # bwrap missing, a limit that cannot hold, a sandbox that cannot start: an error now, not after generation
            sandbox_limits = Sandbox(**sandbox).limits
    redteam_rows = load_rows(args.redteam_prompts, args.dataset_split) if args.redteam_prompts else []
    jailbreaks = load_rows(args.jailbreaks) if args.jailbreaks else []
    bias_rows = load_rows(args.bias_pairs, args.dataset_split) if args.bias_pairs else []
    comparison_rows = load_rows(args.comparison_prompts, args.dataset_split)[: args.comparison_limit] if args.comparison_prompts else []
    comparison_prompts = [r.get("question") or r.get("prompt") for r in comparison_rows]
    scorer = load_scorer(args.reward_model, args.reward_function)
    judge_llm = load_for_eval(args.judge_model) if args.judge_model else None
    judge = make_judge(args.judge, refusal_markers=args.refusal_markers, harmful_markers=args.harmful_markers,
                       scorer=scorer, judge_model=judge_llm, refusal_sentence=args.refusal_sentence)
    # plug-ins load their own data and helper models (reference, reward model) now, before any evaluated model
    plugins = [load_plugin(name, spec, args) for name, spec in plugin_specs.items()]

    # 2. each model in turn: benchmarks, red team, bias audit, replies for the comparison, training curves
    results = {"title": args.title, "models": [{"name": n, "path": p} for n, p in zip(names, args.models)],
               "benchmarks": {}, "benchmark_n": {}, "red_team": {}, "bias": {}, "curves": {}, "seconds": {}}
    if sandbox_limits is not None:  # which limits of the code sandbox held on this machine
        results["code_sandbox_limits"] = sandbox_limits
    if args.decontamination:  # each benchmark's items looked for in each model's training data, before any scoring
        results["decontamination"] = check_contamination(
            args, names, args.models, plugins, {"redteam_prompts": redteam_rows, "comparison_prompts": comparison_rows})
    replies = {}
    for name, path in zip(names, args.models):
        start = time.monotonic()
        logger.info("evaluating %s (%s)", name, path)
        model, tokenizer = load_for_eval(path, args.chat_template)
        run = run_lm_eval(model, tokenizer, tasks, num_fewshot=args.num_fewshot, limit=args.limit, batch_size=args.batch_size,
                          apply_chat_template=args.apply_chat_template, task_dirs=args.task_dirs, log_samples=args.log_samples)
        results["benchmarks"][name], results["benchmark_n"][name] = run.scores, run.n_scored
        for plugin in plugins:
            figures = dict(plugin.evaluate(model, tokenizer, name, path))
            if "n" in figures:
                results["benchmark_n"][name][plugin.name] = figures.pop("n")
            if figures:  # a plug-in that only builds tables (a summary) has no figures per model
                results["benchmarks"][name][plugin.name] = figures
        for task, samples in run.samples.items():
            write_text_atomic(Path(args.output_dir) / "samples" / _file_name(name) / f"{_file_name(task)}.jsonl",
                              "".join(json.dumps(s, default=str) + "\n" for s in samples))
        if redteam_rows:
            results["red_team"][name] = red_team(model, tokenizer, redteam_rows, jailbreaks, judge, args.max_new_tokens, args.batch_size)
        if bias_rows:
            results["bias"][name] = bias_audit(model, tokenizer, bias_rows, scorer if args.reward_model else None,
                                               args.bias_answers, args.max_new_tokens, args.batch_size,
                                               chat=args.bias_format == "chat")
        if comparison_prompts:
            replies[name] = [a for a, _ in generate_answers(model, tokenizer, comparison_prompts, args.max_new_tokens, args.batch_size)]
        results["curves"][name] = read_curves(path)
        results["seconds"][name] = round(time.monotonic() - start, 1)
        del model

    # 3. win rates over the baseline, then results.json and the report
    if comparison_prompts and (scorer is not None or judge_llm is not None):
        columns = {k: [r.get(k) for r in comparison_rows] for k in comparison_rows[0] if k not in ("question", "prompt")}
        results["comparison"] = {"baseline": baseline, "scored_by": " and ".join(
            x for x, on in ((getattr(scorer, "name", ""), scorer), (args.judge_model or "", judge_llm)) if on is not None),
            "win_rates": win_rates(replies, comparison_prompts, columns, baseline, scorer, judge_llm)}
    details = {plugin.name: plugin.details() for plugin in plugins}
    if any(details.values()):
        results["benchmark_details"] = {k: v for k, v in details.items() if v}
    extra_tables = [{"title": t, "header": h, "rows": r} for plugin in plugins for t, h, r in plugin.tables()]
    if extra_tables:
        results["extra_tables"] = extra_tables
    lead_tables = [{"title": t, "header": h, "rows": r} for plugin in plugins for t, h, r in plugin.summary_tables(results)]
    if lead_tables:
        results["lead_tables"] = lead_tables
    out = Path(args.output_dir)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    paths = write_report(results, out)
    print("\n" + markdown_tables(results), flush=True)
    logger.info("results: %s; report: %s, %s", out / "results.json", paths["markdown"], paths["html"])
    headline = {k: {f: x for f, x in v.items() if f != "examples"} for k, v in results.get("benchmark_details", {}).items()}
    mark_complete(out, "evaluate", models=names, benchmarks=results["benchmarks"],
                  **({"benchmark_details": headline} if headline else {}))


def _file_name(name: str) -> str:
    """A model or task name (a path, a Hub id) as one file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "_"


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
