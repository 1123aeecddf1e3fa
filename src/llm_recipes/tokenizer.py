"""Byte-level BPE tokenizer training with the `tokenizers` library, saved in the Hub format."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from llm_recipes.chat_templates import setup_chat_template

DOCUMENT_SEPARATOR = "<|endoftext|>"  # between documents in pretraining; also BOS
PAD = "<|pad|>"
SPECIAL_TOKENS = [DOCUMENT_SEPARATOR, PAD, "<|im_start|>", "<|im_end|>"]


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    min_frequency: int = 2,
    extra_special_tokens: list[str] | None = None,
    chat_template: str = "chatml",
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (GPT-2 style: every byte is representable, nothing is ever unknown)."""
    specials = SPECIAL_TOKENS + [t for t in (extra_special_tokens or []) if t not in SPECIAL_TOKENS]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=DOCUMENT_SEPARATOR,
        eos_token=DOCUMENT_SEPARATOR,
        pad_token=PAD,
        additional_special_tokens=specials[2:],
        model_max_length=model_max_length,
    )
    setup_chat_template(wrapped, chat_template)
    return wrapped


def bytes_per_token(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> float:
    """UTF-8 bytes per token over `texts`: higher means a more efficient tokenizer for that text."""
    n_bytes = n_tokens = 0
    for text in texts:
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return n_bytes / max(n_tokens, 1)


def batched_texts(dataset, column: str = "text", batch_size: int = 1000) -> Iterator[list[str]]:
    """Stream a (possibly streaming) dataset's text column in batches, for tokenizer training."""
    batch: list[str] = []
    for row in dataset:
        batch.append(row[column])
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
