"""Models and tokenizers: load from a Hub id or local folder, pick attention, quantize, add LoRA, or build a
new Llama-style model from an architecture. Every stage gets its model here: `load_pretrained` is the one place
weights are loaded (safetensors only, one-line errors)."""

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
from llm_recipes.errors import ConfigError, first_line

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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def looks_local(path: str) -> bool:
    """A path meant as a local file or folder (a Hub id is `name` or `owner/name`, and `owner` is no local folder)."""
    return (path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path
            or (path.count("/") == 1 and os.path.isdir(path.split("/")[0])))



def check_safetensors(path: str, key: str) -> None:
    """Read a safetensors file's header: a truncated or corrupt file fails here, in a second, not mid-load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{key}: {path}: truncated or corrupt safetensors file ({first_line(err)})") from None


def _local_folder(path: str | None, key: str, what: str) -> str | None:
    """`path` as a local folder to check, or None for a Hub id (checked when it loads); a local-looking path that
    is missing or not a folder is a one-line error naming `key`."""
    if path is None:
        raise ConfigError(f"{key}: not set")
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        if looks_local(path):
            raise ConfigError(f"{key}: {path}: no such folder")
        return None
    if not os.path.isdir(path):
        raise ConfigError(f"{key}: {path}: a file, not a {what} folder")
    return path


def check_tokenizer_source(path: str | None, key: str = "tokenizer_name_or_path") -> None:
    """A local tokenizer folder must exist and hold tokenizer files (a Hub id is checked when it loads)."""
    path = _local_folder(path, key, "tokenizer")
    if path is None:
        return
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{key}: {path}: no tokenizer in the folder (none of {', '.join(TOKENIZER_FILES[:4])}); "
            "point tokenizer_name_or_path at the folder that holds it"
        )


def check_local_weights(path: str | None, key: str = "model_name_or_path", tokenizer: bool = False,
                        base_override: str | None = None, tokenizer_from_base: bool = False) -> None:
    """A local model folder must exist, hold a config and safetensors weights whose headers read (pickled `.bin`
    files can run code when loaded, so they are refused: convert them to safetensors first), and, with `tokenizer`,
    a tokenizer (for an adapter, with `tokenizer_from_base`, its base's will do). An adapter folder needs
    safetensors adapter weights and a base that is there. A Hub id passes (it is loaded with use_safetensors=True)."""
    path = _local_folder(path, key, "model")
    if path is None:
        return
    names = os.listdir(path)
    pickled = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if "adapter_config.json" in names:  # a PEFT adapter folder
        if "adapter_model.safetensors" not in names:
            what = f"only pickled adapter weights ({pickled[0]})" if pickled else "no adapter weights (adapter_model.safetensors)"
            raise ConfigError(f"{key}: {path}: {what}; only safetensors are loaded")
        check_safetensors(os.path.join(path, "adapter_model.safetensors"), key)
        from llm_recipes.alignment import adapter_base  # (alignment imports this module)

        base = adapter_base(path, base_override)
        if os.path.isdir(base):
            check_local_weights(base, "base_model_name_or_path" if base_override else f"{key} (adapter base)")
            if tokenizer_from_base and any(os.path.isfile(os.path.join(base, n)) for n in TOKENIZER_FILES):
                tokenizer = False
    else:
        if "config.json" not in names:
            raise ConfigError(f"{key}: {path}: not a model folder (no config.json)")
        weights = sorted(n for n in names if n.endswith(".safetensors"))
        if not weights and not any(n.endswith(".safetensors.index.json") for n in names):
            if pickled:
                raise ConfigError(
                    f"{key}: {path}: only pickled weights ({pickled[0]}); only safetensors are loaded - "
                    "convert the folder to safetensors first"
                )
            raise ConfigError(f"{key}: {path}: no model weights (*.safetensors) in the folder")
        for name in weights:
            check_safetensors(os.path.join(path, name), key)
    if tokenizer and not any(n in names for n in TOKENIZER_FILES):
        raise ConfigError(
            f"{key}: {path}: no tokenizer in the folder (none of {', '.join(TOKENIZER_FILES[:4])}); "
            "set tokenizer_name_or_path"
        )


def load_pretrained(model_cls, path: str, key: str = "model_name_or_path", **kwargs):
    """The one place the project loads weights: any `from_pretrained` model class, safetensors only (a pickled
    checkpoint is never unpickled), and a path that cannot be loaded is a one-line error naming the key."""
    from safetensors import SafetensorError

    check_local_weights(path, key)
    kwargs["use_safetensors"] = True
    try:
        return model_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:  # HFValidationError is a ValueError
        raise ConfigError(f"{key}: '{path}' cannot be loaded as a model ({first_line(err)})") from None


def load_adapter(base_model, adapter_dir: str, key: str = "model_name_or_path", **kwargs):
    """A PEFT adapter on `base_model`, from its safetensors weights only (PEFT falls back to unpickling
    `adapter_model.bin`, and has no switch against it: a Hub adapter is fetched without its pickles)."""
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        if not os.path.isdir(adapter_dir):
            from huggingface_hub import snapshot_download

            adapter_dir = snapshot_download(adapter_dir, allow_patterns=["adapter_config.json", "adapter_model.safetensors"])
        if not os.path.isfile(os.path.join(adapter_dir, "adapter_model.safetensors")):
            raise ConfigError(f"{key}: {adapter_dir}: no adapter_model.safetensors; only safetensors are loaded")
        return PeftModel.from_pretrained(base_model, adapter_dir, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{key}: '{adapter_dir}' cannot be loaded as an adapter ({first_line(err)})") from None


def load_tokenizer_from(path: str, key: str = "tokenizer_name_or_path", **kwargs) -> PreTrainedTokenizerBase:
    """AutoTokenizer.from_pretrained with a one-line error naming the key (a folder without a tokenizer made
    transformers suggest installing sentencepiece)."""
    check_tokenizer_source(path, key)
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{key}: '{path}' cannot be loaded as a tokenizer ({first_line(err)})") from None


def load_tokenizer(model_args, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer with the chat template installed and EOS set to its end-of-turn token."""
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source is None:
        raise ConfigError("model_name_or_path: not set")
    key = "tokenizer_name_or_path" if model_args.tokenizer_name_or_path else "model_name_or_path"
    tokenizer = load_tokenizer_from(source, key, revision=model_args.model_revision, trust_remote_code=trust_remote_code)
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
    model_cls = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM
    extra = {"num_labels": 1} if task == "sequence-classification" else {}
    model = load_pretrained(
        model_cls, model_args.model_name_or_path, **model_load_kwargs(model_args, trust_remote_code), **extra
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
