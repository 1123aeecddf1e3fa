"""Where a stage's data comes from: `DataArguments` (read by `llm_recipes.data`)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
            "test_split_size}. `weight` is the fraction of a dataset's rows kept (as in alignment-handbook; 0.5: a "
            "random half, > 1 repeats rows). Replaces `dataset_name` when set (see DatasetMixtureArguments)."
        },
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "Row format of the data; 'auto' detects it from the columns among the formats of the kind the "
            "stage needs (SFT: messages, sharegpt, alpaca, prompt_completion, text; reward/DPO: ultrafeedback, "
            "preference (explicit or implicit prompt, hh-rlhf text recognised), hh_rlhf; PPO/GRPO/RLOO: prompt, "
            "prompt_from_messages; KTO: unpaired (prompt, completion, label), or any preference format, each pair "
            "split into a desirable and an undesirable example).",
            "choices": ["auto", "messages", "alpaca", "sharegpt", "prompt_completion", "text",
                        "preference", "hh_rlhf", "ultrafeedback", "prompt", "prompt_from_messages", "unpaired"],
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
class MixtureDatasetArguments:
    """One dataset of a `dataset_mixture` (built from the recipe by `llm_recipes.parser.build_options`)."""

    id: str | None = field(default=None, metadata={"help": "Hub id of the dataset (or `path`)."})
    path: str | None = field(default=None, metadata={"help": "Local file or folder (or `id`)."})
    config: str | None = field(default=None, metadata={"help": "Config (subset) name."})
    split: str = field(default="train", metadata={"help": "Split mixed in."})
    columns: list[str] | None = field(default=None, metadata={"help": "Keep only these columns."})
    weight: float = field(default=1.0, metadata={"help": "Fraction of the dataset's rows kept: 0.5 a random half, > 1 repeats rows."})
    format: str = field(default="auto", metadata={"help": "Row format, as `dataset_format`."})
    sample_by: str | None = field(
        default=None, metadata={"help": "Plain text cut per paragraph, line or document (default: text_sample_by)."}
    )

    def __post_init__(self):
        if not (self.id or self.path):
            raise ValueError("needs 'id' (Hub) or 'path' (local)")
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")


@dataclass
class DatasetMixtureArguments:
    """`dataset_mixture`: weighted datasets, concatenated and shuffled (see `llm_recipes.data.load_mixture`)."""

    datasets: list[MixtureDatasetArguments] = field(
        default_factory=list, metadata={"help": "The datasets mixed, at least one."}
    )
    seed: int | None = field(default=None, metadata={"help": "Shuffle seed (default: the stage's seed)."})
    test_split_size: int | float | None = field(
        default=None, metadata={"help": "Hold out this share (< 1) or number of rows of the mixture for evaluation."}
    )

    def __post_init__(self):
        if not self.datasets:
            raise ValueError("'datasets' must list at least one dataset")
