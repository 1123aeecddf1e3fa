"""Reward modelling, DPO, GRPO and RLOO: TRL's configs with the project's defaults, and where on-policy
stages get their rewards (read by `llm_recipes.alignment` and `llm_recipes.reward`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, GRPOConfig, RewardConfig, RLOOConfig


@dataclass
class RewardArguments(RewardConfig):
    """Reward modelling (`scripts/reward.py`): TRL's RewardConfig with the project's defaults. The model becomes
    a sequence classifier with one output; pairwise accuracy and margin are measured on the eval split."""

    output_dir: str | None = field(default="runs/reward", metadata={"help": "Checkpoints and the final reward model."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Pairs with a longer side are dropped (eval pairs dropped are counted in the card)."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    eval_strategy: str = field(default="no", metadata={"help": "Evaluate during training too ('steps'/'epoch')."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class DPOArguments(DPOConfig):
    """Direct preference optimisation (`scripts/dpo.py`): TRL's DPOConfig with the project's defaults. With LoRA
    the reference is the model with its adapter disabled (no second copy); `precompute_ref_log_probs` computes
    the reference log-probs once, before training, and frees the reference model."""

    output_dir: str | None = field(default="runs/dpo", metadata={"help": "Checkpoints and the final policy."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate (AdamW)."})
    max_length: int | None = field(default=1024, metadata={"help": "Prompt + completion tokens (longer is truncated)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class RewardSourceArguments:
    """Where on-policy RL stages get their rewards from."""

    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (the output of scripts/reward.py): folder or Hub id."}
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions: dotted paths to Python callables, called as TRL calls them: "
            "`f(prompts=..., completions=..., **kwargs) -> list[float]` (dataset columns arrive as keyword lists; "
            "GRPO/RLOO also pass completion_ids, trainer_state, ...), or reward model folders/Hub ids; added to "
            "`reward_model_path`. PPO takes one reward: a reward model or one function."
        },
    )
    allow_reward_tokenizer_mismatch: bool = field(
        default=False,
        metadata={
            "help": "Accept a reward model whose tokenizer differs from the policy's: texts are decoded and "
            "re-tokenized for it. Off: a mismatch is an error (it usually means the wrong reward model)."
        },
    )


@dataclass
class GRPOArguments(GRPOConfig):
    """GRPO (`scripts/grpo.py`): TRL's GRPOConfig; rewards from `RewardSourceArguments` (reward model and/or
    Python functions, weighted by `reward_weights`)."""

    output_dir: str | None = field(default="runs/grpo", metadata={"help": "Checkpoints and the final policy."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class RLOOArguments(RLOOConfig):
    """RLOO (`scripts/rloo.py`): TRL's RLOOConfig; rewards from `RewardSourceArguments`."""

    output_dir: str | None = field(default="runs/rloo", metadata={"help": "Checkpoints and the final policy."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})
