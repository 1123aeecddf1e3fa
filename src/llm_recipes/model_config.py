"""The model a stage loads: TRL's ModelConfig with the project's defaults (read by `llm_recipes.models`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ModelConfig with the project's defaults: automatic attention choice, LoRA on all linear layers."""

    attn_implementation: str | None = field(
        default="auto",
        metadata={
            "help": "'auto' picks flash_attention_2 when flash-attn is installed and CUDA is present, else sdpa; "
            "or name one (sdpa, eager, flash_attention_2)."
        },
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "LoRA target modules; 'all-linear' by default."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load, when it is not the model's own folder or id."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template: a built-in name (chatml) or an inline Jinja string. Unset keeps the tokenizer's "
            "own template, or chatml when it has none."
        },
    )


@dataclass
class AlignmentModelArguments(ModelArguments):
    """ModelArguments for stages that start from an earlier stage's output, which may be an adapter folder."""

    base_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Base model of the adapter folder in `model_name_or_path`. Unset: the adapter's own "
            "`base_model_name_or_path`, tried as written and relative to the adapter folder."
        },
    )
