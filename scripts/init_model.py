"""Build a new, randomly initialised Llama-style model for a tokenizer and save it in the Hub format.

    accelerate launch scripts/init_model.py --config recipes/toy/init_model.yaml
"""

import logging

from llm_recipes.configs import InitModelArguments, run_cli
from llm_recipes.hub import mark_complete, write_model_card
from llm_recipes.models import build_model, get_architecture, load_tokenizer_from
from llm_recipes.training import setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (InitModelArguments,)


def main(args: InitModelArguments) -> None:
    setup_logging()
    tokenizer = load_tokenizer_from(args.tokenizer_name_or_path, "tokenizer_name_or_path")
    arch = get_architecture(
        args.model_size,
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings,
    )
    model = build_model(arch, tokenizer, seed=args.seed)
    params = model.num_parameters()
    logger.info("new model: %s, %.2fM parameters", arch, params / 1e6)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    write_model_card(args.output_dir, stage="init_model", base_model=None, datasets=[],
                     metrics={"parameters": params}, description="Randomly initialised, untrained model.")
    mark_complete(args.output_dir, "init_model", parameters=params, architecture=vars(arch))


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
