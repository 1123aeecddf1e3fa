"""Collect and curate pretraining data on datatrove: sources -> routed filters -> PII removal -> exact and near
deduplication -> knowledge cutoff -> mixing -> a Hub-format dataset whose card accounts for every dropped document.

    accelerate launch scripts/curate.py --config recipes/toy/curate.yaml
"""

import logging

from llm_recipes.curation.config import CurationArguments
from llm_recipes.parser import run_cli
from llm_recipes.curation.pipeline import run_curation, summary_markdown
from llm_recipes.training import setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (CurationArguments,)


def main(args: CurationArguments) -> None:
    setup_logging()
    stats = run_curation(args)
    if "sources" in stats:
        print(summary_markdown(stats), flush=True)
        logger.info("curate: %s -> %s in %.0fs", stats["totals"], args.output_dir, stats["seconds"])


if __name__ == "__main__":  # datatrove's local executor starts worker processes: the guard is required
    run_cli(main, CONFIG_CLASSES)
