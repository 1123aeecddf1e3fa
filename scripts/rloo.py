"""RLOO (REINFORCE leave-one-out) with TRL's RLOOTrainer: rewards from the reward model of scripts/reward.py
and/or Python reward functions given by dotted path (`reward_funcs`, weighted by `reward_weights`).
Prompts: text or conversations (a `prompt` column; other columns reach reward functions). Full, LoRA or QLoRA.
The stage itself (data -> tokenizer -> policy -> trainer -> train -> save) is `alignment.train_online_rl`,
shared with the other online-RL stage.

    accelerate launch scripts/rloo.py --config recipes/toy/rloo.yaml
"""

from trl import RLOOTrainer

from llm_recipes import alignment
from llm_recipes.alignment_config import RLOOArguments, RewardSourceArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, RLOOArguments, AlignmentModelArguments, RewardSourceArguments)


def main(data_args: DataArguments, training_args: RLOOArguments, model_args: AlignmentModelArguments,
         reward_args: RewardSourceArguments) -> None:
    alignment.train_online_rl(RLOOTrainer, "rloo", data_args, training_args, model_args, reward_args)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
