"""Generate the toy world's datasets (corpus, SFT conversations, held-out questions) in the Hub format.

    accelerate launch scripts/toy_data.py --config recipes/toy/toy_data.yaml
"""

import logging

from llm_recipes.parser import run_cli
from llm_recipes.toy.config import ToyDataArguments
from llm_recipes.hub import mark_complete
from llm_recipes.toy import ToyWorld
from llm_recipes.toy.datasets import write_toy_datasets
from llm_recipes.training import setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (ToyDataArguments,)


def main(args: ToyDataArguments) -> None:
    setup_logging()
    world = ToyWorld(seed=args.seed, n_entities=args.n_entities, heldout_fraction=args.heldout_fraction,
                     n_late=args.n_late, n_unknown=args.n_unknown, docs_per_entity=args.docs_per_entity)
    rows = write_toy_datasets(world, args.output_dir)
    for name, n in rows.items():
        logger.info("toy data: %-10s %6d rows -> %s/%s", name, n, args.output_dir, name)
    mark_complete(args.output_dir, "toy_data", seed=args.seed, rows=rows)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
