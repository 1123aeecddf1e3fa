"""Curation quality and speed against the planted truth of a generated corpus (>= 20,000 documents).

    OMP_NUM_THREADS=1 python benchmarks/curation.py [--docs 20000] [--out benchmarks/results/curation.json]

Quality: near-duplicate recall (pairs with Jaccard >= 0.8, goal >= 0.99) and precision (goal >= 0.98), PII recall
per type (goal >= 0.99) and false-positive rate, toxic recall and false-positive rate, cutoff leak (goal 0).
Speed: documents/s per core of our filter stage vs the same datatrove blocks run bare (goal ratio >= 0.95), and
MinHash with the whitespace word tokenizer vs spaCy (with recall checked for both).

Near-duplicate settings alone, on realistic documents (200-2000 words; near copies made by word edits to a Jaccard
of 0.8-0.9 on word 5-grams, pairs at Jaccard 0.3-0.5, unrelated documents), for the default and other settings:

    OMP_NUM_THREADS=1 python benchmarks/curation.py --near_dedup [--pairs 2000] [--text_dir DIR] \
        [--settings 50x10,14x8,24x7] [--out benchmarks/results/curation_near_dedup.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from datatrove.utils.text import TextNormConfig, simplify_text  # noqa: E402

from llm_recipes.curation.config import CurationArguments  # noqa: E402
from llm_recipes.curation import accounting  # noqa: E402
from llm_recipes.curation.filters import WhitespaceWordTokenizer, WordListFilter  # noqa: E402
from llm_recipes.curation.pii import PII_TYPES, PIIScrubber  # noqa: E402
from llm_recipes.toy import ToyWorld  # noqa: E402
from llm_recipes.toy.raw import CUTOFF, planted_documents  # noqa: E402

TOKENIZER = WhitespaceWordTokenizer()


def shingles(text: str, n: int = 5) -> set:
    words = TOKENIZER.word_tokenize(simplify_text(text, TextNormConfig()))
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 0))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def base_args(src: Path, out: Path) -> CurationArguments:
    return CurationArguments(
        sources=[{"name": "web", "kind": "jsonl", "path": str(src), "share": 1.0}],
        output_dir=str(out), tasks=2, workers=2, word_tokenizer="whitespace", on_bad_row="error",
        filters={"code": {}, "length": {"min_chars": 20}, "language": {"languages": ["en"], "threshold": 0.5},
                 "gopher_repetition": {}, "gopher_quality": {"min_doc_words": 30}, "c4_quality": {"min_num_sentences": 3},
                 "fineweb_quality": {}, "toxicity": {"word_files": ["toy_toxic"], "severe_files": ["toy_illegal"]}},
        dedup={"exact": True, "near": True, "n_grams": 5, "num_buckets": 24, "hashes_per_bucket": 7},
        cutoff_date=CUTOFF, validation_fraction=0.0, keep_work_dir=True,
    )


def run_ours(args) -> tuple[dict, float]:
    from llm_recipes.curation.pipeline import run_curation

    start = time.time()
    stats = run_curation(args)
    return stats, time.time() - start


def filter_stage_speed(args, src: Path, n_docs: int, repeats: int = 2) -> dict:
    """Our filter stage (routing, accounting, PII) vs the same datatrove blocks, bare, same tasks/workers."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llm_recipes.curation.filters import CutoffFilter, build_filters, word_tokenizer
    from llm_recipes.curation.pipeline import build_plan
    from llm_recipes.curation.sources import ingest, parse_sources

    def ours(tmp: Path) -> float:
        specs = parse_sources(args.sources)
        ingest(specs, tmp, "error")
        plan = build_plan(replace(args, dedup={"exact": False, "near": False}), specs, tmp)
        _, steps, tasks = plan.stages[0]
        start = time.time()
        LocalPipelineExecutor(steps, tasks=tasks, workers=2, logging_dir=str(tmp / "logs"), skip_completed=False,
                              start_method="fork").run()
        return time.time() - start

    def bare(tmp: Path) -> float:
        steps = [JsonlReader(str(src)), CutoffFilter(args.cutoff_date)]
        steps += [f for _, f, _ in build_filters(args.filters, word_tokenizer(args.word_tokenizer))]
        steps += [PIIScrubber(), JsonlWriter(str(tmp / "out"))]
        start = time.time()
        LocalPipelineExecutor(steps, tasks=2, workers=2, logging_dir=str(tmp / "logs"), skip_completed=False,
                              start_method="fork").run()
        return time.time() - start

    times = {"ours": [], "bare": []}
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("ours", ours)):
            with tempfile.TemporaryDirectory() as tmp:
                times[name].append(fn(Path(tmp)))
    best = {k: min(v) for k, v in times.items()}
    return {"docs": n_docs, "cores": 2, "ours_docs_per_s_per_core": n_docs / best["ours"] / 2,
            "bare_docs_per_s_per_core": n_docs / best["bare"] / 2, "ratio": best["bare"] / best["ours"],
            "seconds": times}


def minhash_speed(src: Path, docs: list[dict], pairs: list[tuple[str, str]], tokenizer: str) -> dict:
    """The 4 MinHash stages alone on the corpus with one word tokenizer; recall on the planted pairs."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llm_recipes.curation.filters import word_tokenizer

    config = MinhashConfig(num_buckets=24, hashes_per_bucket=7)  # P(caught) at Jaccard 0.8: 1 - (1 - 0.8^7)^24 = 0.996
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        start = time.time()
        for steps, tasks in (
            ([JsonlReader(str(src)), MinhashDedupSignature(str(t / "s"), config=config, language=word_tokenizer(tokenizer))], 2),
            ([MinhashDedupBuckets(str(t / "s"), str(t / "b"), config=config)], config.num_buckets),
            ([MinhashDedupCluster(str(t / "b"), str(t / "c"), config=config)], 1),
            ([JsonlReader(str(src)), MinhashDedupFilter(str(t / "c"), exclusion_writer=JsonlWriter(str(t / "x")))], 2),
        ):
            LocalPipelineExecutor(steps, tasks=tasks, workers=2, logging_dir=str(t / f"l{len(os.listdir(t))}"),
                                  skip_completed=False, start_method="fork").run()
        seconds = time.time() - start
        removed = {d["id"] for d in accounting.iter_jsonl(t / "x")}
    found = sum(a in removed or b in removed for a, b in pairs)
    return {"tokenizer": tokenizer, "seconds": seconds, "docs_per_s_per_core": len(docs) / seconds / 2,
            "recall_j08": found / max(len(pairs), 1)}


# ----------------------------------------------------------------------------------------------- near-dup settings
FUNCTION_WORDS = ("the of and to a in is that for it as was with be by on not he this are or his from at which but "
                  "have an they you were her she there one all we their been has more when will would if no can out "
                  "so what up about into than them some could its time only other new these two may first then do any "
                  "like my now over such our man me even most made after also did many before must through back years "
                  "where much your way well down should because each just those people how too little state good very "
                  "make world still own see men work long get here between both life being under never day same").split()


class WordSource:
    """Words for realistic documents: a Zipf-distributed English-like stream (function words at their usual
    frequencies plus a long tail of content words), or the words of real text files (`text_dir`), read in order
    so that no two documents share a passage."""

    def __init__(self, rng, text_dir: str | None = None):
        self.rng = rng
        self.stream = None
        if text_dir:
            words = []
            for path in sorted(Path(text_dir).rglob("*")):
                if path.is_file():
                    words += path.read_text(encoding="utf-8", errors="ignore").split()
            self.stream, self.position = words, 0
        else:
            letters = "etaoinshrdlcumwfgypbvkjxqz"
            weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1.5, 1, 0.8, 0.2, 0.2, 0.1, 0.1]
            tail = {"".join(rng.choices(letters, weights, k=rng.randint(3, 10))) for _ in range(40000)}
            self.vocab = FUNCTION_WORDS + sorted(tail)
            self.cum_weights = list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(self.vocab))))

    def words(self, n: int) -> list[str]:
        if self.stream is not None:
            if self.position + n > len(self.stream):
                raise SystemExit(f"--text_dir: {len(self.stream)} words are not enough; use fewer --pairs")
            out = self.stream[self.position:self.position + n]
            self.position += n
            return out
        words = self.rng.choices(self.vocab, cum_weights=self.cum_weights, k=n)
        for i in range(0, n, self.rng.randint(12, 25)):  # sentences: a capital and a full stop
            words[i] = words[i].capitalize()
            if i:
                words[i - 1] += "."
        return words


def edited_copy(words: list[str], source: WordSource, rng, low: float, high: float) -> tuple[list[str], float]:
    """A copy of `words` with random word substitutions, insertions and deletions until its Jaccard with the
    original on word 5-grams lies in [low, high)."""
    original = shingles(" ".join(words))
    target = rng.uniform(low, high)

    def edits(similarity: float) -> int:
        # each scattered edit changes about 5 of the S shingles: J = (S - 5k) / (S + 5k); edits overlap, so aim
        # a little short of the target and approach it in smaller steps
        missing = (1 - target) / (1 + target) - (1 - similarity) / (1 + similarity)
        return max(1, round(len(original) * missing / 5 * 0.8))

    while True:
        copy = list(words)
        similarity = 1.0
        while similarity > target:
            for _ in range(edits(similarity)):
                op, at = rng.random(), rng.randrange(len(copy))
                if op < 0.6:
                    copy[at] = source.words(1)[0] if source.stream is None else rng.choice(words)
                elif op < 0.8:
                    copy.insert(at, rng.choice(words))
                elif len(copy) > 10:
                    del copy[at]
            edited = shingles(" ".join(copy))
            similarity = len(original & edited) / len(original | edited)
        if similarity >= low:
            return copy, similarity


def lsh_probability(s: float, bands: int, rows: int) -> float:
    return 1 - (1 - s ** rows) ** bands


def near_dedup_benchmark(opts) -> int:
    import random

    from llm_recipes.curation.pipeline import DEDUP_DEFAULTS, run_curation

    rng = random.Random(opts.seed)
    source = WordSource(rng, opts.text_dir)
    docs, near, far, single = [], [], [], []
    for kind, count, band in (("near", opts.pairs, (0.8, 0.9)), ("far", opts.pairs // 2, (0.3, 0.5)),
                              ("single", opts.pairs // 2, None)):
        for i in range(count):
            words = source.words(rng.randint(200, 2000))
            docs.append({"id": f"{kind}{i}a", "text": " ".join(words)})
            if band is None:
                single.append(f"{kind}{i}a")
                continue
            copy, similarity = edited_copy(words, source, rng, *band)
            docs.append({"id": f"{kind}{i}b", "text": " ".join(copy)})
            (near if kind == "near" else far).append((f"{kind}{i}a", f"{kind}{i}b", similarity))
        print(f"near-dup benchmark: {count} {kind} documents/pairs made", flush=True)
    work = Path(tempfile.mkdtemp(prefix="near_dedup_bench."))
    for shard in range(4):
        with open(work / f"docs-{shard}.jsonl", "w") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in docs[shard::4])
    lengths = [len(d["text"].split()) for d in docs]
    results = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv), "documents": len(docs),
               "words_per_document": {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths))},
               "text": f"real text from {opts.text_dir}" if opts.text_dir else "Zipf English-like (generated)",
               "near_pairs_j_0.8_0.9": len(near), "pairs_j_0.3_0.5": len(far), "unrelated_documents": len(single),
               "jaccard": "word 5-grams after datatrove's text normalisation (the shingles MinHash hashes)",
               "default": f"{DEDUP_DEFAULTS['num_buckets']}x{DEDUP_DEFAULTS['hashes_per_bucket']}", "settings": {}}
    for setting in opts.settings.split(","):
        bands, rows = (int(x) for x in setting.split("x"))
        out = work / f"out_{setting}"
        start = time.time()
        run_curation(CurationArguments(
            sources=[{"name": "web", "kind": "jsonl", "path": str(work), "glob": "docs-*.jsonl", "share": 1.0}],
            output_dir=str(out), tasks=2, workers=2, word_tokenizer="whitespace", filters={},
            pii={"enabled": False}, dedup={"exact": False, "num_buckets": bands, "hashes_per_bucket": rows},
            validation_fraction=0.0))
        seconds = time.time() - start
        removed = {json.loads(line)["id"] for line in (out / "exclusions.jsonl").read_text().splitlines()}
        found = [(a in removed or b in removed) for a, b, _ in near]
        bins = {}
        for low in (0.80, 0.82, 0.84, 0.86, 0.88):
            members = [f for (_, _, j), f in zip(near, found) if low <= j < low + 0.02]
            bins[f"{low:.2f}-{low + 0.02:.2f}"] = {"pairs": len(members), "recall": round(sum(members) / max(len(members), 1), 4),
                                                   "theory_at_low_end": round(lsh_probability(low, bands, rows), 4)}
        far_hit = sum(a in removed or b in removed for a, b, _ in far)
        planted = {i for a, b, _ in near for i in (a, b)}
        results["settings"][setting] = {
            "bands": bands, "rows": rows, "hashes": bands * rows, "seconds": round(seconds, 1),
            "recall_j_0.8_0.9": round(sum(found) / len(near), 4),
            "recall_theory_mean": round(sum(lsh_probability(j, bands, rows) for _, _, j in near) / len(near), 4),
            "recall_by_jaccard": bins,
            "false_positive_rate_j_0.3_0.5": round(far_hit / max(len(far), 1), 4),
            "false_positive_theory_mean_j_0.3_0.5": round(sum(lsh_probability(j, bands, rows) for _, _, j in far) / max(len(far), 1), 4),
            "unrelated_removed": len(removed & set(single)),
            "precision": round(len(removed & planted) / max(len(removed), 1), 4),
        }
        print(setting, json.dumps(results["settings"][setting]), flush=True)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    default = results["settings"].get(results["default"])
    return 0 if default is None or default["recall_j_0.8_0.9"] >= 0.99 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/curation.json "
                        "(--near_dedup: benchmarks/results/curation_near_dedup.json)")
    parser.add_argument("--near_dedup", action="store_true", help="only the near-duplicate settings benchmark")
    parser.add_argument("--pairs", type=int, default=2000, help="--near_dedup: near pairs (and half as many far pairs)")
    parser.add_argument("--settings", default="50x10,14x8,24x7", help="--near_dedup: bands x rows, comma-separated")
    parser.add_argument("--text_dir", default=None, help="--near_dedup: take the words from real text files here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_speed", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus and work folders")
    opts = parser.parse_args()
    if opts.near_dedup:
        opts.out = opts.out or "benchmarks/results/curation_near_dedup.json"
        return near_dedup_benchmark(opts)
    opts.out = opts.out or "benchmarks/results/curation.json"

    world = ToyWorld(seed=0, n_entities=200)
    docs, truth = planted_documents(world, opts.docs, seed=1)
    by_id = {d["id"]: d for d in docs}
    work = Path(tempfile.mkdtemp(prefix="curation_bench."))
    src = work / "src"
    src.mkdir()
    for shard in range(8):  # datatrove shards by file: several files keep both tasks busy
        with open(src / f"corpus-{shard}.jsonl", "w") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in docs[shard::8])
    out = work / "out"
    args = base_args(src, out)
    stats, seconds = run_ours(args)
    ledger = [json.loads(line) for line in (out / "exclusions.jsonl").read_text().splitlines()]
    stage_of = {r["id"]: r["stage"] for r in ledger}
    output_ids = {r["id"] for r in accounting.iter_jsonl(out.parent / "out.work" / "deduped")}  # before mixing

    # near duplicates: planted pairs with true Jaccard >= 0.8 that both reached deduplication
    early = {"cutoff", "length", "language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality",
             "toxicity", "read", "ingest"}
    pairs = [(a, b) for a, b in truth.near_dups if jaccard(by_id[a]["text"], by_id[b]["text"]) >= 0.8]
    eligible = [(a, b) for a, b in pairs if stage_of.get(a) not in early and stage_of.get(b) not in early]
    caught = [p for p in eligible if stage_of.get(p[0]) in ("near_dedup", "exact_dedup")
              or stage_of.get(p[1]) in ("near_dedup", "exact_dedup")]
    # precision: each document near-dedup removed vs its most similar document that was kept (shingle index)
    work_dir = out.parent / "out.work"
    index: dict[str, list[int]] = {}
    kept_shingles = []
    for i, d in enumerate(accounting.iter_jsonl(work_dir / "deduped")):
        sh = shingles(d["text"])
        kept_shingles.append(sh)
        for s_ in sh:
            index.setdefault(s_, []).append(i)
    removed = list(accounting.iter_jsonl(work_dir / "excluded" / "near_dedup"))
    planted = {i for pair in truth.near_dups + truth.exact_dups for i in pair}
    true_pos = planted_pos = 0
    for d in removed:
        sh = shingles(d["text"])
        overlap = Counter(i for s_ in sh for i in index.get(s_, ()))
        best = max((n / len(sh | kept_shingles[i]) for i, n in overlap.most_common(5)), default=0.0)
        true_pos += best >= 0.7
        planted_pos += best >= 0.7 or d["id"] in planted
    near = {"planted_pairs_j08": len(pairs), "eligible_pairs": len(eligible), "recall": len(caught) / max(len(eligible), 1),
            "removed": len(removed),
            # a removal is right if the document is a planted near copy (any Jaccard) or has Jaccard >= 0.7 with a
            # kept document; the strict figure counts only the second
            "precision": planted_pos / max(len(removed), 1), "precision_strict_j07": true_pos / max(len(removed), 1)}

    # PII: the scrubber on every document (recall per type; false positives on documents with none planted)
    scrubber = PIIScrubber()
    planted_ids = {d for v in truth.pii.values() for d, _ in v}
    pii = {}
    for kind in PII_TYPES:
        values = truth.pii[kind]
        hits = sum(value not in scrubber.format(by_id[d]["text"]) for d, value in values)
        pii[kind] = {"planted": len(values), "recall": hits / max(len(values), 1)}
    clean = [d for d in docs if d["id"] not in planted_ids]
    fp = sum(scrubber.format(d["text"]) != d["text"] for d in clean)
    pii["false_positive_rate"] = fp / max(len(clean), 1)
    from datasets import load_dataset

    out_text = {r["id"]: r["text"] for r in load_dataset(str(out), split="train")}
    pii["leaked_in_output"] = sum(value in out_text.get(d, "") for kind in PII_TYPES for d, value in truth.pii[kind])

    # toxicity: the word-list filter on every document
    tox = WordListFilter(word_files=["toy_toxic"], severe_files=["toy_illegal"])
    flagged = {d["id"] for d in docs if tox.filter(_doc(d)) is not True}
    toxic = {"planted": len(truth.toxic), "recall": len(flagged & truth.toxic) / max(len(truth.toxic), 1),
             "false_positive_rate": len(flagged - truth.toxic) / max(len(docs) - len(truth.toxic), 1)}
    cutoff = {"planted_after_cutoff": len(truth.after_cutoff), "leaked": len(truth.after_cutoff & output_ids)}

    results = {"docs": len(docs), "end_to_end_seconds": seconds, "end_to_end_docs_per_s_per_core": len(docs) / seconds / 2,
               "totals": stats["totals"], "removal_reasons": stats["removal_reasons"],
               "near_dedup": near, "pii": pii, "toxicity": toxic, "cutoff": cutoff}
    if not opts.skip_speed:
        results["filter_stage_speed"] = filter_stage_speed(args, src, len(docs))
        results["minhash"] = [minhash_speed(src, docs, pairs, t) for t in ("whitespace", "spacy")]
        ws, sp = results["minhash"]
        results["minhash_whitespace_vs_spacy_speed_ratio"] = sp["seconds"] / ws["seconds"]
    goals = {
        "near_dup_recall>=0.99": near["recall"] >= 0.99, "near_dup_precision>=0.98": near["precision"] >= 0.98,
        "pii_recall>=0.99": all(pii[k]["recall"] >= 0.99 for k in PII_TYPES), "cutoff_leak==0": cutoff["leaked"] == 0,
    }
    if "filter_stage_speed" in results:
        goals["throughput_ratio>=0.95"] = results["filter_stage_speed"]["ratio"] >= 0.95
    results["goals_met"] = goals
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "removal_reasons"}, indent=2, default=str))
    if not opts.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(goals.values()) else 1


def _doc(row: dict):
    from datatrove.data import Document

    return Document(text=row["text"], id=row["id"], metadata={})


if __name__ == "__main__":
    sys.exit(main())
