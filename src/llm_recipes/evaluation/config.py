"""The evaluate stage: `EvaluateArguments` (read by `scripts/evaluate.py` and `llm_recipes.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
                  "answer_regex: gsm8k|regex, filter_list (lm-eval's), until, max_gen_toks: n, k: [1], samples: n}}; "
                  "or a benchmark plug-in: {name: {type: package.module:Class, its own options}} (llm_recipes.evaluation.plugins)."},
    )
    decontamination: bool = field(
        default=True,
        metadata={"help": "Before evaluating, look for each benchmark's items in the training sets of each model's lineage "
                  "(n-gram overlap); results.json `decontamination` and a report section list the contaminated items."},
    )
    decontamination_ngrams: int = field(
        default=12, metadata={"help": "Words per n-gram of the contamination check (datatrove's default: 12)."}
    )
    decontamination_query_ngrams: bool = field(
        default=False,
        metadata={"help": "Also look for n-grams of a question alone (datatrove's find_query_ngrams); by default only "
                  "those of the answer and those straddling question and answer."},
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
    bias_format: str = field(
        default="chat", metadata={"help": "How the audit scores a reply's log-likelihood: chat (the chat template) or "
                                          "plain (plain text after the prompt, as in pretraining).", "choices": ["chat", "plain"]}
    )
    comparison_prompts: str | None = field(
        default=None, metadata={"help": "Prompts (column `question` or `prompt`) for the win rates; other columns reach a reward function."}
    )
    comparison_limit: int | None = field(default=100, metadata={"help": "At most this many comparison prompts."})
    baseline: str | None = field(default=None, metadata={"help": "Model every other is compared with (default: the first)."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward model (sequence classification) for win rates and bias."})
    reward_function: str | None = field(
        default=None, metadata={"help": "Or a Python reward function `module:function`, called as TRL calls reward_funcs: "
                                "`f(prompts=..., completions=..., **columns) -> list[float]`, prompts and replies as text."}
    )
    dataset_split: str = field(default="test", metadata={"help": "Split read from dataset folders or Hub ids."})
    title: str = field(default="Evaluation report", metadata={"help": "Report title."})
    output_dir: str = field(default="runs/eval", metadata={"help": "Where results.json, report.md and report.html go."})
