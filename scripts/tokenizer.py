"""Train a byte-level BPE tokenizer on a text dataset and save it in the Hub format, with a chat template.

    accelerate launch scripts/tokenizer.py --config recipes/toy/tokenizer.yaml
"""

import itertools
import logging
import os

from datasets import Dataset

from llm_recipes.parser import run_cli
from llm_recipes.tokenizer_config import TokenizerArguments
from llm_recipes.data import held_out_split, load_source
from llm_recipes.errors import DataError
from llm_recipes.hub import mark_complete, write_model_card
from llm_recipes.tokenizer import SPECIAL_TOKENS, batched_texts, bytes_per_token, train_bpe_tokenizer
from llm_recipes.training import recipe_path, setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (TokenizerArguments,)


def split_texts(args: TokenizerArguments):
    """(training rows, held-out texts): the held-out split (`dataset_test_split`, see data.held_out_split) when
    there is one, else `heldout_texts` rows kept out of the train split. Streams (nothing downloaded up front)
    with `streaming: true`."""
    local = os.path.exists(args.dataset_name or "")
    splits = load_source(args.dataset_name, args.dataset_config, split=None, streaming=args.streaming and not local,
                         text_sample_by=args.text_sample_by)
    if args.dataset_train_split not in splits:
        raise DataError(f"{args.dataset_name}: no split '{args.dataset_train_split}' (available: {', '.join(splits)})")
    test_split = held_out_split(args.dataset_name, args.dataset_test_split, list(splits))
    train = splits[args.dataset_train_split]
    where = f"{args.dataset_name}[{args.dataset_train_split}]"
    if train.column_names is not None and args.text_column not in train.column_names:
        raise DataError(f"{where}: no text column '{args.text_column}' (set text_column); columns seen: {train.column_names}")
    if isinstance(train, Dataset) and len(train) == 0:
        raise DataError(f"{where}: empty (no texts)")
    n_heldout = min(args.heldout_texts, len(train) // 10) if isinstance(train, Dataset) else args.heldout_texts
    if args.streaming and isinstance(train, Dataset):
        train = train.to_iterable_dataset()
    test = splits[test_split] if test_split is not None else None
    if test is None:  # hold out the first texts of the train split, train on the rest
        heldout = train.select(range(n_heldout)) if isinstance(train, Dataset) else train.take(n_heldout)
        train = train.skip(n_heldout)
        logger.info("held-out texts: the first %d of %s", n_heldout, where)
    else:
        heldout = test.select(range(min(args.heldout_texts, len(test)))) if isinstance(test, Dataset) else test.take(args.heldout_texts)
        logger.info("held-out texts: split '%s'", test_split)
    rows = itertools.islice(train, args.max_texts) if args.max_texts else train
    return rows, [row[args.text_column] for row in heldout if row[args.text_column]]


def main(args: TokenizerArguments) -> None:
    setup_logging()
    rows, heldout = split_texts(args)
    count = 0

    def texts():
        nonlocal count
        for batch in batched_texts(rows, args.text_column):
            for text in batch:
                if text:
                    count += 1
                    yield text

    tokenizer = train_bpe_tokenizer(
        texts(),
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        extra_special_tokens=args.extra_special_tokens,
        chat_template=args.chat_template,
        model_max_length=args.model_max_length,
    )
    if count == 0:
        raise DataError(f"{args.dataset_name}[{args.dataset_train_split}]: no non-empty texts to train on")
    bpt = bytes_per_token(tokenizer, heldout) if heldout else None
    logger.info("tokenizer: trained on %d texts; vocabulary %d; %s bytes/token on %d held-out texts", count,
                len(tokenizer), f"{bpt:.3f}" if bpt else "n/a", len(heldout))

    tokenizer.save_pretrained(args.output_dir)
    info = {"vocab_size": len(tokenizer), "bytes_per_token": bpt, "train_texts": count, "heldout_texts": len(heldout)}
    specials = SPECIAL_TOKENS + [t for t in (args.extra_special_tokens or []) if t not in SPECIAL_TOKENS]
    write_model_card(
        args.output_dir, stage="tokenizer", base_model=None, datasets=[args.dataset_name], metrics=info,
        recipe_path=recipe_path(), tags=["tokenizer"],
        description=f"Byte-level BPE tokenizer (vocabulary {len(tokenizer)}) with special tokens "
        f"{', '.join(specials)} and the `{args.chat_template if len(args.chat_template) < 40 else 'custom'}` "
        "chat template. Bytes per token is measured on held-out text.",
    )
    mark_complete(args.output_dir, "tokenizer", dataset=args.dataset_name, **info)
    if args.push_to_hub and args.hub_model_id:
        tokenizer.push_to_hub(args.hub_model_id)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
