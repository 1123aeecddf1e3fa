"""Export: merge an adapter into its base, quantize for serving, measure size and perplexity.

Merging uses peft's `merge_and_unload`; quantizing uses transformers' quantizers (bitsandbytes, torchao), so
every variant reloads with `from_pretrained`. A QLoRA adapter is merged into full-precision weights: its base
is loaded 4-bit exactly as in training, dequantised by transformers (`model.dequantize`) and the adapter is
added to those weights: the merged model is the function that was trained, in a format any server loads.
(peft's merge on a 4-bit model would re-quantize base + update, losing most of a small update.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

import torch
import yaml
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    PreTrainedModel,
)
from transformers.utils import find_adapter_config_file

from llm_recipes.chat_templates import align_model_with_tokenizer
from llm_recipes.errors import ConfigError, DataError
from llm_recipes.hub import read_marker
from llm_recipes.models import load_adapter, load_pretrained, load_tokenizer_from

logger = logging.getLogger(__name__)

# name -> (format, what it is, how to load it)
VARIANTS = {
    "bnb-nf4": ("bitsandbytes", "4-bit NF4 weights, double quantization (bitsandbytes)"),
    "bnb-int8": ("bitsandbytes", "8-bit LLM.int8() weights (bitsandbytes)"),
    "torchao-int8": ("torchao", "int8 weight-only, per-channel scales (torchao; served by vLLM/SGLang's torchao path)"),
}
BASE_QUANTIZATIONS = ("auto", "none", "nf4", "fp4", "int8")


def device_map() -> dict:
    return {"": 0 if torch.cuda.is_available() else "cpu"}


def resolve_source(model_name_or_path: str | None, candidates: list[str] | None) -> str:
    """The model to export: `model_name_or_path`, else the first candidate folder holding a finished stage."""
    if model_name_or_path:
        return model_name_or_path
    if not candidates:
        raise ConfigError("model_name_or_path: not set (nor model_candidates)")
    for candidate in candidates:
        if read_marker(candidate) is not None:
            return candidate
    raise ConfigError(f"model_candidates: none of {', '.join(candidates)} holds a finished stage (no llm_recipes.json)")


def adapter_base(source: str, override: str | None = None) -> str | None:
    """The base model of a PEFT adapter (None if `source` is a full model). `override` replaces the base named
    in adapter_config.json, which is often a path that no longer exists (a training machine's folder)."""
    config_file = find_adapter_config_file(source)
    if config_file is None:
        return None
    named = json.loads(Path(config_file).read_text()).get("base_model_name_or_path")
    base = override or named
    if not base:
        raise ConfigError(f"{config_file}: no base_model_name_or_path; set base_model_name_or_path")
    looks_local = base.startswith((".", "/", "~")) or base.count("/") > 1
    if looks_local and not os.path.isdir(base):
        key = "base_model_name_or_path" if override else f"{config_file}: base_model_name_or_path"
        raise ConfigError(f"{key}: base model folder '{base}' not found (set base_model_name_or_path to the base)")
    return base


def card_recipe(folder: str | Path) -> tuple[str | None, str | None]:
    """(recipe path, recipe YAML text) from the `## Recipe (`path`)` section of a folder's model card."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None, None
    match = re.search(r"^## Recipe \(`([^`]*)`\)\s*```yaml\n(.*?)```", card.read_text(encoding="utf-8"), re.S | re.M)
    return (match.group(1), match.group(2)) if match else (None, None)


def training_quantization(source: str) -> str:
    """How an adapter's base was quantized in training: the marker's `quantization`, else its recipe's
    load_in_4bit/load_in_8bit/bnb_4bit_quant_type (from the card), else 'none'."""
    marker = read_marker(source) if os.path.isdir(source) else None
    if marker and marker.get("quantization"):
        return str(marker["quantization"])
    _, text = card_recipe(source) if os.path.isdir(source) else (None, None)
    recipe = (yaml.safe_load(text) or {}) if text else {}
    if recipe.get("load_in_4bit"):
        return str(recipe.get("bnb_4bit_quant_type", "nf4"))
    if recipe.get("load_in_8bit"):
        return "int8"
    return "none"


def resolve_dtype(name: str, model: str) -> torch.dtype:
    """'auto' -> the dtype the model was saved in (float32 if it names none)."""
    if name != "auto":
        return getattr(torch, name)
    saved = getattr(AutoConfig.from_pretrained(model), "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    return saved if isinstance(saved, torch.dtype) else torch.float32


def load_merged(
    source: str,
    base_override: str | None = None,
    base_quantization: str = "auto",
    double_quant: bool | None = None,
    dtype: str = "auto",
) -> tuple[PreTrainedModel, object, dict]:
    """A full model: `source` itself, or its adapter merged into the full-precision (or dequantised) base.
    Returns (model, tokenizer, facts about the merge for the card)."""
    base = adapter_base(source, base_override)
    tokenizer = load_tokenizer_from(source, "model_name_or_path")
    if base is None:
        torch_dtype = resolve_dtype(dtype, source)
        model = load_pretrained(AutoModelForCausalLM, source, dtype=torch_dtype)
        align_model_with_tokenizer(model, tokenizer)
        return model, tokenizer, {"adapter": False, "dtype": str(torch_dtype).replace("torch.", "")}

    quant = training_quantization(source) if base_quantization == "auto" else base_quantization
    if quant not in BASE_QUANTIZATIONS[1:]:
        raise ConfigError(f"base_quantization: '{quant}' must be one of {', '.join(BASE_QUANTIZATIONS)}")
    torch_dtype = resolve_dtype(dtype, base)
    if quant == "none":
        model = load_pretrained(AutoModelForCausalLM, base, "base_model_name_or_path", dtype=torch_dtype)
    else:
        if double_quant is None:
            _, text = card_recipe(source) if os.path.isdir(source) else (None, None)
            double_quant = bool((yaml.safe_load(text) or {}).get("use_bnb_nested_quant")) if text else False
        if quant == "int8":
            bnb = BitsAndBytesConfig(load_in_8bit=True)
        else:
            bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_use_double_quant=double_quant,
                                     bnb_4bit_compute_dtype=torch_dtype)
        quantized = load_pretrained(AutoModelForCausalLM, base, "base_model_name_or_path", quantization_config=bnb,
                                    dtype=torch_dtype, device_map=device_map())
        # the weights the adapter was trained against, as ordinary full-precision Linear layers
        model = quantized.dequantize(dtype=torch_dtype)  # (dtype given: transformers 5.23 passes a str otherwise)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))  # as in training; the adapter carries the trained rows
    model = load_adapter(model, source).merge_and_unload()
    align_model_with_tokenizer(model, tokenizer)
    model.config.name_or_path = source
    return model, tokenizer, {"adapter": True, "base_model": base, "base_quantization": quant,
                              "double_quant": bool(double_quant) if quant in ("nf4", "fp4") else None,
                              "dtype": str(torch_dtype).replace("torch.", "")}


def quantization_config(variant: str, dtype: torch.dtype):
    """transformers' quantization config for a variant name."""
    if variant == "bnb-nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype)
    if variant == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if variant == "torchao-int8":
        try:
            from torchao.quantization import Int8WeightOnlyConfig
        except ImportError:
            raise ConfigError("quantize: 'torchao-int8' needs the torchao package (pip install torchao)") from None
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    raise ConfigError(f"quantize: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")


def save_quantized(merged_dir: str | Path, variant: str, out_dir: str | Path, dtype: torch.dtype) -> None:
    """Quantize the saved merged model while loading it, and save the quantized checkpoint with its tokenizer."""
    model = load_pretrained(AutoModelForCausalLM, str(merged_dir), "output_dir",
                            quantization_config=quantization_config(variant, dtype), dtype=dtype, device_map=device_map())
    model.save_pretrained(out_dir)
    load_tokenizer_from(str(merged_dir), "output_dir").save_pretrained(out_dir)


def load_texts(dataset: str, split: str, column: str, max_samples: int | None) -> list[str]:
    from llm_recipes.data import load_source

    ds = load_source(dataset, split=split)
    if column not in ds.column_names:
        raise DataError(f"{dataset}[{split}]: no column '{column}' (columns: {', '.join(ds.column_names)}); set eval_text_column")
    texts = [t for t in ds[column][: max_samples or None] if t and t.strip()]
    if not texts:
        raise DataError(f"{dataset}[{split}]: no non-empty '{column}' rows for the perplexity measurement")
    return texts


@torch.inference_mode()
def perplexity(model: PreTrainedModel, tokenizer, texts: list[str], max_length: int = 512) -> float:
    """Token-weighted perplexity of `texts` (each truncated to `max_length` tokens)."""
    model.eval()
    nll, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(model.device)
        if ids.shape[1] < 2:
            continue
        loss = model(input_ids=ids, labels=ids).loss
        nll += loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(nll / max(count, 1))


def weights_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (safetensors shards) in a folder."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def load_for_eval(folder: str | Path) -> tuple[PreTrainedModel, object]:
    """Reload a saved (possibly quantized) folder as a user would."""
    return (load_pretrained(AutoModelForCausalLM, str(folder), "output_dir", device_map=device_map()),
            load_tokenizer_from(str(folder), "output_dir"))


def export_model(
    source: str,
    out_dir: str | Path,
    *,
    variants: list[str],
    base_override: str | None = None,
    base_quantization: str = "auto",
    double_quant: bool | None = None,
    dtype: str = "auto",
    max_shard_size: str = "2GB",
    texts: list[str] | None = None,
    max_length: int = 512,
) -> dict:
    """Merge `source` into a full model in `out_dir`, one subfolder per quantized variant; returns the
    merge facts and, per variant (`merged` included), weight bytes and held-out perplexity."""
    for variant in variants:
        if variant not in VARIANTS:
            raise ConfigError(f"quantize: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
    out_dir = Path(out_dir)
    model, tokenizer, merge = load_merged(source, base_override, base_quantization, double_quant, dtype)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    torch_dtype = model.dtype
    del model
    results = {"merged": {"path": ".", "format": "safetensors", "dtype": merge["dtype"], "weights_bytes": weights_bytes(out_dir)}}
    for variant in variants:
        save_quantized(out_dir, variant, out_dir / variant, torch_dtype)
        results[variant] = {"path": variant, "format": VARIANTS[variant][0], "weights_bytes": weights_bytes(out_dir / variant)}
    if texts:
        for name, info in results.items():
            reloaded, tok = load_for_eval(out_dir / info["path"])
            info["perplexity"] = perplexity(reloaded, tok, texts, max_length)
            del reloaded
        ref = results["merged"]["perplexity"]
        for info in results.values():
            info["perplexity_delta"] = info["perplexity"] - ref
    for name, info in results.items():
        logger.info("%-13s %8.2f MB%s", name, info["weights_bytes"] / 1e6,
                    f"  perplexity {info['perplexity']:.3f} ({info['perplexity_delta']:+.3f})" if "perplexity" in info else "")
    return {"merge": merge, "variants": results}


def replace_folder(new: str | Path, final: str | Path) -> None:
    """Move a finished temporary folder into place; an earlier release there is removed only afterwards."""
    import shutil
    import tempfile

    final = Path(final)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old."))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
