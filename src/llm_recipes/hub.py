"""Hub-format I/O: datasets as parquet folders with a card, model cards, completion markers, pushes.

A stage's output folder is complete only once its marker (`llm_recipes.json`) exists; the marker is written
last and atomically, so a killed stage never looks finished and a pipeline re-run redoes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetDict
from huggingface_hub import ModelCard, ModelCardData

logger = logging.getLogger(__name__)

MARKER = "llm_recipes.json"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the rename makes it visible
    os.chmod(tmp, 0o644)  # mkstemp makes files private; cards and markers are meant to be read
    os.replace(tmp, path)


def mark_complete(output_dir: str | Path, stage: str, **info: Any) -> None:
    """Record that `output_dir` holds the finished output of `stage` (with metrics and provenance), and the
    recipe that made it: the resolved config, its local inputs' fingerprints and their hash (see
    `llm_recipes.integrity`), so a re-run can tell the same recipe from a changed one."""
    from llm_recipes.integrity import current_record

    run = current_record()
    record = {"stage": stage, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info,
              **(run.as_dict() if run is not None else {})}
    from llm_recipes.redaction import redact

    write_text_atomic(Path(output_dir) / MARKER, json.dumps(redact(record), indent=2, default=str) + "\n")


def read_marker(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------------------------- datasets
def save_dataset(dsd: DatasetDict, folder: str | Path, title: str, description: str, stats: dict | None = None) -> None:
    """Save splits as `data/<split>-00000-of-00001.parquet` plus a README card with `configs:`, so that
    `datasets.load_dataset(folder)` and the Hub read it. Written to a temporary folder, then renamed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp.chmod(0o755)
    (tmp / "data").mkdir()
    for split, ds in dsd.items():
        ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
    header = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in dsd]}
        ],
        "tags": ["llm-recipes"],
    }
    rows = "\n".join(f"| {split} | {len(ds)} | {', '.join(ds.column_names)} |" for split, ds in dsd.items())
    body = f"# {title}\n\n{description}\n\n| split | rows | columns |\n|---|---|---|\n{rows}\n"
    if stats:
        body += "\n## Statistics\n\n```json\n" + json.dumps(stats, indent=2, default=str) + "\n```\n"
    (tmp / "README.md").write_text(f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n{body}", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


# ----------------------------------------------------------------------------------------------- model cards
def _recipe_text(recipe_path: str | None) -> str | None:
    if recipe_path and os.path.isfile(recipe_path):
        return Path(recipe_path).read_text(encoding="utf-8")
    return None


def _sections(card_text: str) -> str:
    """A library card's sections, less its title and opening paragraph: they name the base model from the model's
    config, which for a local base is `None` ("fine-tuned version of [None]"); the project's lineage replaces them."""
    start = card_text.find("\n## ")
    return card_text[start + 1:].rstrip() if start >= 0 else ""


def write_model_card(
    output_dir: str | Path,
    *,
    stage: str,
    base_model: str | None,
    datasets: list[str],
    metrics: dict[str, Any],
    recipe_path: str | None = None,
    tags: list[str] | None = None,
    description: str = "",
    library_card: str | None = None,
) -> str:
    """A README.md model card naming the base model, datasets, recipe and final metrics. With `library_card` (the
    card the trainer's own `create_model_card` wrote), the card extends it: its metadata and its sections
    (training procedure, hyperparameters, framework versions, citations) are kept, under the project's title and
    lineage. Secrets (a token in the recipe's `env:` block, a `hub_token`, any secret-named value) are redacted:
    the card is pushed."""
    from llm_recipes.redaction import redact, redact_text, scrub

    metrics = redact(metrics)
    library = ModelCard(library_card, ignore_metadata_errors=True) if library_card else None
    data = library.data if library is not None else ModelCardData()
    data.base_model = base_model if base_model and not os.path.isabs(base_model) else None
    data.datasets = [d for d in datasets if d and not os.path.exists(d)] or None
    data.library_name = getattr(data, "library_name", None) or "transformers"
    data.tags = list(dict.fromkeys(["llm-recipes", stage, *(tags or []), *(getattr(data, "tags", None) or [])]))
    lines = [
        f"# {Path(output_dir).name}",
        "",
        description or f"Trained with the llm-recipes `{stage}` stage.",
        "",
        f"- **Base model:** `{base_model}`",
        f"- **Datasets:** {', '.join(f'`{d}`' for d in datasets) or 'none'}",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()],
    ]
    if library is not None:
        lines += ["", _sections(library.text)]
    recipe = _recipe_text(recipe_path)
    if recipe is not None:
        lines += ["", f"## Recipe (`{recipe_path}`)", "", "```yaml", redact_text(recipe).rstrip(), "```"]
    card = ModelCard(scrub(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))
    write_text_atomic(Path(output_dir) / "README.md", str(card))
    return str(card)


def push_folder(folder: str | Path, repo_id: str, repo_type: str = "model", private: bool | None = None) -> str:
    """Upload a finished folder to the Hub (the token comes from the environment and is never logged)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type)
    logger.info("pushed %s to %s", folder, repo_id)
    return str(info)
