"""One update round of a served model: the feedback in its serve log -> preference pairs (Hub format, with their
provenance) -> the DPO stage from the served model -> the evaluate stage, both models in one run -> release with a
changelog only if no gate metric regresses beyond the recipe's tolerance.

    python scripts/update.py --config recipes/update/update.yaml
    llm-recipes update --config recipes/update/update.yaml [--feedback_log runs/serve/requests.jsonl] [--key value]

Exit status: 0 released; 1 a gate failed (each failing metric named with its delta and tolerance; nothing
released); 2 bad input (an unreadable log line, no usable pair, a bad recipe key; nothing written).
"""

import sys

from llm_recipes.parser import run_cli
from llm_recipes.update_config import UpdateArguments

# The recipe YAML of this script is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (UpdateArguments,)


def main(args: UpdateArguments) -> None:
    from llm_recipes.training import setup_logging
    from llm_recipes.update import GateFailed, run_update

    setup_logging()
    try:
        run_update(args)
    except GateFailed as err:
        print(f"update: gate failed: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
