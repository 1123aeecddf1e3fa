"""Serve a model over an OpenAI-compatible HTTP API (transformers' own `transformers serve` app) behind a guard:
system prompt, input/output filters, limits, API key, and a JSONL request log with PII redacted.

    python scripts/serve.py --config recipes/serve/serve.yaml --model_name_or_path runs/toy/release
    llm-recipes serve runs/toy/release [--config recipes/serve/serve.yaml] [--port 8000] [--key value]
"""

from llm_recipes.parser import run_cli
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.server import serve

# The recipe YAML of this script is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (ServeArguments,)


def main(args: ServeArguments) -> None:
    import torch

    from llm_recipes.training import cpu_threads, setup_logging

    setup_logging()
    torch.set_num_threads(cpu_threads())
    serve(args)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
