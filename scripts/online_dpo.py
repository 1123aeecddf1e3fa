"""Online DPO with TRL's experimental OnlineDPOTrainer: each step the policy samples two completions per prompt, the
reward model of scripts/reward.py and/or Python reward functions (`reward_funcs`, weighted by `reward_weights`) score
them, and the DPO loss against the starting policy is taken on the pair (higher reward = chosen). Prompts: text or
conversations (a `prompt` column; other columns reach reward functions). Full, LoRA or QLoRA; an SFT adapter is merged
into its base first, as in GRPO/RLOO (`alignment.train_online_rl`). `log_pairs_steps` writes the sampled pairs to
`<output_dir>/sampled_pairs.jsonl`.

    accelerate launch scripts/online_dpo.py --config recipes/toy/online_dpo.yaml
"""

from llm_recipes import alignment
from llm_recipes.alignment_config import OnlineDPOArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.online_dpo import PairRecordingOnlineDPOTrainer
from llm_recipes.parser import run_cli

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them). The reward sources
# (RewardSourceArguments) are part of OnlineDPOArguments: TRL's config has its own `reward_model_path`.
CONFIG_CLASSES = (DataArguments, OnlineDPOArguments, AlignmentModelArguments)


def main(data_args: DataArguments, training_args: OnlineDPOArguments, model_args: AlignmentModelArguments) -> None:
    alignment.train_online_rl(PairRecordingOnlineDPOTrainer, "online_dpo", data_args, training_args, model_args,
                              reward_args=training_args)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
