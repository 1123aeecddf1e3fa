"""Merge, quantize, measure and release: `ExportArguments` (read by `llm_recipes.export`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExportArguments:
    """Merge, quantize, measure and release a model (`scripts/export.py`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model or PEFT adapter (LoRA/QLoRA) to export: a local folder or Hub id."}
    )
    model_candidates: list[str] | None = field(
        default=None,
        metadata={"help": "Used when model_name_or_path is unset: the first of these folders holding a finished stage "
                  "(completion marker) is exported, e.g. [runs/toy/ppo, runs/toy/dpo, runs/toy/sft]."},
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base of the adapter, replacing the one named in its adapter_config.json."}
    )
    base_quantization: str = field(
        default="auto",
        metadata={"help": "How the adapter's base was quantized in training: the base is loaded so, dequantised and the "
                  "adapter merged into the full-precision weights. 'auto' reads the adapter's marker or recipe.",
                  "choices": ["auto", "none", "nf4", "fp4", "int8"]},
    )
    base_double_quant: bool | None = field(
        default=None, metadata={"help": "Whether that 4-bit base used nested (double) quantization; unset: from the recipe."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "dtype of the merged model; 'auto' keeps the base's saved dtype.",
                                  "choices": ["auto", "float32", "bfloat16", "float16"]}
    )
    max_shard_size: str = field(default="2GB", metadata={"help": "Largest safetensors shard of the merged model."})
    quantize: list[str] = field(
        default_factory=lambda: ["bnb-nf4", "bnb-int8", "torchao-int8"],
        metadata={"help": "Quantized variants, each saved in a subfolder: bnb-nf4, bnb-int8 (bitsandbytes), "
                  "torchao-int8 (torchao int8 weight-only, a serving format).",
                  "choices": ["bnb-nf4", "bnb-int8", "torchao-int8"]},
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Text dataset for the held-out perplexity of each variant (unset: none)."}
    )
    eval_split: str = field(default="validation", metadata={"help": "Split of eval_dataset."})
    eval_text_column: str = field(default="text", metadata={"help": "Text column of eval_dataset."})
    eval_max_samples: int | None = field(default=200, metadata={"help": "At most this many texts are measured."})
    eval_max_length: int = field(default=512, metadata={"help": "Texts are cut to this many tokens."})
    pipeline: str | None = field(
        default=None, metadata={"help": "Pipeline YAML naming the recipe of each folder in the lineage (for folders "
                                "whose marker and card name none)."}
    )
    output_dir: str = field(default="runs/release", metadata={"help": "Release folder: merged model, variants, card."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the release (and its lineage datasets) to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Model repo of the push, e.g. me/toy-chat."})
    hub_private: bool | None = field(default=None, metadata={"help": "Create the repos private."})
    push_datasets: bool = field(
        default=True, metadata={"help": "With push_to_hub: push each local dataset of the lineage, with its card, as "
                                "<namespace>/<model name>-<dataset folder>."}
    )
    hub_dataset_namespace: str | None = field(
        default=None, metadata={"help": "Namespace of the dataset repos (default: that of hub_model_id)."}
    )
