"""Load a model to evaluate the way training saved it: full folder, LoRA adapter (merged into its base, as every
stage merges), or Hub id; the tokenizer through `models.load_tokenizer`, so the chat template and end-of-turn EOS
are those of training."""

from __future__ import annotations

import os

from llm_recipes.model_config import ModelArguments
from llm_recipes.models import has_tokenizer, load_model, load_tokenizer, resolve_model


def check_model_source(path: str, key: str = "models") -> None:
    """A local-looking path that is not there (or an adapter whose local base is not) is an error now."""
    resolve_model(path, key)


def load_for_eval(path: str, chat_template: str | None = None):
    source = resolve_model(path, "models")
    tokenizer_source = None
    if source.kind == "adapter" and os.path.isdir(source.path) and not has_tokenizer(source.path):
        tokenizer_source = source.base  # an adapter saved without its tokenizer: the base's
    args = ModelArguments(model_name_or_path=path, tokenizer_name_or_path=tokenizer_source, chat_template=chat_template,
                          dtype="auto", attn_implementation="auto")
    tokenizer = load_tokenizer(args)
    model = load_model(args, tokenizer).eval()
    return model, tokenizer
