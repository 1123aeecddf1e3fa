"""Train a byte-level BPE tokenizer on a text dataset and save it in the Hub format, with a chat template.

    accelerate launch scripts/tokenizer.py --config recipes/toy/tokenizer.yaml
"""

import itertools
import logging

from llm_recipes.configs import TokenizerArguments, run_cli
from llm_recipes.data import load_source
from llm_recipes.errors import DataError
from llm_recipes.hub import mark_complete
from llm_recipes.tokenizer import batched_texts, bytes_per_token, train_bpe_tokenizer
from llm_recipes.training import setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (TokenizerArguments,)


def main(args: TokenizerArguments) -> None:
    setup_logging()
    splits = load_source(args.dataset_name, args.dataset_config, split=None)
    if args.dataset_train_split not in splits:
        raise DataError(f"{args.dataset_name}: no split '{args.dataset_train_split}' (available: {', '.join(splits)})")
    train = splits[args.dataset_train_split]
    if args.text_column not in train.column_names:
        raise DataError(f"{args.dataset_name}: no column '{args.text_column}'; columns seen: {train.column_names}")
    if len(train) == 0:
        raise DataError(f"{args.dataset_name}[{args.dataset_train_split}]: empty")
    rows = itertools.islice(train, args.max_texts) if args.max_texts else train

    tokenizer = train_bpe_tokenizer(
        (text for batch in batched_texts(rows, args.text_column) for text in batch),
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        chat_template=args.chat_template,
        model_max_length=args.model_max_length,
    )
    heldout = splits[args.dataset_test_split] if args.dataset_test_split in splits else train.select(range(min(500, len(train))))
    bpt = bytes_per_token(tokenizer, heldout[args.text_column])
    logger.info("tokenizer: vocabulary %d, %.2f bytes/token on held-out text", len(tokenizer), bpt)

    tokenizer.save_pretrained(args.output_dir)
    mark_complete(args.output_dir, "tokenizer", dataset=args.dataset_name, vocab_size=len(tokenizer), bytes_per_token=bpt)
    if args.push_to_hub and args.hub_model_id:
        tokenizer.push_to_hub(args.hub_model_id)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
