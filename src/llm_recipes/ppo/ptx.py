"""The data of PPO-ptx's two log-likelihood terms: demonstrations (`ptx_coef`) and plain text (`ptx_text_coef`)."""

from __future__ import annotations

from datasets import Dataset

from llm_recipes import data
from llm_recipes.errors import ConfigError
from llm_recipes.ppo.config import PPOArguments


def load_ptx_data(args: PPOArguments) -> tuple[Dataset | None, Dataset | None]:
    """(demonstrations as prompt/completion, plain text) for the ptx terms that are on; a bad key is a ConfigError."""
    demonstrations = text = None
    if args.ptx_coef:
        if not args.ptx_dataset_name:
            raise ConfigError("ptx_coef: set ptx_dataset_name (the demonstrations of the ptx term)")
        raw = data.load_source(args.ptx_dataset_name, split="train")
        kind = "preference" if {"chosen", "rejected"} <= set(raw.column_names) else "sft"
        demonstrations = data.normalise(raw, kind=kind, source=args.ptx_dataset_name)
        if kind == "preference":
            demonstrations = demonstrations.map(lambda r: {"prompt": r["prompt"], "completion": r["chosen"]},
                                                remove_columns=["chosen", "rejected"])
        elif "messages" in demonstrations.column_names:
            demonstrations = demonstrations.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                                                remove_columns=["messages"])
        elif "completion" not in demonstrations.column_names:
            raise ConfigError(f"ptx_dataset_name: {args.ptx_dataset_name}: needs demonstrations (pairs, conversations "
                              "or prompt/completion), not plain text")
    if args.ptx_text_coef:
        if not args.ptx_text_dataset_name:
            raise ConfigError("ptx_text_coef: set ptx_text_dataset_name (the plain text of the pretraining term)")
        text = data.load_source(args.ptx_text_dataset_name, split="train")
        if "text" not in text.column_names:
            raise ConfigError(f"ptx_text_dataset_name: {args.ptx_text_dataset_name}: needs a 'text' column; "
                              f"columns seen: {text.column_names}")
        if args.ptx_text_sources:
            if "source" not in text.column_names:
                raise ConfigError(f"ptx_text_sources: {args.ptx_text_dataset_name} has no 'source' column; "
                                  f"columns seen: {text.column_names}")
            wanted = set(args.ptx_text_sources)
            text = text.filter(lambda source: source in wanted, input_columns="source")
            if not len(text):
                raise ConfigError(f"ptx_text_sources: no row of {args.ptx_text_dataset_name} comes from "
                                  f"{sorted(wanted)}")
    return demonstrations, text
