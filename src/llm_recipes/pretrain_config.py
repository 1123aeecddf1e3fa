"""Pretraining from scratch: `PretrainArguments` (read by `llm_recipes.pretrain`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class PretrainArguments(TrainingArguments):
    """Pretraining from scratch (`scripts/pretrain.py`): transformers' TrainingArguments plus the model to
    build, the text to pack and the tokens budget. Defaults are the usual LLM ones (AdamW, betas 0.9/0.95,
    weight decay 0.1, clipping 1.0, warmup + cosine)."""

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Trained tokenizer (folder or Hub id); the model is built for it."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pretraining this model instead of building a new one."}
    )
    model_size: str | None = field(
        default=None,
        metadata={"help": "Named size of a new model: tiny, toy, 20m, 125m, 350m, 1b, 8b (the fields below override "
                  "parts of it). Required unless model_name_or_path names a model to continue."},
    )
    num_layers: int | None = field(default=None, metadata={"help": "Override: decoder layers."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override: hidden size."})
    num_heads: int | None = field(default=None, metadata={"help": "Override: attention heads."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "Override: key/value heads (GQA)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Override: MLP width."})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "Override: context length."})
    attn_implementation: str = field(
        default="auto",
        metadata={"help": "'auto': flash_attention_2 on CUDA when flash-attn is installed, else sdpa; or sdpa/eager."},
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the documents' text."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (data larger than memory or disk)."})
    block_size: int = field(default=2048, metadata={"help": "Tokens per packed training sequence."})
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Tokens budget: sets max_steps = max_tokens / (global batch x block_size). Wins over epochs."},
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization (datasets.map)."})
    peak_flops: float | None = field(
        default=None, metadata={"help": "Device peak FLOP/s for MFU; default: datasheet (GPU) or a measured matmul (CPU)."}
    )
    eval_before_training: bool = field(
        default=True,
        metadata={"help": "Evaluate the untrained model first, to report loss before and after. Needs held-out "
                  "documents (a held-out split, or dataset_test_split_size): without them it is an error, unless "
                  "dataset_test_split is 'none'."},
    )
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "cosine, or warmup_stable_decay (WSD; lr_scheduler_kwargs: num_decay_steps)."}
    )
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of the steps when < 1."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    output_dir: str | None = field(default="runs/pretrain", metadata={"help": "Checkpoints and the final model."})
