"""Export: merge an adapter into its base, quantize for serving, measure size and perplexity.

Merging uses peft's `merge_and_unload`; quantizing uses transformers' quantizers (bitsandbytes, torchao), so
every variant reloads with `from_pretrained`. Merging is models.merge_adapter, the project's one merge: a QLoRA
adapter is merged into full-precision weights: its base
is loaded 4-bit exactly as in training, dequantised by transformers (`model.dequantize`) and the adapter is
added to those weights: the merged model is the function that was trained, in a format any server loads.
(peft's merge on a 4-bit model would re-quantize base + update, losing most of a small update.)
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from llm_recipes.chat_templates import align_model_with_tokenizer
from llm_recipes.errors import ConfigError, DataError
from llm_recipes.hub import read_marker
from llm_recipes.models import (  # noqa: F401  (card_recipe: release reads recipes through export)
    card_recipe, device_map, load_pretrained, load_tokenizer_from, merge_adapter, resolve_model,
    saved_dtype,
)

logger = logging.getLogger(__name__)

# name -> (format, what it is, how to load it)
VARIANTS = {
    "bnb-nf4": ("bitsandbytes", "4-bit NF4 weights, double quantization (bitsandbytes)"),
    "bnb-int8": ("bitsandbytes", "8-bit LLM.int8() weights (bitsandbytes)"),
    "torchao-int8": ("torchao", "int8 weight-only, per-channel scales (torchao; served by vLLM/SGLang's torchao path)"),
}
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


def load_merged(
    source: str,
    base_override: str | None = None,
    base_quantization: str = "auto",
    double_quant: bool | None = None,
    dtype: str = "auto",
) -> tuple[PreTrainedModel, object, dict]:
    """A full model: `source` itself, or its adapter merged into the base it was trained on (models.merge_adapter:
    full precision, or the dequantised 4-bit/8-bit base of a QLoRA adapter). Returns (model, tokenizer, facts about
    the merge for the card). `dtype` 'auto' is the dtype the model (an adapter's base) was saved in."""
    model_source = resolve_model(source, "model_name_or_path", base_override)
    tokenizer = load_tokenizer_from(source, "model_name_or_path")
    if model_source.kind != "adapter":
        torch_dtype = saved_dtype(source) if dtype == "auto" else getattr(torch, dtype)
        model = load_pretrained(AutoModelForCausalLM, source, dtype=torch_dtype)
        merge = {"adapter": False, "dtype": str(torch_dtype).replace("torch.", "")}
    else:
        model, merge = merge_adapter(model_source, base_quantization=base_quantization, double_quant=double_quant,
                                     dtype=dtype)
    align_model_with_tokenizer(model, tokenizer)
    return model, tokenizer, merge


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
