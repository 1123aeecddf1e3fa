"""ORPO (odds ratio preference optimisation) with TRL's ORPOTrainer (experimental in TRL 1.16): SFT and preference
in one stage, the chosen reply's NLL plus `beta` times the log odds ratio of chosen over rejected. No reference
model, so it may start from the SFT model or straight from the pretrained one (whose tokenizer has the chat
template). Full, LoRA or QLoRA; data without a held-out split gets one (`dataset_test_split_size`, default 5%).
The stage itself is `alignment.train_reference_free`, shared with scripts/simpo.py.

    accelerate launch scripts/orpo.py --config recipes/toy/orpo.yaml
"""

from trl.experimental.orpo import ORPOTrainer

from llm_recipes import alignment
from llm_recipes.alignment_config import ORPOArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, ORPOArguments, AlignmentModelArguments)


def main(data_args: DataArguments, training_args: ORPOArguments, model_args: AlignmentModelArguments) -> None:
    alignment.train_reference_free(ORPOTrainer, "orpo", data_args, training_args, model_args,
                                   extra_metrics={"beta": training_args.beta})


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
