"""Export and release: merge an adapter into its base, quantize for serving, measure size and held-out
perplexity of each variant, write a card with the model's lineage, push to the Hub when asked.

    accelerate launch scripts/export.py --config recipes/toy/export.yaml
    llm-recipes export --model_name_or_path runs/my-qlora --quantize bnb-nf4 torchao-int8 --output_dir runs/release
"""

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from llm_recipes import export, release
from llm_recipes.export_config import ExportArguments
from llm_recipes.parser import run_cli
from llm_recipes.errors import ConfigError
from llm_recipes.hub import mark_complete, write_text_atomic
from llm_recipes.training import cpu_threads, recipe_path, setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (ExportArguments,)


def main(args: ExportArguments) -> None:
    setup_logging()
    torch.set_num_threads(cpu_threads())
    if args.push_to_hub and not args.hub_model_id:
        raise ConfigError("hub_model_id: required when push_to_hub is true")
    source = export.resolve_source(args.model_name_or_path, args.model_candidates)
    logger.info("exporting %s -> %s", source, args.output_dir)
    texts = None
    if args.eval_dataset:
        texts = export.load_texts(args.eval_dataset, args.eval_split, args.eval_text_column, args.eval_max_samples)

    # everything is built in a temporary folder beside output_dir and moved into place when complete
    out = Path(args.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp.chmod(0o755)
    try:
        result = export.export_model(
            source, tmp, variants=args.quantize, base_override=args.base_model_name_or_path,
            base_quantization=args.base_quantization, double_quant=args.base_double_quant, dtype=args.dtype,
            max_shard_size=args.max_shard_size, texts=texts, max_length=args.eval_max_length,
        )
        metrics = {}
        for name, info in result["variants"].items():
            metrics[f"{name}_MB"] = round(info["weights_bytes"] / 1e6, 3)
            if "perplexity" in info:
                metrics[f"{name}_perplexity"] = round(info["perplexity"], 3)

        nodes = release.lineage(source, args.pipeline)
        nodes.append({"ref": args.output_dir, "kind": "stage", "stage": "export", "inputs": [source],
                      "figures": {"metrics": metrics}, "recipe": recipe_path(),
                      "recipe_text": Path(recipe_path()).read_text() if recipe_path() and Path(recipe_path()).is_file() else None})
        dataset_repos = {}
        if args.push_to_hub and args.push_datasets:
            dataset_repos = release.dataset_repo_ids(nodes, args.hub_model_id, args.hub_dataset_namespace)
        eval_desc = f"`{args.eval_dataset}` [{args.eval_split}], {len(texts)} texts" if texts else None
        card = release.release_card(out.name, source, result, nodes, hub_model_id=args.hub_model_id,
                                    dataset_repos=dataset_repos, eval_desc=eval_desc)
        write_text_atomic(tmp / "README.md", card)
        mark_complete(tmp, "export", base_model=source, datasets=[], recipe=recipe_path(), metrics=metrics,
                      merge=result["merge"], variants=result["variants"],
                      lineage=[{k: n.get(k) for k in ("ref", "kind", "stage", "recipe")} for n in nodes])
        if args.push_to_hub:
            release.push_release(tmp, args.hub_model_id, dataset_repos, private=args.hub_private)
        export.replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("release written to %s%s", out, f" and pushed to {args.hub_model_id}" if args.push_to_hub else "")


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
