"""Pretraining from scratch: text -> tokens (datasets.map) -> fixed-length packed blocks -> transformers' Trainer.

Packing: documents are tokenized, each followed by the document separator (`<|endoftext|>`, else EOS),
concatenated and cut into blocks of `block_size` tokens. Every block carries `position_ids` that restart at
each document start (and at the block start), which is what stops attention across documents:
- sdpa/eager (CPU, or GPU without flash-attn): with no attention mask, transformers builds a block-causal
  mask per row from the position_ids (masking_utils.find_packed_sequence_indices);
- flash_attention_2: the collator flattens the batch into one row, and transformers derives cu_seqlens
  from the position_ids and calls flash-attn's variable-length kernel.
The first label of every row is ignored, so no row predicts across a row (or flattened) boundary.
transformers applies the packed-sequence mask only when no KV cache exists: the model is trained with
`use_cache=False` (Trainer's default, also set here); a forward with a cache silently attends across documents.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from llm_recipes import data, models
from llm_recipes.data_config import DataArguments
from llm_recipes.model_config import ModelArguments
from llm_recipes.pretrain_config import PretrainArguments
from llm_recipes.errors import ConfigError, DataError
from llm_recipes.sizing import device_peak_flops, flops_per_token
from llm_recipes.tokenizer import DOCUMENT_SEPARATOR

logger = logging.getLogger("llm_recipes")
IGNORE_INDEX = -100
INITIAL_EVAL_FILE = "initial_eval.json"  # the untrained model's validation loss, kept across resumes


# ----------------------------------------------------------------------------------------------- data
def _check_text_split(ds: Dataset | IterableDataset, column: str, where: str) -> Dataset | IterableDataset:
    columns = ds.column_names
    if columns is not None and column not in columns:
        raise DataError(f"{where}: no text column '{column}' (set text_column); columns seen: {columns}")
    if isinstance(ds, Dataset) and len(ds) == 0:
        raise DataError(f"{where}: empty (no documents)")
    if column != "text":
        ds = ds.rename_column(column, "text")
    return ds.select_columns(["text"])


def load_text_splits(data_args: DataArguments, cfg: PretrainArguments) -> tuple[Dataset | IterableDataset, Any]:
    """The train and (if any) validation documents as a single `text` column, checked for the column and for
    emptiness; in-memory data is also checked row by row (`on_bad_row`). The validation documents are the
    held-out split (`data.held_out_split`: the one named, else `validation`, else `test`), else a held-out share
    of train (`dataset_test_split_size`, or the first `eval_max_samples` documents). An evaluation asked for
    (`eval_before_training`, `eval_strategy`) without validation documents is an error."""
    if data_args.dataset_mixture:
        dsd = data.load_mixture(data_args.dataset_mixture, data_args.on_bad_row,
                                text_sample_by=data_args.text_sample_by)  # normalised to `text`
        train, test = dsd["train"], dsd.get("test")
        source, available = "dataset_mixture", list(dsd)
    elif data_args.dataset_name:
        source = data_args.dataset_name
        local = os.path.exists(source)
        splits = data.load_source(source, data_args.dataset_config, None, data_args.on_bad_row,
                                  streaming=cfg.streaming and not local, text_sample_by=data_args.text_sample_by)
        available = list(splits)
        if data_args.dataset_train_split not in splits:
            raise DataError(f"{source}: no split '{data_args.dataset_train_split}' (available: {', '.join(splits)})")
        test_split = data.held_out_split(source, data_args.dataset_test_split, available)
        train = _check_text_split(splits[data_args.dataset_train_split], cfg.text_column,
                                  f"{source}[{data_args.dataset_train_split}]")
        test = None
        if test_split is not None:
            test = _check_text_split(splits[test_split], cfg.text_column, f"{source}[{test_split}]")
        if isinstance(train, Dataset):
            train = data.normalise(train, "text", data_args.on_bad_row, f"{source}[{data_args.dataset_train_split}]")
            if test is not None:
                test = data.normalise(test, "text", data_args.on_bad_row, f"{source}[{test_split}]")
    else:
        raise ConfigError("no data: set 'dataset_name' or 'dataset_mixture' in the recipe")
    if isinstance(train, Dataset) and len(train) == 0:
        raise DataError(f"{source}: no usable documents")
    if test is None and data_args.dataset_test_split_size:
        if data_args.dataset_mixture:
            raise ConfigError("dataset_test_split_size: a mixture holds out its own share: set "
                              "dataset_mixture.test_split_size instead")
        if not isinstance(train, Dataset):
            raise ConfigError("dataset_test_split_size: a streamed dataset has no length; set eval_max_samples to hold "
                              "out its first documents")
        train, test = data.hold_out(train, data_args.dataset_test_split_size, cfg.data_seed or cfg.seed,
                                    f"{source}[{data_args.dataset_train_split}]")
    elif test is None and data_args.eval_max_samples:  # no held-out split: hold out the first documents
        n = data_args.eval_max_samples
        if isinstance(train, Dataset):
            n = min(n, len(train) // 10)
            test, train = train.select(range(n)), train.select(range(n, len(train)))
        else:
            test, train = Dataset.from_list(list(train.take(n))), train.skip(n)
        logger.info("validation: the first %d documents of the train split, held out", n)
    if test is None:
        _check_no_evaluation_asked(data_args, cfg, source, available)
    if isinstance(train, Dataset):
        logger.info("pretraining data: %s: %d train documents, %d eval documents", source, len(train),
                    len(test) if isinstance(test, Dataset) else 0)
    if cfg.streaming and isinstance(train, Dataset):
        train = train.to_iterable_dataset()
    if isinstance(train, IterableDataset):
        train = train.shuffle(seed=cfg.data_seed or cfg.seed, buffer_size=10_000)
    if test is not None and data_args.eval_max_samples:
        if isinstance(test, Dataset):
            test = test.select(range(min(len(test), data_args.eval_max_samples)))
        else:
            test = Dataset.from_list(list(test.take(data_args.eval_max_samples)))
    elif isinstance(test, IterableDataset):
        raise ConfigError("eval_max_samples: set it to evaluate on a streamed validation split")
    return train, test


def _check_no_evaluation_asked(data_args: DataArguments, cfg: PretrainArguments, source: str, available: list[str]) -> None:
    """Without validation documents: an evaluation the recipe asks for is an error, not a silent skip."""
    opted_out = (data_args.dataset_test_split or "").lower() == data.NO_SPLIT
    asked = [name for name, on in (("eval_strategy", cfg.eval_strategy != "no"),
                                   ("eval_before_training", cfg.eval_before_training and not opted_out)) if on]
    if asked:
        raise DataError(
            f"{source}: no held-out split to evaluate on (available: {', '.join(available)}), and {' and '.join(asked)} "
            f"ask for an evaluation: set dataset_test_split_size to hold out a share of train (or eval_max_samples "
            f"for its first documents), or turn {' and '.join(asked)} off"
        )
    logger.info("pretraining without validation documents: no evaluation before or after")


def separator_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token between documents: `<|endoftext|>` when the tokenizer has it, else its EOS."""
    token_id = tokenizer.convert_tokens_to_ids(DOCUMENT_SEPARATOR)
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    if token_id is None:
        raise ConfigError("tokenizer: has neither <|endoftext|> nor an EOS token to separate documents")
    return token_id


def pack_blocks(input_ids: list[list[int]], block_size: int, pad_id: int | None = None) -> dict[str, list]:
    """Concatenate token lists into rows of `block_size` with position_ids restarting at each document and
    each row. The remainder is dropped, or (with `pad_id`, for evaluation) padded with ignored labels."""
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
    flat = np.fromiter((t for ids in input_ids for t in ids), dtype=np.int64, count=int(lengths.sum()))
    starts = np.zeros(len(flat), dtype=bool)
    starts[np.cumsum(lengths)[:-1]] = True
    labels = flat.copy()
    rest = len(flat) % block_size
    if rest and pad_id is not None:
        pad = block_size - rest
        flat = np.concatenate([flat, np.full(pad, pad_id)])
        labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX)])
        starts = np.concatenate([starts, [True], np.zeros(pad - 1, dtype=bool)])  # padding is its own "document"
    elif rest:
        flat, labels, starts = flat[:-rest], labels[:-rest], starts[:-rest]
    starts[::block_size] = True
    # position = distance to the last start: index - index of the most recent start
    index = np.arange(len(flat))
    positions = index - np.maximum.accumulate(np.where(starts, index, 0))
    n = len(flat) // block_size
    shape = (n, block_size)
    return {
        "input_ids": flat.reshape(shape).tolist(),
        "position_ids": positions.reshape(shape).tolist(),
        "labels": labels.reshape(shape).tolist(),
    }


def tokenize_and_pack(
    ds: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    num_proc: int | None = None,
    for_eval: bool = False,
) -> Dataset | IterableDataset:
    """datasets.map: tokenize (each document + separator), then pack into blocks (see `pack_blocks`)."""
    sep = separator_id(tokenizer)
    streaming = isinstance(ds, IterableDataset)
    kwargs: dict[str, Any] = {} if streaming else {"num_proc": num_proc}

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [row + [sep] for row in ids]}

    tokenized = ds.map(tokenize, batched=True, remove_columns=["text"], **kwargs,
                       **({} if streaming else {"desc": "tokenizing"}))
    pad_id = tokenizer.pad_token_id if for_eval else None
    if for_eval and not streaming:  # one map batch: only the very last block is padded
        return tokenized.map(lambda b: pack_blocks(b["input_ids"], block_size, pad_id), batched=True,
                             batch_size=None, remove_columns=["input_ids"], desc="packing")
    return tokenized.map(lambda b: pack_blocks(b["input_ids"], block_size, pad_id), batched=True,
                         batch_size=1000, remove_columns=["input_ids"], **kwargs,
                         **({} if streaming else {"desc": "packing"}))


@dataclass
class PackedCollator:
    """Stacks packed blocks; ignores each row's first label; with `flatten`, one row of B x T tokens for
    flash-attn's variable-length path (cu_seqlens from position_ids)."""

    flatten: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {key: torch.tensor([row[key] for row in rows], dtype=torch.long)
                 for key in ("input_ids", "position_ids", "labels")}
        batch["labels"][:, 0] = IGNORE_INDEX
        if self.flatten:
            batch = {key: value.reshape(1, -1) for key, value in batch.items()}
        return batch


# ----------------------------------------------------------------------------------------------- model
def load_pretrain_tokenizer(cfg: PretrainArguments) -> PreTrainedTokenizerBase:
    source = cfg.tokenizer_name_or_path or cfg.model_name_or_path
    if not source:
        raise ConfigError("tokenizer_name_or_path: not set (train one with scripts/tokenizer.py)")
    return models.load_tokenizer_from(source, "tokenizer_name_or_path" if cfg.tokenizer_name_or_path else "model_name_or_path")


def build_pretrain_model(cfg: PretrainArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A new Llama-style model of the named size (or fields), or an existing one to continue pretraining."""
    if cfg.model_name_or_path:
        model_args = ModelArguments(model_name_or_path=cfg.model_name_or_path,
                                    attn_implementation=cfg.attn_implementation, dtype="float32")
        return models.load_model(model_args, tokenizer)
    arch = models.get_architecture(
        cfg.model_size, num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
    )
    if arch.max_position_embeddings < cfg.block_size:
        raise ConfigError(f"block_size: {cfg.block_size} exceeds the model's context "
                          f"(max_position_embeddings {arch.max_position_embeddings})")
    model = models.build_model(arch, tokenizer, cfg.attn_implementation, seed=cfg.seed)
    model.config.use_cache = False  # a KV cache would disable the per-document mask (see the module docstring)
    logger.info("new model: %s, %.2fM parameters, attention %s", arch, model.num_parameters() / 1e6,
                model.config._attn_implementation)
    return model


def matmul_parameters(model: PreTrainedModel) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (the lm_head counts,
    tied or not)."""
    total = model.num_parameters()
    tied = model.config.get_text_config().tie_word_embeddings
    return total if tied else total - model.get_input_embeddings().weight.numel()


# ----------------------------------------------------------------------------------------------- trainer
class PretrainTrainer(Trainer):
    """transformers' Trainer whose training logs also carry tokens seen, tokens/s, FLOPs and MFU."""

    def __init__(self, *args, tokens_per_step: int, flops_per_token: float, peak_flops: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops  # per device
        self._last: tuple[int, float] | None = None

    def throughput(self) -> dict[str, float]:
        step, now = self.state.global_step, time.perf_counter()
        out = {"tokens_seen": step * self.tokens_per_step, "flops": step * self.tokens_per_step * self.flops_per_token}
        if self._last is not None and step > self._last[0]:
            tokens_per_sec = (step - self._last[0]) * self.tokens_per_step / (now - self._last[1])
            out["tokens_per_sec"] = tokens_per_sec
            out["mfu"] = tokens_per_sec * self.flops_per_token / (self.peak_flops * self.args.world_size)
        self._last = (step, now)
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.throughput())
        super().log(logs, start_time)

    def _inner_training_loop(self, *args, **kwargs):
        self._last = None  # start timing at the first step of this run (also after a resume)
        return super()._inner_training_loop(*args, **kwargs)

    def training_step(self, *args, **kwargs):
        if self._last is None:
            self._last = (self.state.global_step, time.perf_counter())
        return super().training_step(*args, **kwargs)


def set_steps_from_budget(cfg: PretrainArguments, streaming: bool) -> int:
    """Tokens per optimizer step (global batch x block); sets max_steps from max_tokens when given."""
    tokens_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.world_size * cfg.block_size
    if cfg.max_tokens:
        cfg.max_steps = max(1, math.ceil(cfg.max_tokens / tokens_per_step))
        logger.info("tokens budget %.3g -> %d steps of %d tokens (global batch %d x block %d)", cfg.max_tokens,
                    cfg.max_steps, tokens_per_step, tokens_per_step // cfg.block_size, cfg.block_size)
    elif streaming and cfg.max_steps <= 0:
        raise ConfigError("max_tokens: a streamed dataset has no length; set max_tokens (or max_steps)")
    return tokens_per_step


def build_trainer(data_args: DataArguments, cfg: PretrainArguments) -> PretrainTrainer:
    """Everything up to `trainer.train()`: data, tokenizer, model, packing, budget, Trainer."""
    if torch.cuda.is_available() and not (cfg.bf16 or cfg.fp16) and torch.cuda.is_bf16_supported():
        cfg.bf16 = True
        logger.info("GPU: training in bf16 mixed precision")
    train_text, eval_text = load_text_splits(data_args, cfg)
    tokenizer = load_pretrain_tokenizer(cfg)
    model = build_pretrain_model(cfg, tokenizer)
    with cfg.main_process_first(desc="tokenizing and packing"):
        train = tokenize_and_pack(train_text, tokenizer, cfg.block_size, cfg.dataset_num_proc)
        evaluation = None
        if eval_text is not None:
            evaluation = tokenize_and_pack(eval_text, tokenizer, cfg.block_size, cfg.dataset_num_proc, for_eval=True)
    if isinstance(train, Dataset):
        if len(train) == 0:
            raise DataError(f"{data_args.dataset_name}: fewer tokens than one block of {cfg.block_size}")
        logger.info("train: %d blocks of %d tokens (%.3g tokens)", len(train), cfg.block_size, len(train) * cfg.block_size)
    tokens_per_step = set_steps_from_budget(cfg, isinstance(train, IterableDataset))
    attn = model.config._attn_implementation
    peak, peak_source = device_peak_flops(cfg.peak_flops)
    per_token = flops_per_token(matmul_parameters(model), model.config.num_hidden_layers, model.config.hidden_size,
                                cfg.block_size)
    logger.info("MFU peak: %.3g FLOP/s (%s); %.3g FLOPs per token (6N + 12 L d T)", peak, peak_source, per_token)
    trainer = PretrainTrainer(
        model=model,
        args=cfg,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=PackedCollator(flatten=attn == "flash_attention_2"),
        processing_class=tokenizer,
        tokens_per_step=tokens_per_step,
        flops_per_token=per_token,
        peak_flops=peak,
    )
    trainer.peak_source = peak_source
    return trainer


def perplexity(loss: float | None) -> float | None:
    return math.exp(min(loss, 50.0)) if loss is not None else None


def initial_evaluation(trainer: Trainer, output_dir: str, resuming: bool) -> float | None:
    """Validation loss of the untrained model: measured on a fresh run, read back on a resume."""
    path = Path(output_dir) / INITIAL_EVAL_FILE
    if path.is_file():
        return json.loads(path.read_text())["eval_loss"]
    if resuming or trainer.eval_dataset is None or not trainer.args.eval_before_training:
        return None
    loss = trainer.evaluate(metric_key_prefix="eval")["eval_loss"]
    if trainer.accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"eval_loss": loss}) + "\n")
    return loss
