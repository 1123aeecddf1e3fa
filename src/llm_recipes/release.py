"""Release: the lineage of an exported model (data -> each stage -> this model) and its push to the Hub.

The lineage is walked back from a folder through each folder's completion marker (`base_model`, `datasets`,
`dataset`, `tokenizer`) and the inputs its recipe names (`model_name_or_path`, `tokenizer_name_or_path`,
`dataset_name`, a mixture's datasets...). A stage's recipe is the one its marker or model card names, else
the one a pipeline YAML gives for its output folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from llm_recipes import PROJECT_ROOT
from llm_recipes.errors import ConfigError
from llm_recipes.export import VARIANTS, card_recipe
from llm_recipes.hub import push_folder, read_marker
from llm_recipes.redaction import redact_text

logger = logging.getLogger(__name__)

MARKER_INPUTS = ("base_model", "datasets", "dataset", "tokenizer", "source")
RECIPE_INPUTS = ("model_name_or_path", "tokenizer_name_or_path", "dataset_name", "ref_model_name_or_path",
                 "reward_model_path", "sft_model_path", "base_model_name_or_path")
HEADLINE = ("rows", "vocab_size", "bytes_per_token", "parameters", "metrics", "results")


def _local(ref: str) -> Path | None:
    for candidate in (Path(ref), PROJECT_ROOT / ref):
        if candidate.exists():
            return candidate
    return None


def _key(ref: str) -> str:
    path = _local(ref)
    return str(path.resolve()) if path else ref


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def _recipe_inputs(recipe: dict) -> list[str]:
    inputs = [v for key in RECIPE_INPUTS for v in _as_list(recipe.get(key))]
    mixture = recipe.get("dataset_mixture") or {}
    for entry in mixture.get("datasets", []) if isinstance(mixture, dict) else []:
        if isinstance(entry, dict):
            inputs += _as_list(entry.get("id") or entry.get("path"))
    return inputs


def pipeline_recipes(pipeline: str | None) -> dict[str, str]:
    """Output folder (resolved) -> recipe path, from a pipeline YAML."""
    if not pipeline:
        return {}
    path = _local(pipeline)
    if path is None:
        raise ConfigError(f"pipeline: '{pipeline}' not found")
    spec = yaml.safe_load(path.read_text()) or {}
    return {_key(s["output"]): s["config"] for s in spec.get("stages", []) if isinstance(s, dict) and "output" in s and "config" in s}


def describe(ref: str, recipes: dict[str, str]) -> dict:
    """One node of the lineage: what `ref` is, which stage made it, its recipe, figures and inputs."""
    path = _local(ref)
    if path is None:
        return {"ref": ref, "kind": "hub", "inputs": []}
    marker = read_marker(path) if path.is_dir() else None
    node: dict[str, Any] = {"ref": ref, "kind": "stage" if marker else "folder", "inputs": []}
    if marker is None:
        parent = path.parent
        if read_marker(parent) is not None:  # a dataset inside a stage's output folder (runs/toy/data/sft)
            node.update(kind="dataset", inputs=[str(Path(ref).parent)])
            rows = (read_marker(parent) or {}).get("rows")
            if isinstance(rows, dict) and path.name in rows:
                node["figures"] = {"rows": rows[path.name]}
        if (path / "README.md").is_file() and (path / "data").is_dir():
            node["kind"] = "dataset"
            node["title"] = next((line[2:].strip() for line in (path / "README.md").read_text().splitlines()
                                  if line.startswith("# ")), None)
        return node
    node["stage"] = marker.get("stage")
    node["finished"] = marker.get("finished")
    node["figures"] = {k: marker[k] for k in HEADLINE if k in marker}
    recipe_path = marker.get("recipe")
    recipe_text = None
    if not recipe_path:
        recipe_path, recipe_text = card_recipe(path)
    if not recipe_path:
        recipe_path = recipes.get(_key(ref))
    if recipe_path and _local(recipe_path) and _local(recipe_path).is_file():
        recipe_text = _local(recipe_path).read_text(encoding="utf-8")
    node["recipe"], node["recipe_text"] = recipe_path, recipe_text
    inputs = [v for key in MARKER_INPUTS for v in _as_list(marker.get(key))]
    if recipe_text:
        try:
            inputs += _recipe_inputs(yaml.safe_load(recipe_text) or {})
        except yaml.YAMLError:
            pass
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        inputs += _as_list(json.loads(adapter_config.read_text()).get("base_model_name_or_path"))
    seen, unique = {_key(ref)}, []
    for item in inputs:
        if _key(item) not in seen:
            seen.add(_key(item))
            unique.append(item)
    node["inputs"] = unique
    return node


def lineage(ref: str, pipeline: str | None = None) -> list[dict]:
    """Every ancestor of `ref` and `ref` itself, inputs before what was made from them."""
    recipes = pipeline_recipes(pipeline)
    nodes: dict[str, dict] = {}
    order: list[str] = []

    def visit(item: str) -> None:
        key = _key(item)
        if key in nodes:
            return
        nodes[key] = node = describe(item, recipes)
        for parent in node["inputs"]:
            visit(parent)
        order.append(key)

    visit(ref)
    return [nodes[k] for k in order]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def lineage_markdown(nodes: list[dict]) -> str:
    lines = ["## Lineage", "", "From the data to this model, each step with its recipe and its figures.", "", "```mermaid", "graph LR"]
    ids = {_key(n["ref"]): f"n{i}" for i, n in enumerate(nodes)}
    for n in nodes:
        label = f"{n.get('stage') or n['kind']}: {n['ref']}".replace('"', "'")
        lines.append(f'  {ids[_key(n["ref"])]}["{label}"]')
        lines += [f"  {ids[_key(p)]} --> {ids[_key(n['ref'])]}" for p in n["inputs"] if _key(p) in ids]
    lines += ["```", ""]
    for number, n in enumerate(nodes, start=1):
        what = f"stage `{n['stage']}`" if n.get("stage") else n["kind"]
        lines.append(f"### {number}. {what}: `{n['ref']}`")
        lines.append("")
        if n.get("title"):
            lines.append(f"- **Dataset:** {n['title']}")
        if n["inputs"]:
            lines.append(f"- **Inputs:** {', '.join(f'`{p}`' for p in n['inputs'])}")
        if n.get("finished"):
            lines.append(f"- **Finished:** {n['finished']}")
        for key, value in (n.get("figures") or {}).items():
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                for sub, inner in value.items():
                    lines.append(f"- **{key} / {sub}:** {_fmt(inner)}")
            else:
                lines.append(f"- **{key}:** {_fmt(value)}")
        if n.get("recipe"):
            lines.append(f"- **Recipe:** `{n['recipe']}`")
            if n.get("recipe_text"):
                recipe = redact_text(n["recipe_text"]).rstrip()  # the card is pushed: no token from an `env:` block
                lines += ["", "<details><summary>recipe</summary>", "", "```yaml", recipe, "```", "", "</details>"]
        elif n["kind"] == "stage":
            lines.append("- **Recipe:** not recorded")
        lines.append("")
    return "\n".join(lines)


def release_card(
    name: str, source: str, result: dict, nodes: list[dict], *, hub_model_id: str | None = None,
    dataset_repos: dict[str, str] | None = None, eval_desc: str | None = None,
) -> str:
    """The release's README.md: how to load each variant, their size and perplexity, and the lineage."""
    hub_ids = [n["ref"] for n in nodes if n["kind"] == "hub"]
    data = ModelCardData(
        base_model=next(iter(hub_ids), None), datasets=sorted((dataset_repos or {}).values()) or None,
        library_name="transformers", tags=["llm-recipes", "export", *sorted({VARIANTS[v][0] for v in result["variants"] if v in VARIANTS})],
    )
    repo = hub_model_id or name
    merge = result["merge"]
    if merge.get("adapter"):
        how = (f"The adapter `{source}` was merged (peft `merge_and_unload`) into its base `{merge['base_model']}`"
               + (f", loaded {merge['base_quantization']} as in training and dequantised to {merge['dtype']} first"
                  if merge["base_quantization"] != "none" else f" in {merge['dtype']}") + ".")
    else:
        how = f"Full model from `{source}`, saved in {merge['dtype']}."
    lines = [f"# {name}", "", how, "", "## Variants", "",
             f"Perplexity on {eval_desc or 'held-out text'}; each variant reloaded with `from_pretrained`.", "",
             "| variant | format | weights | perplexity | change | load |", "|---|---|---|---|---|---|"]
    for variant, info in result["variants"].items():
        sub = "" if info["path"] == "." else f', subfolder="{info["path"]}"'
        ppl = f"{info['perplexity']:.3f}" if "perplexity" in info else "-"
        delta = f"{info['perplexity_delta']:+.3f}" if "perplexity_delta" in info else "-"
        desc = VARIANTS.get(variant, ("safetensors", f"full model ({info.get('dtype')})"))[1]
        lines.append(f"| {variant} | {desc} | {info['weights_bytes'] / 1e6:.2f} MB | {ppl} | {delta} | "
                     f'`AutoModelForCausalLM.from_pretrained("{repo}"{sub})` |')
    if dataset_repos:
        lines += ["", "## Datasets", "", *[f"- `{local}` -> `{hub}`" for local, hub in dataset_repos.items()]]
    lines += ["", lineage_markdown(nodes)]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def dataset_repo_ids(nodes: list[dict], hub_model_id: str, prefix: str | None = None) -> dict[str, str]:
    """Local dataset folders of the lineage (those with a card) -> dataset repo ids next to the model repo."""
    owner, _, model_name = hub_model_id.rpartition("/")
    namespace = prefix or owner
    repos = {}
    for n in nodes:
        path = _local(n["ref"])
        if n["kind"] == "dataset" and path is not None and (path / "README.md").is_file():
            name = f"{model_name}-{path.name}"
            repos[n["ref"]] = f"{namespace}/{name}" if namespace else name
    return repos


def push_release(folder: str | Path, hub_model_id: str, dataset_repos: dict[str, str], private: bool | None = None) -> None:
    """Push each lineage dataset (with its card) as a dataset repo, then the model folder."""
    for local, repo_id in dataset_repos.items():
        push_folder(_local(local), repo_id, repo_type="dataset", private=private)
    push_folder(folder, hub_model_id, repo_type="model", private=private)

