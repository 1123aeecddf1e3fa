"""The stage registry: every stage the project runs, its script and a one-line help. `llm-recipes --help`,
`llm-recipes <stage>`, pipelines and the README's stage table all read this list (tests check that it and
scripts/ name the same stages).

Importing this module imports nothing heavy: a stage's config classes are its script's `CONFIG_CLASSES`, read
only when asked for (`config_classes`), so `llm-recipes --help` starts at once.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from llm_recipes import PROJECT_ROOT
from llm_recipes.errors import ConfigError


@dataclass(frozen=True)
class StageInfo:
    name: str
    help: str

    @property
    def script(self) -> Path:
        """The stage script (inside the checkout, or the copy shipped with an installed package)."""
        return PROJECT_ROOT / "scripts" / f"{self.name}.py"

    def config_classes(self) -> tuple[type, ...]:
        """The dataclasses the stage parses its recipe into (the script's CONFIG_CLASSES; imports the script)."""
        return load_script(self.script).CONFIG_CLASSES


STAGES: tuple[StageInfo, ...] = (
    StageInfo("toy_data", "generate the toy world's datasets (corpus, raw sources, SFT, preferences, held-out sets)"),
    StageInfo("curate", "curate raw sources with datatrove: filters, PII removal, dedup, cutoff, mixing"),
    StageInfo("tokenizer", "train a byte-level BPE tokenizer with a chat template; reports bytes per token"),
    StageInfo("pretrain", "pretrain a Llama-style model from scratch (packed documents, validation perplexity)"),
    StageInfo("sft", "supervised fine-tuning with TRL's SFTTrainer (full, LoRA, QLoRA)"),
    StageInfo("reward", "train a reward model on preference pairs (TRL RewardTrainer); pairwise accuracy"),
    StageInfo("dpo", "direct preference optimisation with TRL's DPOTrainer"),
    StageInfo("kto", "KTO on unpaired good/bad labels (or pairs split into them) with TRL's KTOTrainer"),
    StageInfo("orpo", "ORPO: SFT and preference in one stage, no reference model (TRL experimental ORPOTrainer)"),
    StageInfo("simpo", "SimPO: reference-free, length-normalised preference loss (TRL experimental CPOTrainer)"),
    StageInfo("online_dpo", "online DPO: the policy samples pairs, a reward model judges them (TRL experimental)"),
    StageInfo("ppo", "RLHF with PPO against a reward model (the project's own PPO trainer)"),
    StageInfo("grpo", "GRPO with TRL's GRPOTrainer (reward models and/or reward functions)"),
    StageInfo("rloo", "RLOO with TRL's RLOOTrainer (reward models and/or reward functions)"),
    StageInfo("cai", "Constitutional AI data: answer, critique against a principle, revision (or AI feedback)"),
    StageInfo("evaluate", "evaluate models side by side: lm-eval tasks, red teaming, bias, win rates -> report.html"),
    StageInfo("distill", "distil a teacher into a smaller student (same tokenizer) with GKD or TRL's DistillationTrainer"),
    StageInfo("export", "merge, quantize (bnb 4-bit/8-bit, torchao int8), measure, write the lineage card, push"),
)
# Scripts that are not stages of the model pipeline: `llm-recipes serve` runs until stopped, `llm-recipes update` runs
# stages itself (DPO and evaluate, as a pipeline) around a served model's feedback, and `toy_users` serves a model to
# the toy world's simulated users (the first step of recipes/toy/pipeline_deploy.yaml, whose second is update).
SERVICES: tuple[StageInfo, ...] = (
    StageInfo("serve", "serve a model over an OpenAI-compatible API behind a guard (filters, limits, request log)"),
    StageInfo("update", "feedback in a serve log -> preference pairs -> DPO -> evaluation -> release if the gates hold"),
    StageInfo("toy_users", "the toy deploy branch: serve a model in-process to simulated users over HTTP; monitor summary"),
)
BY_NAME = {stage.name: stage for stage in STAGES}
DEFAULT_ACCELERATE_CONFIG = "accelerate_configs/single.yaml"  # a stage launched without one: one process


def get_stage(name: str) -> StageInfo:
    if name not in BY_NAME:
        raise ConfigError(f"no stage '{name}' (stages: {', '.join(BY_NAME)})")
    return BY_NAME[name]


_LOADED: dict[Path, ModuleType] = {}


def load_script(path: str | Path) -> ModuleType:
    """Import a stage script from its file without running it (its stage runs only under __main__)."""
    path = Path(path).resolve()
    if path not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"_llm_recipes_stage_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[path] = module
    return _LOADED[path]
