"""Tokenizer training: `TokenizerArguments` (read by `llm_recipes.tokenizer`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenizerArguments:
    """Byte-level BPE training (`scripts/tokenizer.py`)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Text dataset: Hub id, local folder or file."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config (subset) name of the dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split the tokenizer is trained on."})
    dataset_test_split: str | None = field(
        default=None,
        metadata={
            "help": "Held-out split for the bytes-per-token report. Unset: `validation`, else `test` (the same rule "
            "in every stage), else `heldout_texts` texts of train; 'none': those texts of train. A split named here "
            "that the data lacks is an error."
        },
    )
    text_sample_by: str = field(
        default="paragraph",
        metadata={
            "help": "Plain-text (.txt) files: one text per paragraph (blank line), per line, or per file.",
            "choices": ["paragraph", "line", "document"],
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    streaming: bool = field(default=False, metadata={"help": "Stream a large Hub dataset instead of downloading it."})
    max_texts: int | None = field(default=None, metadata={"help": "Train on at most this many texts."})
    heldout_texts: int = field(
        default=500,
        metadata={"help": "Without a held-out split: texts kept out of training (from the train split) for the "
                  "bytes-per-token report."},
    )
    extra_special_tokens: list[str] | None = field(
        default=None, metadata={"help": "Special tokens added to <|endoftext|>, <|pad|>, <|im_start|>, <|im_end|>."}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})
    chat_template: str = field(default="chatml", metadata={"help": "Built-in template name or inline Jinja."})
    model_max_length: int = field(default=2048, metadata={"help": "Longest sequence the tokenizer reports."})
    output_dir: str = field(default="runs/tokenizer", metadata={"help": "Where the tokenizer is saved."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the tokenizer to `hub_model_id`."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo for the push."})
