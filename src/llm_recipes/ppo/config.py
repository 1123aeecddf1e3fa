"""The project's PPO stage: `PPOArguments` (read by `llm_recipes.ppo.trainer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class PPOArguments(TrainingArguments):
    """RLHF with PPO (`scripts/ppo.py`, the project's own trainer: `llm_recipes.ppo`). Names follow TRL's last
    PPOArguments. One update: sample `rollout_batch_size = per_device_train_batch_size x gradient_accumulation_steps
    x num_mini_batches` prompts, generate, score with the reward model, then `num_ppo_epochs` passes over the
    rollouts in `num_mini_batches` minibatches."""

    output_dir: str | None = field(default="runs/ppo", metadata={"help": "Checkpoints and the final policy."})
    learning_rate: float = field(default=3e-6, metadata={"help": "Peak learning rate (AdamW), policy and value."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Prompts to roll out in all; unset: num_train_epochs x the dataset."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches per rollout batch (one step each)."})
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per forward pass when generating and scoring rollouts."}
    )
    response_length: int = field(default=53, metadata={"help": "Most tokens generated per response."})
    max_prompt_length: int = field(default=512, metadata={"help": "Longer prompts are cut from the left."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probs use it too)."})
    stop_token: str | None = field(
        default="eos", metadata={"help": "'eos': a response ends at the tokenizer's EOS (end of turn); None: never."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a response that does not end with EOS."}
    )
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty coefficient (beta)."})
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "Per-token KL estimate: k1 (log-ratio, unbiased, can be negative per token) or k3 "
            "((r - 1) - log r, never negative, lower variance).",
            "choices": ["k1", "k3"],
        },
    )
    cliprange: float = field(default=0.2, metadata={"help": "PPO clip range of the probability ratio."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value update."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards (no mean shift)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages per rollout batch."})
    value_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Separate value model (e.g. the reward model: a sequence classifier whose head scores every "
            "token). Unset: a value head on the policy (shared trunk), initialised to zero."
        },
    )
    value_head_init_std: float = field(
        default=0.0, metadata={"help": "Std of the value head's initial weights (0: zero, so first values are 0)."}
    )
    ref_model_path: str | None = field(
        default=None,
        metadata={"help": "Frozen reference policy for the KL penalty. Unset: the starting policy (with LoRA: the "
                  "policy with its adapter disabled, no second copy)."},
    )
    trust_remote_code: bool = field(  # TRL keeps it on its trainer configs; TrainingArguments has none
        default=False, metadata={"help": "Allow custom model code from the Hub (policy, reference and tokenizer)."}
    )
    num_sample_generations: int = field(
        default=4, metadata={"help": "Sample responses printed at each logging step (0: none)."}
    )
    ptx_coef: float = field(
        default=0.0,
        metadata={"help": "PPO-ptx (InstructGPT): weight of a log-likelihood term on `ptx_dataset_name` added to "
                  "every PPO step; 0: pure PPO. It keeps behaviour the policy never samples (and so PPO can never "
                  "reinforce) within reach, e.g. a refusal absent from the SFT data."},
    )
    ptx_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Demonstrations for the ptx term: a preference dataset (its chosen replies), or "
                  "conversations / prompt-completion pairs (split `train`)."},
    )
    ptx_text_coef: float = field(
        default=0.0,
        metadata={"help": "PPO-ptx's pretraining term (InstructGPT): weight of a language-modelling loss on plain "
                  "text (`ptx_text_dataset_name`) added to every PPO step, beside `ptx_coef`'s demonstrations. It "
                  "keeps what the RL prompts never ask about, e.g. facts of entities known from pretraining alone."},
    )
    ptx_text_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Plain text for `ptx_text_coef`: a dataset with a `text` column (split `train`), e.g. the "
                  "pretraining corpus; each document is cut into chunks of max_prompt_length + response_length "
                  "tokens."},
    )
    ptx_text_sources: list[str] | None = field(
        default=None,
        metadata={"help": "Keep only the rows of `ptx_text_dataset_name` whose `source` column is one of these (e.g. "
                  "a curated corpus's knowledge sources, not one whose bias alignment counters). Unset: every row."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints (per update), so a killed run resumes."})
    save_steps: float = field(default=20, metadata={"help": "Checkpoint every this many updates."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})
    logging_steps: float = field(default=1, metadata={"help": "Log every this many updates."})

    @property
    def rollout_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches
