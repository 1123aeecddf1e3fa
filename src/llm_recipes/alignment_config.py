"""Reward modelling, DPO, KTO, ORPO, SimPO, online DPO, GRPO and RLOO: TRL's configs with the project's defaults,
and where on-policy stages get their rewards (read by `llm_recipes.alignment` and `llm_recipes.reward`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, RLOOConfig

with warnings.catch_warnings():  # TRL warns that trl.experimental may change: every stage imports this module, and
    warnings.simplefilter("ignore")  # docs/methods.md says which stages stand on experimental TRL
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.online_dpo import OnlineDPOConfig
    from trl.experimental.orpo import ORPOConfig


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
class KTOArguments(KTOConfig):
    """KTO (`scripts/kto.py`): TRL's KTOConfig with the project's defaults. Trains on unpaired examples (a
    completion labelled desirable or not); preference pairs are split into one of each. `desirable_weight` and
    `undesirable_weight` balance the two: KTO's paper advises desirable_weight x desirables / (undesirable_weight x
    undesirables) in [1, 4/3] (the stage logs the counts and warns outside it). TRL reads the rows in order (its KL
    estimate pairs each example with its neighbour's completion), so the stage shuffles them once with `seed`."""

    output_dir: str | None = field(default="runs/kto", metadata={"help": "Checkpoints and the final policy."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (AdamW)."})
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
class OnlineDPOArguments(OnlineDPOConfig, RewardSourceArguments):
    """Online DPO (`scripts/online_dpo.py`): TRL's OnlineDPOConfig with the project's defaults and reward sources
    (`RewardSourceArguments`: the reward model and/or Python functions, weighted by `reward_weights`). Each step the
    policy samples two completions per prompt; the one the rewards score higher is `chosen`, and the DPO loss against
    the starting policy (the reference) is taken on that pair."""

    output_dir: str | None = field(default="runs/online_dpo", metadata={"help": "Checkpoints and the final policy."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (the output of scripts/reward.py): folder or Hub id."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens sampled per completion at most."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})
    log_pairs_steps: int = field(
        default=0,
        metadata={
            "help": "Every this many steps (the first included), append the sampled pairs (prompt, both completions "
            "with their token ids, rewards, which was chosen) to <output_dir>/sampled_pairs.jsonl; 0: never. A run "
            "resumed from a checkpoint appends the steps after it, so a killed run's last steps may appear twice."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.log_pairs_steps < 0:
            raise ValueError(f"log_pairs_steps: must be 0 (never) or a number of steps, got {self.log_pairs_steps}")
        if self.eval_strategy != "no":
            # TRL 1.16's OnlineDPOTrainer keeps Trainer's eval loop, which feeds its prompt-only batches to the model
            # ("You must specify exactly one of input_ids or inputs_embeds", after training): refused here instead
            raise ValueError(f"eval_strategy: '{getattr(self.eval_strategy, 'value', self.eval_strategy)}' is not "
                             "possible: TRL's online DPO has no eval loop (it trains on pairs it samples); evaluate "
                             "the output instead")


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


@dataclass
class ORPOArguments(ORPOConfig):
    """ORPO (`scripts/orpo.py`): TRL's experimental ORPOConfig with the project's defaults. One stage does SFT and
    preference: the NLL of the chosen reply plus `beta` times the log odds ratio of chosen over rejected; no
    reference model, so it can start from the pretrained model."""

    output_dir: str | None = field(default="runs/orpo", metadata={"help": "Checkpoints and the final policy."})
    learning_rate: float = field(default=8e-6, metadata={"help": "Peak learning rate (AdamW)."})
    beta: float = field(
        default=0.1,
        metadata={"help": "Weight of the odds-ratio (preference) term against the chosen reply's NLL (lambda in the "
                          "ORPO paper, 0.1 there)."},
    )
    max_length: int | None = field(
        default=1024, metadata={"help": "Prompt + completion tokens (a longer completion is truncated)."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class SimPOArguments(CPOConfig):
    """SimPO (`scripts/simpo.py`): TRL's experimental CPOConfig with SimPO's loss and defaults: the reward of a reply
    is `beta` times its mean per-token log-prob (length-normalised, no reference model), and the loss asks the
    chosen reward to beat the rejected one by the margin `simpo_gamma`."""

    output_dir: str | None = field(default="runs/simpo", metadata={"help": "Checkpoints and the final policy."})
    loss_type: str = field(
        default="simpo",
        metadata={"help": "simpo (this stage's loss). sigmoid, hinge or ipo give CPO's other losses on the same "
                          "trainer.", "choices": ["sigmoid", "hinge", "ipo", "simpo"]},
    )
    cpo_alpha: float = field(
        default=0.0,
        metadata={"help": "Weight of an NLL term on the chosen reply (CPO's behaviour cloning regulariser). 0 is pure "
                          "SimPO, as in the SimPO paper; > 0 is CPO-SimPO."},
    )
    beta: float = field(
        default=2.0,
        metadata={"help": "Scale of the length-normalised reward (the SimPO paper's recipes use 2.0-2.5; CPO's 0.1 "
                          "is far too small for it)."},
    )
    simpo_gamma: float = field(
        default=1.0,
        metadata={"help": "Target reward margin gamma (the SimPO paper's recipes: gamma/beta about 0.5)."},
    )
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate (AdamW)."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Prompt + completion tokens (a longer completion is truncated)."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})
