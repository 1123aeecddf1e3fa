"""Load a model to evaluate the way training saved it: full folder, LoRA adapter folder, or Hub id; the tokenizer
through `models.load_tokenizer`, so the chat template and end-of-turn EOS are those of training."""

from __future__ import annotations

import os

from llm_recipes.configs import ModelArguments
from llm_recipes.errors import ConfigError


def check_model_source(path: str, key: str = "models") -> None:
    """A local-looking path that does not exist is an error now (a Hub id is `name` or `org/name`)."""
    if not os.path.exists(path) and (path.startswith(("/", ".", "~")) or path.count("/") > 1):
        raise ConfigError(f"{key}: '{path}' does not exist")


def load_for_eval(path: str, chat_template: str | None = None):
    from llm_recipes.models import load_model, load_tokenizer

    check_model_source(path)
    tokenizer_source = None
    adapter_config = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_config) and not os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        import json

        tokenizer_source = json.load(open(adapter_config)).get("base_model_name_or_path")
    args = ModelArguments(model_name_or_path=path, tokenizer_name_or_path=tokenizer_source, chat_template=chat_template,
                          dtype="auto", attn_implementation="auto")
    tokenizer = load_tokenizer(args)
    model = load_model(args, tokenizer).eval()
    return model, tokenizer
