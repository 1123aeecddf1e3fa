"""Constitutional AI data generation: `CAIArguments` (read by `llm_recipes.cai`)."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class PrincipleArguments:
    """One principle of a constitution file (built by `llm_recipes.parser.build_options`)."""

    critique_request: str = field(default="", metadata={"help": "How to ask for a critique of the last answer."})
    revision_request: str = field(default="", metadata={"help": "How to ask for a revision after the critique."})
    name: str | None = field(default=None, metadata={"help": "Name (default: principle_<n>)."})
    comparison: str | None = field(
        default=None, metadata={"help": "AI feedback: the question that compares two answers (default: a general one)."}
    )

    def __post_init__(self):
        for key in ("critique_request", "revision_request"):
            if not getattr(self, key).strip():
                raise ValueError(f"'{key}' is missing or empty")
        if self.comparison is not None and not self.comparison.strip():
            raise ValueError("'comparison' must be a non-empty string")
