"""Models and tokenizers: load from a Hub id or local folder, pick attention, quantize, add LoRA, or build a
new Llama-style model from an architecture. Every stage gets its model here."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from accelerate import PartialState
from trl import get_peft_config, get_quantization_config

from llm_recipes.chat_templates import align_model_with_tokenizer, setup_chat_template
from llm_recipes.errors import ConfigError

logger = logging.getLogger(__name__)


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def select_attn_implementation(requested: str | None = "auto") -> str:
    """'auto' -> flash_attention_2 where flash-attn is installed and CUDA is present, else sdpa."""
    if requested in (None, "auto"):
        return "flash_attention_2" if flash_attn_available() else "sdpa"
    if requested == "flash_attention_2" and not flash_attn_available():
        raise ConfigError("attn_implementation: flash_attention_2 needs the flash-attn package and a CUDA GPU")
    return requested


def resolve_dtype(name: str | None) -> torch.dtype | str:
    """'auto' -> bf16 on a GPU that supports it, fp32 on CPU; else the named dtype."""
    if name in (None, "auto"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"dtype: unknown dtype '{name}' (use auto, float32, bfloat16 or float16)")
    return dtype


def check_local_weights(path: str | None) -> None:
    """A local model folder must exist and hold safetensors weights: pickled `pytorch_model.bin` files can run
    code when loaded, so they are refused (convert them to safetensors first)."""
    if path is None:
        raise ConfigError("model_name_or_path: not set")
    if not os.path.isdir(path):
        if path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise ConfigError(f"model_name_or_path: {path}: no such folder")
        return  # a Hub id
    names = os.listdir(path)
    if any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
        return
    if "adapter_config.json" in names:
        return  # a PEFT adapter folder: its base model is checked where it is loaded
    pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    if pickled:
        raise ConfigError(
            f"model_name_or_path: {path}: only pickled weights ({pickled[0]}); only safetensors are loaded - "
            "convert the folder to safetensors first"
        )
    raise ConfigError(f"model_name_or_path: {path}: no model weights (*.safetensors) in the folder")


def load_tokenizer(model_args, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer with the chat template installed and EOS set to its end-of-turn token."""
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source is None:
        raise ConfigError("model_name_or_path: not set")
    tokenizer = AutoTokenizer.from_pretrained(
        source, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    setup_chat_template(tokenizer, model_args.chat_template)
    return tokenizer


def model_load_kwargs(model_args, trust_remote_code: bool = False) -> dict:
    """Keyword arguments for `from_pretrained`: dtype, attention, quantization, safetensors only."""
    kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=select_attn_implementation(model_args.attn_implementation),
        dtype=resolve_dtype(model_args.dtype),
        use_safetensors=True,
    )
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        if not model_args.use_peft:
            raise ConfigError("load_in_4bit/load_in_8bit: quantized weights cannot be trained; set use_peft: true")
        kwargs["quantization_config"] = quantization_config
        # each process keeps its whole quantized copy on its own device (DDP-style QLoRA)
        kwargs["device_map"] = {"": PartialState().local_process_index if torch.cuda.is_available() else "cpu"}
    return kwargs


def load_model(
    model_args, tokenizer: PreTrainedTokenizerBase, task: str = "causal-lm", trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load the model for training; embeddings and EOS/PAD follow the tokenizer."""
    check_local_weights(model_args.model_name_or_path)
    model_cls = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM
    extra = {"num_labels": 1} if task == "sequence-classification" else {}
    model = model_cls.from_pretrained(
        model_args.model_name_or_path, **model_load_kwargs(model_args, trust_remote_code), **extra
    )
    align_model_with_tokenizer(model, tokenizer)
    logger.info(
        "model %s: %.1fM parameters, attention %s, dtype %s",
        model_args.model_name_or_path,
        model.num_parameters() / 1e6,
        model.config._attn_implementation,
        model.dtype,
    )
    return model


def peft_config(model_args):
    """TRL's LoRA config from the model arguments (None without use_peft)."""
    return get_peft_config(model_args)


# ----------------------------------------------------------------------------------------------- new models
@dataclass
class Architecture:
    """A Llama-style decoder, sized by its fields."""

    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int | None = None  # default: 8/3 x hidden, rounded up to 64
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True


ARCHITECTURES: dict[str, Architecture] = {
    "tiny": Architecture(2, 64, 2, 2, 128, 256),
    "toy": Architecture(4, 128, 4, 4, 384, 512),
    "20m": Architecture(6, 384, 6, 6, 1024, 1024),
    "125m": Architecture(12, 768, 12, 12, 2048, 2048),
    "350m": Architecture(24, 1024, 16, 8, 2816, 2048),
    "1b": Architecture(16, 2048, 32, 8, 5632, 2048),
    "8b": Architecture(32, 4096, 32, 8, 14336, 8192, 500000.0, False),
}


def get_architecture(size: str | None = None, **overrides) -> Architecture:
    if size is not None and size not in ARCHITECTURES:
        raise ConfigError(f"model_size: unknown size '{size}' (known: {', '.join(ARCHITECTURES)})")
    fields = asdict(ARCHITECTURES[size]) if size else {}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return Architecture(**fields)


def build_model(arch: Architecture, tokenizer: PreTrainedTokenizerBase, attn_implementation: str = "auto", seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Llama-style causal LM for `tokenizer` (vocabulary, BOS/EOS/PAD)."""
    if arch.hidden_size % arch.num_heads or arch.num_heads % arch.num_kv_heads:
        raise ConfigError(
            f"architecture: hidden_size {arch.hidden_size} must divide by num_heads {arch.num_heads}, "
            f"and num_heads by num_kv_heads {arch.num_kv_heads}"
        )
    intermediate = arch.intermediate_size or -(-int(arch.hidden_size * 8 / 3) // 64) * 64
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position_embeddings,
        rope_theta=arch.rope_theta,
        tie_word_embeddings=arch.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=select_attn_implementation(attn_implementation),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    align_model_with_tokenizer(model, tokenizer)
    return model
