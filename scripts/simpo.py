"""SimPO (simple preference optimisation) with TRL's CPOTrainer (experimental in TRL 1.16) and `loss_type: simpo`:
the reward of a reply is `beta` times its mean per-token log-prob (length-normalised, no reference model), and the
chosen reward must beat the rejected one by `simpo_gamma`. `cpo_alpha` 0 (the default) is pure SimPO; above 0 it
adds the chosen reply's NLL (CPO-SimPO). Starts from the SFT model (or any causal LM); full, LoRA or QLoRA. The
stage itself is `alignment.train_reference_free`, shared with scripts/orpo.py.

    accelerate launch scripts/simpo.py --config recipes/toy/simpo.yaml
"""

from trl.experimental.cpo import CPOTrainer

from llm_recipes import alignment
from llm_recipes.alignment_config import SimPOArguments
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import AlignmentModelArguments
from llm_recipes.parser import run_cli

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, SimPOArguments, AlignmentModelArguments)


def main(data_args: DataArguments, training_args: SimPOArguments, model_args: AlignmentModelArguments) -> None:
    alignment.train_reference_free(
        CPOTrainer, "simpo", data_args, training_args, model_args,
        extra_metrics={"loss_type": training_args.loss_type, "beta": training_args.beta,
                       "simpo_gamma": training_args.simpo_gamma, "cpo_alpha": training_args.cpo_alpha},
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
