"""A curation run: datatrove pipelines (filter -> exact dedup -> near dedup) on a local, Ray or Slurm executor,
then mixing, accounting and the Hub-format output with its card (`finalize`)."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from llm_recipes.curation import accounting
from llm_recipes.curation.config import DedupArguments, PIIArguments
from llm_recipes.curation.filters import (CutoffFilter, MissingText, build_filters, exact_content, listed_filters,
                                          word_tokenizer)
from llm_recipes.curation.mixing import draw, plan_mix, realised
from llm_recipes.curation.pii import PIIScrubber, count_placeholders
from llm_recipes.curation.routing import Accounted, Route, RoutedFilter, RoutedFormatter
from llm_recipes.curation.sources import EXTRACTED_KINDS, ROW_METADATA, SourceSpec, build_reader, ingest, parse_sources
from llm_recipes.errors import ConfigError, RecipeError
from llm_recipes.hub import mark_complete, save_dataset
from llm_recipes.parser import build_options

logger = logging.getLogger("llm_recipes")
OUTPUT_COLUMNS = ("text", "id", "source", "kind", "language", "date", "url", ROW_METADATA)
# MinHash LSH: a pair with Jaccard s on word 5-grams is found with P = 1 - (1 - s^10)^50: 0.9966 at s = 0.8, 0.048
# at s = 0.5 (datatrove's 14 x 8 gives 0.924 at 0.8; benchmarks/results/curation_near_dedup.json measures both)
DEDUP_DEFAULTS = asdict(DedupArguments())


@dataclass
class Plan:
    """The datatrove pipelines of a run, in order: (name, steps, tasks)."""

    stages: list[tuple[str, list, int]]
    final_folder: Path


def _writer(folder: Path) -> JsonlWriter:
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl.gz")


def build_plan(args, specs: list[SourceSpec], work: Path) -> Plan:
    """Every datatrove stage of the run; filters and PII follow their routes."""
    word_tok = word_tokenizer(args.word_tokenizer)
    for folder in ("filtered", "exact", "deduped"):  # a stage that drops everything leaves an empty, readable folder
        (work / folder).mkdir(parents=True, exist_ok=True)
    tally = str(work / "tally")
    excl = work / "excluded"
    steps: list = [build_reader(s) for s in specs]
    steps += [accounting.Tally(tally, "input"), MissingText(exclusion_writer=_writer(excl / "read"))]
    if args.cutoff_date:
        steps.append(RoutedFilter(CutoffFilter(args.cutoff_date, args.undated_policy), Route(), "cutoff",
                                  _writer(excl / "cutoff")))
    if any(s.kind in EXTRACTED_KINDS for s in specs):
        from datatrove.pipeline.extractors import Trafilatura

        steps.append(Accounted(Trafilatura(favour_precision=True, timeout=args.extract_timeout), "extract",
                               _writer(excl / "extract"), Route(kinds=frozenset(EXTRACTED_KINDS)), "no_text_extracted"))
    for name, filt, route in build_filters(args.filters, word_tok):
        steps.append(RoutedFilter(filt, route, name, _writer(excl / name)))
    pii = pii_settings(args)
    if pii.get("enabled", True):
        scrubber = PIIScrubber(**{k: v for k, v in pii.items() if k not in ("enabled", "route")})
        steps.append(RoutedFormatter(scrubber, Route.from_dict(pii.get("route"), "pii.route"), "pii"))
    steps += [accounting.Tally(tally, "filtered"), _writer(work / "filtered")]
    stages = [("filter", steps, args.tasks)]
    current = work / "filtered"

    dedup = dedup_settings(args)

    if dedup["exact"]:
        from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                          ExactFindDedups)

        config = ExactDedupConfig(content_getter=exact_content)
        stages += [
            ("exact_signatures", [JsonlReader(str(current)), ExactDedupSignature(str(work / "exact_sigs"), config)], args.tasks),
            ("exact_find", [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), config)], 1),
            ("exact_filter", [JsonlReader(str(current)), ExactDedupFilter(str(work / "exact_dups"), config, _writer(excl / "exact_dedup")),
                              accounting.Tally(tally, "exact_dedup"), _writer(work / "exact")], args.tasks),
        ]
        current = work / "exact"
    if dedup["near"]:
        from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                      MinhashDedupFilter, MinhashDedupSignature)

        config = MinhashConfig(n_grams=dedup["n_grams"], num_buckets=dedup["num_buckets"],
                               hashes_per_bucket=dedup["hashes_per_bucket"], seed=dedup["seed"])
        sigs, buckets, clusters = (str(work / n) for n in ("minhash_sigs", "minhash_buckets", "minhash_clusters"))
        stages += [
            ("minhash_signatures", [JsonlReader(str(current)), MinhashDedupSignature(sigs, config=config, language=word_tok)], args.tasks),
            ("minhash_buckets", [MinhashDedupBuckets(sigs, buckets, config=config)], dedup["num_buckets"]),
            ("minhash_cluster", [MinhashDedupCluster(buckets, clusters, config=config, save_cluster_id=True, save_cluster_size=True)], 1),
            ("minhash_filter", [JsonlReader(str(current)),
                                MinhashDedupFilter(clusters, exclusion_writer=_writer(excl / "near_dedup"),
                                                   load_cluster_ids=True, load_cluster_sizes=True),
                                accounting.Tally(tally, "near_dedup"), _writer(work / "deduped")], args.tasks),
        ]
        current = work / "deduped"
    return Plan(stages, current)


def pii_settings(args) -> dict:
    """The recipe's `pii:` (PIIArguments), the keys it leaves unset omitted."""
    return {k: v for k, v in asdict(build_options(PIIArguments, args.pii or {}, "pii")).items() if v is not None}


def dedup_settings(args) -> dict:
    """The recipe's `dedup:` (DedupArguments) over the defaults."""
    return asdict(build_options(DedupArguments, args.dedup or {}, "dedup"))


def run_settings(args) -> dict:
    """What the run does, as logged at its start and written in the card: the filters the recipe lists (only those
    run) with their parameters and routes, PII removal, deduplication and the cutoff."""
    pii = pii_settings(args)
    return {
        "filters": {f.name: {"params": f.params, "route": f.route.describe()} for f in listed_filters(args.filters)},
        "pii": {"enabled": pii.get("enabled", True), "types": pii.get("types") or "all"},
        "dedup": dedup_settings(args),
        "cutoff": {"date": args.cutoff_date, "undated_policy": args.undated_policy} if args.cutoff_date else None,
    }


def log_settings(settings: dict) -> None:
    filters = settings["filters"]
    listed = "; ".join(f"{name} ({_params(f['params'])}; on {f['route']})" for name, f in filters.items())
    logger.info("curate: filters that run (only those the recipe lists): %s", listed or "none")
    logger.info("curate: PII removal %s; dedup %s; cutoff %s",
                f"on ({settings['pii']['types']})" if settings["pii"]["enabled"] else "off",
                _params(settings["dedup"]), _params(settings["cutoff"]) if settings["cutoff"] else "none")


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


# ----------------------------------------------------------------------------------------------- executors
def executor_for(args, name: str, steps: list, tasks: int, work: Path, depends=None):
    logging_dir = str(work / "logs" / name)
    if args.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(steps, tasks=tasks, workers=min(args.workers, tasks), logging_dir=logging_dir,
                                     skip_completed=False, start_method="fork")
    if args.executor == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        ray_opts = dict(args.ray or {})
        return RayPipelineExecutor(steps, tasks=tasks, workers=min(args.workers, tasks), logging_dir=logging_dir,
                                   skip_completed=False, cpus_per_task=ray_opts.get("cpus_per_task", 1),
                                   mem_per_cpu_gb=ray_opts.get("mem_per_cpu_gb", 2))
    if args.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        opts = {"time": "04:00:00", "partition": "cpu", "cpus_per_task": 1, "mem_per_cpu_gb": 2, **(args.slurm or {})}
        return SlurmPipelineExecutor(steps, tasks=tasks, logging_dir=logging_dir, depends=depends,
                                     job_name=f"curate_{name}", **opts)
    raise ConfigError(f"executor: expected local, ray or slurm, got {args.executor!r}")


def _check_completed(executor, name: str, tasks: int, work: Path) -> None:
    done = sum(executor.logging_dir.isfile(f"completions/{r:05d}") for r in range(tasks))
    if done != tasks:
        raise RecipeError(f"curation stage '{name}': {tasks - done} of {tasks} task(s) failed; logs in {work / 'logs' / name}")


def run_datatrove(args, plan: Plan, work: Path) -> list:
    """Run the stages in order; returns the executors (Slurm: submitted, chained by dependencies)."""
    if args.executor == "ray":
        import ray

        if not ray.is_initialized():
            ray_opts = dict(args.ray or {})
            ray.init(address=ray_opts.get("address"), num_cpus=ray_opts.get("num_cpus"), include_dashboard=False,
                     log_to_driver=False)
    executors, previous = [], None
    for name, steps, tasks in plan.stages:
        start = time.time()
        source = getattr(steps[0], "data_folder", None)
        if type(steps[0]) is JsonlReader and not source.list_files(glob_pattern="*.jsonl.gz"):
            logger.info("curate: stage %s skipped: no documents left", name)
            continue
        executor = executor_for(args, name, steps, tasks, work, depends=previous)
        executor.run()
        if args.executor != "slurm":
            _check_completed(executor, name, tasks, work)
            logger.info("curate: stage %-18s %d task(s) %6.1fs", name, tasks, time.time() - start)
        executors.append(executor)
        previous = executor
    return executors


# ----------------------------------------------------------------------------------------------- finalize
def _split_of(doc_id: str, fraction: float, seed: int) -> str:
    h = int(hashlib.sha1(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < fraction else "train"


def finalize(args, specs: list[SourceSpec], work: Path, final_folder: Path) -> dict:
    """Mix, account, write the Hub-format dataset with its card; returns the statistics."""
    docs_by_source: dict[str, list[dict]] = defaultdict(list)
    for doc in accounting.iter_jsonl(final_folder):
        meta = doc.get("metadata", {})
        docs_by_source[meta.get("source")].append(doc)
    shares = {s.name: s.share for s in specs}
    available = {s: len(docs_by_source.get(s, [])) for s in shares}
    plan = plan_mix(available, shares, args.mix_total_documents, args.mix_max_repeat)
    rows_by_split: dict[str, list[dict]] = {"train": [], "validation": []}
    downsampled = []
    kept: dict[str, int] = {}
    output_rows: Counter = Counter()
    clusters: Counter = Counter()
    pii_counts: Counter = Counter()
    validation_sources = set(args.validation_sources or shares)
    for source in shares:
        docs = {d["id"]: d for d in docs_by_source.get(source, [])}
        chosen, dropped = draw(list(docs), plan.targets[source], args.seed)
        for doc_id in dropped:
            doc = docs[doc_id]
            downsampled.append({"id": doc_id, "source": source, "stage": "mixing", "reason": "downsampled",
                                "words": accounting.count_words(doc["text"]), "language": doc["metadata"].get("language") or "unknown",
                                "cluster": None})
        for doc_id in chosen:
            doc = docs[doc_id]
            meta = doc["metadata"]
            split = _split_of(doc_id, args.validation_fraction, args.seed) if source in validation_sources else "train"
            rows_by_split[split].append({"text": doc["text"], "id": str(doc_id), "source": source,
                                         "kind": meta.get("kind"), "language": meta.get("language"),
                                         "date": str(meta["date"]) if meta.get("date") else None, "url": meta.get("url"),
                                         ROW_METADATA: json.dumps(meta[ROW_METADATA]) if meta.get(ROW_METADATA) else None})
            output_rows[source] += 1
        kept[source] = len(set(chosen))
        for doc_id in set(chosen):
            pii_counts.update(count_placeholders(docs[doc_id]["text"]))
        for doc in docs.values():
            size = doc["metadata"].get("minhash_cluster_size", 1)
            if size and size > 1:
                clusters[size] += 1

    exclusions = accounting.read_exclusions(work / "excluded") + downsampled
    inputs = Counter(accounting.by_source(accounting.read_tally(work / "tally", "input")))
    inputs.update(Counter(r["source"] for r in exclusions if r["stage"] == "ingest"))  # never reached datatrove
    excluded = Counter(r["source"] for r in exclusions)
    table = accounting.conservation(dict(inputs), {s: n for s, n in kept.items() if n}, dict(excluded))

    stats = _statistics(args, specs, work, table, exclusions, rows_by_split, output_rows, plan, clusters, pii_counts)
    dsd = DatasetDict({split: Dataset.from_dict({c: [r[c] for r in rows] for c in OUTPUT_COLUMNS}, features=_features())
                       for split, rows in rows_by_split.items()})
    description = (f"Curated by llm-recipes' `curate` stage from {len(specs)} source(s): "
                   f"{', '.join(f'{s.name} ({s.kind}, share {s.share:g})' for s in specs)}. Every input document is "
                   f"either here or in `exclusions.jsonl` with the stage and reason that removed it. `source` and `kind` are "
                   f"the recipe's; a row's own fields (its own `source`, `kind`, `language`, ...) are kept in "
                   f"`{ROW_METADATA}`, a JSON object; `date`, `url` (and `language` where a source sets `language_key`) "
                   f"are read from the row's `date_key`, `url_key` and `language_key` fields.")
    save_dataset(dsd, args.output_dir, Path(args.output_dir).name, description + "\n\n" + summary_markdown(stats), stats)
    out = Path(args.output_dir)
    with open(out / "exclusions.jsonl", "w", encoding="utf-8") as fh:
        for r in exclusions:
            fh.write(json.dumps(r) + "\n")
    (out / "curation_stats.json").write_text(json.dumps(stats, indent=2, default=str) + "\n")
    return stats


def _features():
    from datasets import Features, Value

    return Features({c: Value("string") for c in OUTPUT_COLUMNS})


def _statistics(args, specs, work, table, exclusions, rows_by_split, output_rows, plan, clusters, pii_counts) -> dict:
    total_share = sum(s.share for s in specs) or 1.0
    stages = {}
    for label in ("input", "filtered", "exact_dedup", "near_dedup"):
        tally = accounting.read_tally(work / "tally", label)
        if tally:
            stages[label] = {"docs": sum(v["docs"] for v in tally.values()), "words": sum(v["words"] for v in tally.values())}
    by_reason: Counter = Counter()
    by_stage_source: dict = defaultdict(Counter)
    for r in exclusions:
        by_reason[f"{r['stage']}:{r['reason']}"] += 1
        by_stage_source[r["source"]][r["stage"]] += 1
    per_source, per_language = {}, defaultdict(lambda: {"docs": 0, "words": 0})
    all_rows = [r for rows in rows_by_split.values() for r in rows]
    words_by_source: Counter = Counter()
    for r in all_rows:
        n = accounting.count_words(r["text"])
        words_by_source[r["source"]] += n
        per_language[r["language"] or "unknown"]["docs"] += 1
        per_language[r["language"] or "unknown"]["words"] += n
    total_rows = sum(output_rows.values())
    for s in specs:
        per_source[s.name] = {**table.get(s.name, {"input": 0, "kept": 0, "excluded": 0}),
                              "output_rows": output_rows.get(s.name, 0), "output_words": words_by_source.get(s.name, 0),
                              "target_share": round(s.share / total_share, 4),
                              "realised_share": round(output_rows.get(s.name, 0) / total_rows, 4) if total_rows else 0.0,
                              "excluded_by_stage": dict(by_stage_source.get(s.name, {}))}
    return {
        **run_settings(args),
        "sources": per_source,
        "languages": dict(per_language),
        "stages": stages,
        "removal_reasons": dict(by_reason.most_common()),
        "duplicates": {"exact_removed": sum(1 for r in exclusions if r["stage"] == "exact_dedup"),
                       "near_removed": sum(1 for r in exclusions if r["stage"] == "near_dedup"),
                       "near_clusters_by_size": {str(k): v for k, v in sorted(clusters.items())},
                       "near_clusters": len({r["cluster"] for r in exclusions if r["stage"] == "near_dedup" and r["cluster"] not in (None, -1)})},
        "cutoff": {"date": args.cutoff_date, "undated_policy": args.undated_policy,
                   "removed": sum(1 for r in exclusions if r["stage"] == "cutoff")},
        "pii_replaced": dict(pii_counts),
        "mix": {"targets": plan.targets, "realised": {s: round(v, 4) for s, v in realised(dict(output_rows)).items()}},
        "splits": {split: len(rows) for split, rows in rows_by_split.items()},
        "totals": {"input": sum(r["input"] for r in table.values()), "kept": sum(r["kept"] for r in table.values()),
                   "excluded": sum(r["excluded"] for r in table.values()), "output_rows": total_rows},
        "word_counter": "whitespace words",
    }


def summary_markdown(stats: dict) -> str:
    """The readable summary printed at the end and put in the card."""
    lines = ["## Curation summary", "", "| source | input | kept | excluded | output rows | words | target | realised |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in stats["sources"].items():
        lines.append(f"| {name} | {s['input']} | {s['kept']} | {s['excluded']} | {s['output_rows']} | {s['output_words']} "
                     f"| {s['target_share']:.3f} | {s['realised_share']:.3f} |")
    t = stats["totals"]
    lines += ["", f"Total: {t['input']} in = {t['kept']} kept + {t['excluded']} excluded; {t['output_rows']} output rows "
              f"({', '.join(f'{k} {v}' for k, v in stats['splits'].items())}).", "",
              "| removed by (stage:reason) | documents |", "|---|---|"]
    lines += [f"| {reason} | {n} |" for reason, n in stats["removal_reasons"].items()]
    lines += ["", "| language | documents | words |", "|---|---|---|"]
    lines += [f"| {lang} | {v['docs']} | {v['words']} |" for lang, v in sorted(stats["languages"].items())]
    lines += ["", "### Filters run (only those the recipe lists)", "", "| filter | parameters | route |", "|---|---|---|"]
    lines += [f"| {name} | {_params(f['params'])} | {f['route']} |" for name, f in stats["filters"].items()] or ["| none | | |"]
    d, c = stats["duplicates"], stats["cutoff"]
    lines += ["", f"Duplicates: {d['exact_removed']} exact, {d['near_removed']} near ({d['near_clusters']} clusters). "
              f"Cutoff {c['date']} (undated: {c['undated_policy']}): {c['removed']} removed. "
              f"PII replaced: {json.dumps(stats['pii_replaced'])}.",
              f"Near-duplicate settings: {_params({k: v for k, v in stats['dedup'].items()})}."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- entry point
def run_curation(args) -> dict:
    """The whole stage: validate, ingest, datatrove stages, finalize, marker, optional push."""
    specs = parse_sources(args.sources)
    if args.executor not in ("local", "ray", "slurm"):
        raise ConfigError(f"executor: expected local, ray or slurm, got {args.executor!r}")
    work = Path(args.work_dir or f"{args.output_dir.rstrip('/')}.work")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log_settings(run_settings(args))
    start = time.time()
    bad_rows = ingest(specs, work, args.on_bad_row)
    if bad_rows:
        logger.warning("curate: %d bad input row(s) excluded at the read stage", len(bad_rows))
        (work / "excluded" / "ingest").mkdir(parents=True)
        with gzip.open(work / "excluded" / "ingest" / "00000.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(b.record()) + "\n" for b in bad_rows)
    plan = build_plan(args, specs, work)
    if args.executor == "slurm":
        plan.stages.append(("finalize", [Finalize(args, specs, work, plan.final_folder)], 1))
    run_datatrove(args, plan, work)
    if args.executor == "slurm":
        logger.info("curate: %d Slurm job(s) submitted; the last one writes %s", len(plan.stages), args.output_dir)
        return {"submitted": [name for name, _, _ in plan.stages]}
    stats = finalize_and_mark(args, specs, work, plan.final_folder)
    stats["seconds"] = round(time.time() - start, 1)
    return stats


def finalize_and_mark(args, specs: list[SourceSpec], work: Path, final_folder: Path) -> dict:
    stats = finalize(args, specs, work, final_folder)
    mark_complete(args.output_dir, "curate", rows=stats["splits"], totals=stats["totals"],
                  removal_reasons=stats["removal_reasons"])
    if args.push_to_hub and args.hub_dataset_id:
        from llm_recipes.hub import push_folder

        push_folder(args.output_dir, args.hub_dataset_id, repo_type="dataset")
    if not args.keep_work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return stats


class Finalize(PipelineStep):
    """The last Slurm job: mixing, accounting, output and marker."""

    name = "🏁 finalize"

    def __init__(self, args, specs, work: Path, final_folder: Path):
        super().__init__()
        self.args, self.specs, self.work, self.final_folder = args, specs, work, final_folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        finalize_and_mark(self.args, self.specs, self.work, self.final_folder)
        yield from data or []
