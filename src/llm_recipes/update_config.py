"""One update round of a served model: `UpdateArguments` (read by `scripts/update.py` and `llm_recipes.update`) and
its gates (`GateArguments`, built from the recipe by `llm_recipes.parser.build_options`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UpdateArguments:
    """Feedback in the serve log -> preference pairs -> DPO -> evaluation against the served model -> release if
    no gate metric regresses beyond its tolerance (`scripts/update.py`)."""

    feedback_log: str | None = field(
        default=None, metadata={"help": "The serve log (JSONL written by `llm-recipes serve`) holding the replies and "
                                "their feedback (ratings, choices)."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The served model (the version the feedback is about): the DPO stage starts "
                                "from it and the evaluation compares the new version with it."}
    )
    output_dir: str = field(
        default="runs/update", metadata={"help": "Folder of the round: feedback_pairs/, dpo/, evaluate/, the derived "
                                         "recipes and pipeline.yaml, and (gates passed) release/."}
    )
    release_dir: str | None = field(
        default=None, metadata={"help": "Where the new version is released when every gate passes (default: "
                                "<output_dir>/release). Nothing is written there when a gate fails."}
    )
    dpo_config: str = field(
        default="recipes/toy/dpo.yaml",
        metadata={"help": "DPO recipe the round trains with; its model_name_or_path, data and output_dir are replaced "
                  "(the served model, the feedback pairs, <output_dir>/dpo)."},
    )
    dpo_args: list[str] | None = field(
        default=None, metadata={"help": "More flags for the DPO stage, e.g. [--max_steps, '20']."}
    )
    original_preferences: str | None = field(
        default=None,
        metadata={"help": "Preference data mixed with the feedback pairs (a dataset_mixture of the DPO stage), so the "
                  "new version keeps what the first round taught; unset: the feedback pairs alone."},
    )
    original_weight: float = field(
        default=1.0, metadata={"help": "Fraction of original_preferences' rows mixed in (> 1 repeats rows)."}
    )
    feedback_weight: float = field(
        default=1.0, metadata={"help": "Weight of the feedback pairs in the mixture with original_preferences (> 1 "
                               "repeats them: feedback is scarce beside the original data)."}
    )
    evaluate_config: str = field(
        default="recipes/toy/evaluate/alignment.yaml",
        metadata={"help": "Evaluate recipe giving the benchmarks; its models, model_names, baseline and output_dir "
                  "are replaced (the served model and the new one, in one run)."},
    )
    evaluate_args: list[str] | None = field(default=None, metadata={"help": "More flags for the evaluate stage."})
    served_name: str = field(default="served", metadata={"help": "The served model's name in the evaluation."})
    candidate_name: str = field(default="candidate", metadata={"help": "The new version's name in the evaluation."})
    gates: list[dict] | None = field(
        default=None,
        metadata={"help": "Gate metrics: [{metric: <benchmark>/<metric> or red_team/<metric>, better: higher|lower, "
                  "tolerance, relative, proportion, rows_kind}] (see GateArguments). The new version is released only "
                  "if no gate regresses beyond its tolerance."},
    )
    star_threshold: int = field(
        default=4, metadata={"help": "Star ratings (1-5): a reply rated at least this is good, at most "
                             "6 - star_threshold bad (the rest is neither)."}
    )
    accelerate_config: str = field(
        default="accelerate_configs/single.yaml", metadata={"help": "Launcher config of the DPO and evaluate stages."}
    )
    verbose: bool = field(default=False, metadata={"help": "Show the stages' own output here, not in their logs."})

    def __post_init__(self) -> None:
        if self.star_threshold not in (4, 5):
            raise ValueError(f"key 'star_threshold' must be 4 or 5, got {self.star_threshold!r}")
        for key in ("original_weight", "feedback_weight"):
            if not getattr(self, key) > 0:
                raise ValueError(f"key '{key}' must be > 0, got {getattr(self, key)!r}")
        if self.served_name == self.candidate_name:
            raise ValueError("keys 'served_name' and 'candidate_name' must differ")


@dataclass
class GateArguments:
    """One entry of `gates:`: a metric of the evaluation that the new version must not make worse beyond `tolerance`."""

    metric: str = field(metadata={"help": "<benchmark>/<metric> (results.json `benchmarks`) or red_team/<metric>."})
    better: str = field(default="higher", metadata={"help": "higher or lower: which way is an improvement."})
    tolerance: float = field(default=0.0, metadata={"help": "Largest regression allowed (in the metric's units, or "
                                                    "a share of the served value with relative)."})
    relative: bool = field(default=False, metadata={"help": "tolerance is a share of the served model's value "
                                                    "(0.02: 2%), e.g. for bits per byte."})
    proportion: bool = field(default=True, metadata={"help": "The metric is a share of items (a rate): its delta gets "
                                                     "a 95% interval (Newcombe). false for other figures (no interval)."})
    rows_kind: str | None = field(
        default=None, metadata={"help": "For a plug-in whose metrics each count one kind of row (results.json "
                                "benchmark_details.<benchmark>.rows_per_kind): the kind this metric divides by."}
    )

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"key 'better' must be higher or lower, got {self.better!r}")
        if "/" not in self.metric:
            raise ValueError(f"key 'metric' must be <benchmark>/<metric> or red_team/<metric>, got {self.metric!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"key 'tolerance' must be >= 0, got {self.tolerance!r}")
