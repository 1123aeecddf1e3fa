"""Accounting: tallies of documents and words per source and language at each stage, the exclusion ledger
(every dropped document with the stage and reason that removed it), and the conservation check
input = kept + excluded, per source."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from llm_recipes.errors import RecipeError


class AccountingError(RecipeError):
    """Counts that do not add up: a document was lost without a record."""


def count_words(text: str) -> int:
    return len(text.split())


class Tally(PipelineStep):
    """Pass-through step that counts documents and words per (source, language) and saves them per rank."""

    type = "🧮 - TALLY"

    def __init__(self, output_folder: str, label: str):
        super().__init__()
        self.output_folder, self.label = output_folder, label
        self.name = f"tally {label}"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        docs: Counter = Counter()
        words: Counter = Counter()
        for doc in data:
            key = f"{doc.metadata.get('source')}\t{doc.metadata.get('language') or 'unknown'}"
            docs[key] += 1
            words[key] += count_words(doc.text)
            yield doc
        folder = get_datafolder(self.output_folder)
        with folder.open(f"{self.label}/{rank:05d}.json", "wt") as fh:
            json.dump({"docs": docs, "words": words}, fh)


def read_tally(folder: str | Path, label: str) -> dict[tuple[str, str], dict[str, int]]:
    """{(source, language): {docs, words}} summed over ranks; empty if the stage did not run."""
    out: dict = defaultdict(lambda: {"docs": 0, "words": 0})
    for path in sorted((Path(folder) / label).glob("*.json")):
        data = json.loads(path.read_text())
        for key, n in data["docs"].items():
            source, language = key.split("\t")
            out[(source, language)]["docs"] += n
            out[(source, language)]["words"] += data["words"][key]
    return dict(out)


def by_source(tally: dict) -> dict[str, int]:
    counts: Counter = Counter()
    for (source, _), v in tally.items():
        counts[source] += v["docs"]
    return dict(counts)


def iter_jsonl(folder: str | Path) -> Iterator[dict]:
    """Documents from every *.jsonl / *.jsonl.gz file under `folder` (datatrove's JsonlWriter output)."""
    for path in sorted(Path(folder).rglob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def read_exclusions(excluded_dir: str | Path) -> list[dict]:
    """Every exclusion record as {id, source, stage, reason, words, cluster}: one per dropped document."""
    records = []
    if not Path(excluded_dir).is_dir():  # nothing was excluded
        return records
    for stage_dir in sorted(p for p in Path(excluded_dir).iterdir() if p.is_dir()):
        for doc in iter_jsonl(stage_dir):
            meta = doc.get("metadata", {})
            full = meta.get("filter_reason") or f"{stage_dir.name}:duplicate"
            stage, _, reason = full.partition(":")
            records.append({"id": doc.get("id"), "source": meta.get("source"), "stage": stage, "reason": reason or stage,
                            "words": count_words(doc.get("text") or ""), "language": meta.get("language") or "unknown",
                            "cluster": meta.get("minhash_cluster_id")})
    return records


def conservation(inputs: dict[str, int], kept: dict[str, int], excluded: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per source {input, kept, excluded}; raises AccountingError naming the source if input != kept + excluded."""
    table = {}
    for source in sorted(set(inputs) | set(kept) | set(excluded)):
        row = {"input": inputs.get(source, 0), "kept": kept.get(source, 0), "excluded": excluded.get(source, 0)}
        if row["input"] != row["kept"] + row["excluded"]:
            raise AccountingError(
                f"source '{source}': {row['input']} documents in, {row['kept']} kept + {row['excluded']} excluded "
                f"= {row['kept'] + row['excluded']}: {row['input'] - row['kept'] - row['excluded']} unaccounted for")
        table[source] = row
    return table
