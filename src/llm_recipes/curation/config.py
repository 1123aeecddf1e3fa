"""Data collection and curation: `CurationArguments` (read by `llm_recipes.curation.pipeline`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CurationArguments:
    """Data collection and curation on datatrove (`scripts/curate.py`); see llm_recipes.curation."""

    sources: list[dict] | None = field(
        default=None,
        metadata={"help": "Sources: [{name, kind: text|jsonl|parquet|html|warc|code|hub, path | dataset, share, "
                  "glob, text_key, id_key, date_key, url_key, language_key, language, date, split, config, limit, "
                  "document_boundary: file|blank_line|line (text)}]. A row's own fields are kept in `row_metadata`. `share`: the source's share of the "
                  "mixed output, normalised over the sources (not a dataset_mixture's `weight`, a fraction of rows)."},
    )
    output_dir: str = field(default="runs/curated", metadata={"help": "Hub-format output folder (train/validation)."})
    work_dir: str | None = field(default=None, metadata={"help": "Intermediate files; default '<output_dir>.work'."})
    keep_work_dir: bool = field(default=False, metadata={"help": "Keep intermediate files (exclusions per stage, logs)."})
    executor: str = field(default="local", metadata={"help": "datatrove executor.", "choices": ["local", "ray", "slurm"]})
    tasks: int = field(default=2, metadata={"help": "datatrove tasks (shards) of the per-document stages."})
    workers: int = field(default=2, metadata={"help": "Tasks run at once (local/ray)."})
    ray: dict | None = field(default=None, metadata={"help": "Ray: {address, num_cpus, cpus_per_task, mem_per_cpu_gb}."})
    slurm: dict | None = field(
        default=None,
        metadata={"help": "Slurm: SlurmPipelineExecutor options {partition, time, cpus_per_task, mem_per_cpu_gb, "
                  "qos, venv_path, sbatch_args, ...}."},
    )
    on_bad_row: str = field(
        default="error",
        metadata={"help": "Bad JSON line, missing text, undecodable bytes: 'error' stops with file and line; 'exclude' "
                  "drops the row and records it (stage ingest).", "choices": ["error", "exclude"]},
    )
    filters: dict | None = field(
        default=None,
        metadata={"help": "The filters that run (only those listed), each {params, route: {sources, kinds, languages, "
                  "not_*}} or true: length, language, gopher_repetition, gopher_quality, c4_quality, fineweb_quality, "
                  "url, toxicity, code, decontamination (benchmarks: files whose items' n-grams drop a document, n_grams: 12)."},
    )
    word_tokenizer: str = field(
        default="spacy", metadata={"help": "Word splitting for quality filters and MinHash.", "choices": ["spacy", "whitespace"]}
    )
    extract_timeout: float = field(default=5.0, metadata={"help": "Seconds per HTML page for text extraction."})
    pii: dict | None = field(
        default=None,
        metadata={"help": "{enabled, types: [email, ip, ipv6, phone, credit_card, national_id], placeholders, "
                  "only_public_ips, route} (see PIIArguments)."},
    )
    dedup: dict | None = field(
        default=None,
        metadata={"help": "{exact: true, near: true, n_grams: 5, num_buckets: 50, hashes_per_bucket: 10, seed: 1} (see DedupArguments)."},
    )
    cutoff_date: str | None = field(default=None, metadata={"help": "Knowledge cutoff (YYYY-MM-DD); later documents dropped."})
    undated_policy: str = field(
        default="keep", metadata={"help": "Documents without a date.", "choices": ["keep", "drop"]}
    )
    mix_total_documents: int | None = field(
        default=None, metadata={"help": "Output rows; unset: the largest mix needing at most mix_max_repeat repeats."}
    )
    mix_max_repeat: float = field(default=1.0, metadata={"help": "Most times a source may be repeated (up-sampling)."})
    validation_fraction: float = field(default=0.05, metadata={"help": "Share of rows in the validation split."})
    validation_sources: list[str] | None = field(
        default=None, metadata={"help": "Sources the validation split is drawn from (default: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling and split seed."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the dataset to `hub_dataset_id`."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repo for the push."})


@dataclass
class PIIArguments:
    """`pii:` of a curation recipe (built by `llm_recipes.parser.build_options`)."""

    enabled: bool = field(default=True, metadata={"help": "Replace PII with placeholders."})
    types: list[str] | None = field(
        default=None, metadata={"help": "Kinds replaced: email, ip, ipv6, phone, credit_card, national_id (unset: all)."}
    )
    placeholders: dict[str, str] | None = field(default=None, metadata={"help": "Placeholder per kind, over the defaults."})
    only_public_ips: bool = field(default=True, metadata={"help": "Keep private and reserved IP addresses."})
    route: dict | None = field(default=None, metadata={"help": "Documents it applies to: {sources, kinds, languages, not_*}."})


@dataclass
class DedupArguments:
    """`dedup:` of a curation recipe: exact (content hash) and near (MinHash) deduplication."""

    exact: bool = field(default=True, metadata={"help": "Drop documents with the same content."})
    near: bool = field(default=True, metadata={"help": "Drop near duplicates (datatrove MinHash)."})
    n_grams: int = field(default=5, metadata={"help": "MinHash shingle size (words)."})
    num_buckets: int = field(default=50, metadata={"help": "MinHash LSH buckets."})
    hashes_per_bucket: int = field(default=10, metadata={"help": "MinHash hashes per bucket."})
    seed: int = field(default=1, metadata={"help": "MinHash seed."})
