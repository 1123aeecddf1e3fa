"""Models and tokenizers: where a model comes from (`resolve_model`: Hub id, local folder, or adapter with its
base), loading (`load_pretrained`, the one place weights are loaded: safetensors only, one-line errors), merging
an adapter into the base it was trained on (`merge_adapter`), attention, quantization, LoRA, and new Llama-style
models built from an architecture. Every stage gets its model here."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Literal

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


ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a Hub id, a local model folder, or a PEFT adapter (a folder, or a Hub id) with the
    base it was trained on (a local folder or a Hub id). `key` is the config key that named it, for errors."""

    kind: Literal["hub", "folder", "adapter"]
    path: str
    key: str
    base: str | None = None
    base_key: str | None = None
    adapter_config: dict | None = None

    @property
    def base_is_local(self) -> bool:
        return self.base is not None and os.path.isdir(self.base)


def resolve_model(source: str | None, key: str = "model_name_or_path", base_override: str | None = None) -> ModelSource:
    """The one answer to "where does this model come from". A path that exists is a folder (an adapter folder when
    it holds adapter_config.json); a local-looking path that does not exist is an error naming `key`; anything
    else is a Hub id (an adapter if the Hub, or its cache, has an adapter_config.json for it). An adapter's base is
    `base_override`, else its `base_model_name_or_path`, tried as written and relative to the adapter folder; a Hub
    id base is accepted (loaded from the Hub when used); a local base that is not there is an error naming the
    adapter and the key base_model_name_or_path."""
    folder = _local_folder(source, key, "model")
    path = folder or source
    if folder is None:
        config_file = _hub_adapter_config(path)
    else:
        config_file = os.path.join(path, ADAPTER_CONFIG) if os.path.isfile(os.path.join(path, ADAPTER_CONFIG)) else None
    if config_file is None:
        return ModelSource("hub" if folder is None else "folder", path, key)
    with open(config_file, encoding="utf-8") as fh:
        config = json.load(fh)
    named = base_override or config.get("base_model_name_or_path")
    where = "base_model_name_or_path" if base_override else f"{ADAPTER_CONFIG}: base_model_name_or_path"
    if not named:
        raise ConfigError(f"{key}: {path}: adapter without its base ({ADAPTER_CONFIG} names no "
                          "base_model_name_or_path); set base_model_name_or_path")
    named = os.path.expanduser(named)
    base_key = "base_model_name_or_path" if base_override else f"{key} (adapter base)"
    for candidate in (named, os.path.join(path, named)) if os.path.isdir(path) else (named,):
        if os.path.isdir(candidate):
            return ModelSource("adapter", path, key, candidate, base_key, config)
    if looks_local(named) or os.path.exists(named):
        raise ConfigError(f"{key}: {path}: adapter without its base: '{named}' ({where}) is not a model folder here; "
                          "set base_model_name_or_path to the base model the adapter was trained on")
    return ModelSource("adapter", path, key, named, base_key, config)  # a Hub id base


def _hub_adapter_config(repo: str) -> str | None:
    """adapter_config.json of a Hub id, if it is an adapter (None for a model, or when the Hub cannot say: the
    model load that follows reports that)."""
    from transformers.utils import find_adapter_config_file

    try:
        return find_adapter_config_file(repo)
    except (OSError, ValueError):
        return None


def has_tokenizer(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES)


def check_safetensors(path: str, key: str) -> None:
    """Read a safetensors file's header: a truncated or corrupt file fails here, in a second, not mid-load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{key}: {path}: truncated or corrupt safetensors file ({first_line(err)})") from None


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
    safetensors adapter weights and a base that is there (see resolve_model). A Hub id passes (it is loaded with
    use_safetensors=True)."""
    source = resolve_model(path, key, base_override)
    if source.kind == "hub" or not os.path.isdir(source.path):
        return
    path = source.path
    names = os.listdir(path)
    pickled = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if source.kind == "adapter":
        if "adapter_model.safetensors" not in names:
            what = f"only pickled adapter weights ({pickled[0]})" if pickled else "no adapter weights (adapter_model.safetensors)"
            raise ConfigError(f"{key}: {path}: {what}; only safetensors are loaded")
        check_safetensors(os.path.join(path, "adapter_model.safetensors"), key)
        if source.base_is_local:
            check_local_weights(source.base, source.base_key)
            if tokenizer_from_base and has_tokenizer(source.base):
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
    if tokenizer and not has_tokenizer(path):
        raise ConfigError(
            f"{key}: {path}: no tokenizer in the folder (none of {', '.join(TOKENIZER_FILES[:4])}); "
            "set tokenizer_name_or_path"
        )


def _from_pretrained(model_cls, path: str, key: str, **kwargs):
    """`model_cls.from_pretrained` of a full model (Hub id or folder), safetensors only (a pickled checkpoint is
    never unpickled), a path that cannot be loaded a one-line error naming the key."""
    from safetensors import SafetensorError

    check_local_weights(path, key)
    kwargs["use_safetensors"] = True
    try:
        return model_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:  # HFValidationError is a ValueError
        raise ConfigError(f"{key}: '{path}' cannot be loaded as a model ({first_line(err)})") from None


def load_pretrained(model_cls, path: str, key: str = "model_name_or_path", base_override: str | None = None, **kwargs):
    """The one place the project loads weights, for every model it loads (policy, reference, reward, value,
    evaluation, export, CAI): any `from_pretrained` model class from a Hub id, a model folder or an adapter (see
    resolve_model). An adapter is merged into the base it was trained on (`merge_adapter`); loaded quantized or
    as another head (a causal-LM adapter as a reward model), the merged model is saved to a temporary folder and
    loaded from there like any model."""
    source = resolve_model(path, key, base_override)
    if source.kind != "adapter":
        return _from_pretrained(model_cls, source.path, key, **kwargs)
    same_head = _is_classifier(_adapter_model_class(source)) == _is_classifier(model_cls)
    if same_head and "quantization_config" not in kwargs:
        base_kwargs = {k: v for k, v in kwargs.items() if k != "revision"}  # a revision names the adapter's
        return merge_adapter(source, dtype=base_kwargs.pop("dtype", None), **base_kwargs)[0]
    folder = merged_folder(source, dtype=kwargs.get("dtype"), trust_remote_code=kwargs.get("trust_remote_code", False))
    kwargs.pop("revision", None)
    return _from_pretrained(model_cls, folder, key, **kwargs)


def load_causal_lm(path: str, base_override: str | None = None, key: str = "model_name_or_path", **kwargs):
    """A causal LM for inference from a Hub id, a model folder or an adapter (merged into its base)."""
    return load_pretrained(AutoModelForCausalLM, path, key, base_override, **kwargs)


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


# ----------------------------------------------------------------------------------------------- adapters
BASE_QUANTIZATIONS = ("auto", "none", "nf4", "fp4", "int8")


def device_map() -> dict:
    return {"": 0 if torch.cuda.is_available() else "cpu"}


def card_recipe(folder: str) -> tuple[str | None, str | None]:
    """(recipe path, recipe YAML text) from the `## Recipe (`path`)` section of a folder's model card."""
    import re

    card = os.path.join(folder, "README.md")
    if not os.path.isfile(card):
        return None, None
    with open(card, encoding="utf-8") as fh:
        match = re.search(r"^## Recipe \(`([^`]*)`\)\s*```yaml\n(.*?)```", fh.read(), re.S | re.M)
    return (match.group(1), match.group(2)) if match else (None, None)


def _training_recipe(source: str) -> dict:
    import yaml

    _, text = card_recipe(source) if os.path.isdir(source) else (None, None)
    return (yaml.safe_load(text) or {}) if text else {}


def training_quantization(source: str) -> str:
    """How an adapter's base was quantized in training: the run record's (llm_recipes.json) `quantization`, else
    its recipe's load_in_4bit/load_in_8bit/bnb_4bit_quant_type (from the model card), else 'none'."""
    from llm_recipes.hub import read_marker

    marker = read_marker(source) if os.path.isdir(source) else None
    if marker and marker.get("quantization"):
        return str(marker["quantization"])
    return quantization_of(_training_recipe(source))


def quantization_of(settings: dict) -> str:
    """How model settings (a recipe, or a ModelArguments' fields) load the base: nf4/fp4, int8 or 'none'."""
    if settings.get("load_in_4bit"):
        return str(settings.get("bnb_4bit_quant_type") or "nf4")
    return "int8" if settings.get("load_in_8bit") else "none"


def saved_dtype(model: str) -> torch.dtype:
    """The dtype a model was saved in (float32 if its config names none)."""
    from transformers import AutoConfig

    saved = getattr(AutoConfig.from_pretrained(model), "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    return saved if isinstance(saved, torch.dtype) else torch.float32


def _adapter_model_class(source: ModelSource):
    task = (source.adapter_config or {}).get("task_type")
    return AutoModelForSequenceClassification if task == "SEQ_CLS" else AutoModelForCausalLM


def _is_classifier(model_cls) -> bool:
    return "SequenceClassification" in model_cls.__name__


def merge_adapter(source: ModelSource, *, base_quantization: str = "auto", double_quant: bool | None = None,
                  dtype: torch.dtype | str | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                  **base_kwargs) -> tuple[PreTrainedModel, dict]:
    """The one adapter merge: the adapter added to the weights it was trained against. A LoRA adapter trained on a
    full base is merged into that base; a QLoRA adapter (base loaded 4-bit or 8-bit in training: `base_quantization`,
    'auto' reads it from the run record) into the base loaded quantized exactly as in training and dequantised by
    transformers (`model.dequantize`), so the merged model is the function that was trained, in full precision.
    (peft's merge on a quantized model re-quantizes base + update, losing most of a small update.)
    The base's embeddings and EOS/PAD follow `tokenizer` (default: the one saved with the adapter), as in training.
    Returns (merged model, facts about the merge for the model card)."""
    from transformers import BitsAndBytesConfig

    quant = training_quantization(source.path) if base_quantization == "auto" else base_quantization
    if quant not in BASE_QUANTIZATIONS[1:]:
        raise ConfigError(f"base_quantization: '{quant}' must be one of {', '.join(BASE_QUANTIZATIONS)}")
    if isinstance(dtype, torch.dtype):
        torch_dtype = dtype
    else:
        torch_dtype = resolve_dtype(dtype) if dtype not in (None, "auto") else saved_dtype(source.base)
    model_cls = _adapter_model_class(source)
    if _is_classifier(model_cls):
        base_kwargs.setdefault("num_labels", 1)  # the project's reward models: one output
    if quant == "none":
        model = _from_pretrained(model_cls, source.base, source.base_key, dtype=torch_dtype, **base_kwargs)
    else:
        if double_quant is None:
            double_quant = bool(_training_recipe(source.path).get("use_bnb_nested_quant"))
        if quant == "int8":
            bnb = BitsAndBytesConfig(load_in_8bit=True)
        else:
            bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_use_double_quant=double_quant,
                                     bnb_4bit_compute_dtype=torch_dtype)
        base_kwargs["device_map"] = device_map()
        quantized = _from_pretrained(model_cls, source.base, source.base_key, quantization_config=bnb, dtype=torch_dtype,
                                     **base_kwargs)
        # the weights the adapter was trained against, as ordinary full-precision Linear layers
        model = quantized.dequantize(dtype=torch_dtype)  # (dtype given: transformers 5.23 passes a str otherwise)
    if tokenizer is None and os.path.isdir(source.path) and has_tokenizer(source.path):
        tokenizer = load_tokenizer_from(source.path, source.key)
    if tokenizer is not None:
        align_model_with_tokenizer(model, tokenizer)  # as in training; the adapter carries any added rows
    model = load_adapter(model, source.path, source.key).merge_and_unload()
    model.config.name_or_path = source.path
    logger.info("merged adapter %s into its base %s (%s)", source.path, source.base,
                "full precision" if quant == "none" else f"loaded {quant} as in training, dequantised")
    return model, {"adapter": True, "base_model": source.base, "base_quantization": quant,
                   "double_quant": bool(double_quant) if quant in ("nf4", "fp4") else None,
                   "dtype": str(torch_dtype).replace("torch.", "")}


def merged_folder(source: ModelSource, dtype: torch.dtype | str | None = None, trust_remote_code: bool = False,
                  **merge_kwargs) -> str:
    """`merge_adapter` saved to a temporary folder removed at exit (to load it quantized or with another head)."""
    import atexit
    import shutil
    import tempfile

    merged, _ = merge_adapter(source, dtype=dtype, trust_remote_code=trust_remote_code, **merge_kwargs)
    folder = tempfile.mkdtemp(prefix="llm-recipes-merged-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    merged.save_pretrained(folder)
    return folder


def merge_trained_adapter(peft_model, model_args, tokenizer: PreTrainedTokenizerBase,
                          dtype: torch.dtype | str | None = None, trust_remote_code: bool = False) -> PreTrainedModel:
    """A LoRA model just trained on the base `model_args` loaded (full, or 4-bit/8-bit for QLoRA), merged by
    `merge_adapter`: saved as an adapter, then merged like any adapter folder."""
    import tempfile

    quantization = quantization_of(vars(model_args))
    with tempfile.TemporaryDirectory() as adapter_dir:
        peft_model.save_pretrained(adapter_dir)
        source = resolve_model(adapter_dir, base_override=model_args.model_name_or_path)
        merged, _ = merge_adapter(source, base_quantization=quantization, dtype=dtype, tokenizer=tokenizer,
                                  double_quant=bool(getattr(model_args, "use_bnb_nested_quant", False)),
                                  trust_remote_code=trust_remote_code)
    return merged


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
        model_cls, model_args.model_name_or_path, "model_name_or_path", getattr(model_args, "base_model_name_or_path", None),
        **model_load_kwargs(model_args, trust_remote_code), **extra
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
