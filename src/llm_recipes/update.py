"""One update round of a served model (`scripts/update.py`, `llm-recipes update`):

1. feedback -> preference pairs: the serve log (read by `serving.monitor.read_log`) gives every served reply and
   every feedback line. A choice is a pair (prompt, chosen reply, rejected reply). Ratings: a good and a bad reply
   to the same prompt (the same logged messages) make a pair, every good one with every bad one (thumbs: 1 good, -1
   bad; stars: >= star_threshold good, <= 6 - star_threshold bad; a reply rated more than once counts with its
   last rating). A rated reply with no opposite rating to its prompt is counted and skipped, as are replies the
   guard wrote (a refusal of a blocked request is not the model's) and pairs of two identical replies. The pairs
   are a Hub-format dataset (TRL's explicit-prompt conversational layout) whose card gives their provenance.
2. the DPO stage trains the next version from the served model on them (optionally mixed with the original
   preference data), then the evaluate stage compares both models in one run: the two stages run as a pipeline
   (`pipeline.run_pipeline`: each its own `accelerate launch`, finished stages skipped on a re-run).
3. gates: each gate metric's delta (new - served) from results.json; the new version is copied to the release
   folder with a changelog card only if no gate regresses beyond its tolerance. A failed gate is `GateFailed`
   (exit status 1, nothing released); bad input is a DataError/ConfigError (exit status 2, nothing written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from llm_recipes.errors import ConfigError, DataError
from llm_recipes.update_config import GateArguments, UpdateArguments

logger = logging.getLogger("llm_recipes")


class GateFailed(Exception):
    """A gate metric regressed beyond its tolerance: not bad input (exit status 1), and nothing is released."""


# ----------------------------------------------------------------------------------------------- feedback -> pairs
@dataclass
class FeedbackPairs:
    rows: list[dict]  # {prompt, chosen, rejected} as message lists, plus where each pair came from
    counts: dict[str, int]
    model_versions: list[str]


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts: the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _verdict(record: dict, star_threshold: int) -> int:
    """+1 good, -1 bad, 0 neither."""
    rating = record["rating"]
    if record.get("scale", "thumbs") == "stars":
        return 1 if rating >= star_threshold else -1 if rating <= 6 - star_threshold else 0
    return 1 if rating > 0 else -1 if rating < 0 else 0


def feedback_pairs(records: list[dict], star_threshold: int = 4) -> FeedbackPairs:
    """Preference pairs from the serve log's records (see the module docstring for the rules)."""
    from llm_recipes.serving.config import CHAT_PATH, FEEDBACK_PATH, prompt_digest

    replies = {r["request_id"]: r for r in records
               if r["path"] == CHAT_PATH and r["status"] == 200 and r.get("request_id")}
    feedback = [r for r in records if r["path"] == FEEDBACK_PATH and r["status"] == 200]
    counts: Counter = Counter(feedback_lines=len(feedback), replies_logged=len(replies))
    pairs: dict[tuple[str, str], dict] = {}

    def usable(request_id: str) -> bool:
        record = replies.get(request_id)
        if record is None:
            counts["skipped_unknown_reply"] += 1
            return False
        if record.get("blocked") or not isinstance(record.get("reply"), str) or not record["reply"].strip():
            counts["skipped_guard_or_empty_reply"] += 1  # a refusal the guard wrote is not the model's reply
            return False
        return True

    def add(chosen_id: str, rejected_id: str, source: str) -> None:
        chosen, rejected = replies[chosen_id], replies[rejected_id]
        if chosen["reply"].strip() == rejected["reply"].strip():
            counts["skipped_identical_replies"] += 1
            return
        if (chosen_id, rejected_id) in pairs:
            counts["skipped_duplicate_pairs"] += 1
            return
        pairs[(chosen_id, rejected_id)] = {
            "prompt": [{"role": m["role"], "content": _text(m.get("content"))} for m in chosen["messages"]],
            "chosen": [{"role": "assistant", "content": chosen["reply"]}],
            "rejected": [{"role": "assistant", "content": rejected["reply"]}],
            "source": source, "chosen_id": chosen_id, "rejected_id": rejected_id,
            "chosen_model_version": str(chosen.get("model_version")),
            "rejected_model_version": str(rejected.get("model_version")),
        }
        counts[f"pairs_from_{source}s"] += 1

    ratings: dict[str, dict] = {}
    for record in feedback:
        if record.get("kind") == "choice":
            counts["choices"] += 1
            if usable(record["chosen"]) and usable(record["rejected"]):
                add(record["chosen"], record["rejected"], "choice")
        elif record.get("kind") == "rating":
            counts["ratings"] += 1
            if record["request_id"] in ratings:
                counts["ratings_superseded"] += 1  # the last rating of a reply counts
            ratings[record["request_id"]] = record
    by_prompt: dict[str, dict[int, list[str]]] = {}
    for request_id, record in ratings.items():
        if not usable(request_id):
            continue
        verdict = _verdict(record, star_threshold)
        if verdict == 0:
            counts["ratings_neutral"] += 1
            continue
        group = by_prompt.setdefault(prompt_digest(replies[request_id]["messages"]), {1: [], -1: []})
        group[verdict].append(request_id)
    for group in by_prompt.values():
        if not group[1] or not group[-1]:
            counts["ratings_unpaired"] += len(group[1]) + len(group[-1])
            continue
        for good, bad in product(group[1], group[-1]):
            add(good, bad, "rating")
    rows = list(pairs.values())
    counts["pairs"] = len(rows)
    versions = sorted({r[k] for r in rows for k in ("chosen_model_version", "rejected_model_version")})
    return FeedbackPairs(rows, dict(sorted(counts.items())), versions)


PROVENANCE = "provenance.json"  # beside the card's copy, machine-readable: a re-run on the same log keeps the folder


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_feedback_pairs(log: str | Path, folder: str | Path, star_threshold: int = 4) -> FeedbackPairs:
    """Read the log, build the pairs and write them as a Hub-format dataset with a provenance card. A line that
    cannot be read, or no usable pair, is a DataError and nothing is written."""
    from datasets import Dataset, DatasetDict

    from llm_recipes.hub import save_dataset, write_text_atomic
    from llm_recipes.serving.monitor import read_log

    found = feedback_pairs(read_log(log), star_threshold)
    if not found.rows:
        c = found.counts
        raise DataError(f"{log}: no usable preference pair ({c.get('feedback_lines', 0)} feedback lines: "
                        f"{c.get('choices', 0)} choices, {c.get('ratings', 0)} ratings; a pair needs a choice, or a good "
                        "and a bad rating of two replies to the same prompt)")
    provenance = {"log_file": str(log), "log_sha256": sha256_of(log),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "model_versions": found.model_versions, "star_threshold": star_threshold, "counts": found.counts}
    written = Path(folder) / PROVENANCE
    if written.is_file():  # the same log and rule as before: kept, so a re-run skips the finished DPO and evaluation
        before = json.loads(written.read_text())
        if all(before.get(k) == provenance[k] for k in ("log_sha256", "star_threshold", "counts")):
            logger.info("%s: the pairs of this log are there already: kept", folder)
            return found
    description = (
        f"Preference pairs from the feedback in the serve log `{log}` (sha256 `{provenance['log_sha256']}`), made "
        f"{provenance['created']} by `llm-recipes update`: {found.counts['pairs']} pairs "
        f"({found.counts.get('pairs_from_choices', 0)} from choices between two replies, "
        f"{found.counts.get('pairs_from_ratings', 0)} from a good and a bad rating of replies to the same prompt), "
        f"replies by model version(s) {', '.join(found.model_versions)}. Layout: TRL's explicit-prompt conversational "
        "preference format (prompt, chosen, rejected as message lists); `source`, the two request ids and their model "
        "versions say where each pair came from. Skipped feedback is counted under Statistics.")
    save_dataset(DatasetDict({"train": Dataset.from_list(found.rows)}), folder, "Feedback preference pairs",
                 description, stats=provenance)
    write_text_atomic(written, json.dumps(provenance, indent=2) + "\n")
    return found


# ----------------------------------------------------------------------------------------------- gates
@dataclass
class GateResult:
    gate: GateArguments
    served: float
    candidate: float
    delta: float  # candidate - served
    regression: float  # how much worse, in the tolerance's units (relative: a share of served); <= 0 is no worse
    interval: tuple[float, float] | None  # 95% interval of delta (proportions only)
    n: tuple[int, int] | None

    @property
    def passed(self) -> bool:
        return self.regression <= self.gate.tolerance + 1e-12

    def message(self) -> str:
        unit = " (relative)" if self.gate.relative else ""
        ci = "" if self.interval is None else f" (95% interval {_fmt_interval(self)})"
        return (f"gate {self.gate.metric}: {self.served:.4g} -> {self.candidate:.4g}, delta {self.delta:+.4g}{ci}; "
                f"regression {self.regression:.4g}{unit} {'<=' if self.passed else '>'} tolerance "
                f"{self.gate.tolerance:g}{unit}")


def build_gates(specs: list | None) -> list[GateArguments]:
    from llm_recipes.parser import build_options

    if not specs:
        raise ConfigError("gates: name at least one gate metric (e.g. {metric: red_team/refusal_rate, tolerance: 0.02})")
    return [build_options(GateArguments, spec, f"gates[{i}]") for i, spec in enumerate(specs)]


def _figure(results: dict, model: str, gate: GateArguments, where: str) -> tuple[float, int | None]:
    section, _, metric = gate.metric.partition("/")
    if section == "red_team":
        figures = results.get("red_team", {}).get(model, {})
        n = figures.get("n")
    else:
        figures = results.get("benchmarks", {}).get(model, {}).get(section, {})
        n = results.get("benchmark_n", {}).get(model, {}).get(section)
        if gate.rows_kind:
            n = results.get("benchmark_details", {}).get(section, {}).get("rows_per_kind", {}).get(gate.rows_kind)
    value = figures.get(metric) if isinstance(figures, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{where}: no figure '{gate.metric}' for model '{model}' (gates name <benchmark>/<metric> "
                          f"of results.json `benchmarks`, or red_team/<metric>)")
    return float(value), n if isinstance(n, int) and not isinstance(n, bool) else None


def check_gates(results: dict, served: str, candidate: str, gates: list[GateArguments], where: str = "results.json") -> list[GateResult]:
    """Each gate's figures for both models of one evaluate run's results.json, its delta and regression."""
    from llm_recipes.evaluation.intervals import difference_interval

    out = []
    for gate in gates:
        old, n_old = _figure(results, served, gate, where)
        new, n_new = _figure(results, candidate, gate, where)
        delta = new - old
        worse = -delta if gate.better == "higher" else delta
        if gate.relative:
            if old == 0:
                raise ConfigError(f"gates: '{gate.metric}' is relative but the served value is 0")
            worse /= abs(old)
        interval = None
        if gate.proportion and not (0 <= old <= 1 and 0 <= new <= 1):
            raise ConfigError(f"gates: '{gate.metric}' is not a proportion ({old:g}, {new:g}): set proportion: false")
        if gate.proportion and n_old and n_new:
            interval = difference_interval(new, n_new, old, n_old)
        # (+ 0.0: a regression of -0.0 prints as 0)
        out.append(GateResult(gate, old, new, delta, worse + 0.0, interval, (n_old, n_new) if n_old and n_new else None))
    return out


# ----------------------------------------------------------------------------------------------- stages
def _load_recipe(path: str, key: str) -> dict:
    from llm_recipes import PROJECT_ROOT
    from llm_recipes.pipeline import locate

    located = locate(path, PROJECT_ROOT)
    if not os.path.isfile(located):
        raise ConfigError(f"{key}: {path}: no such recipe")
    recipe = yaml.safe_load(Path(located).read_text()) or {}
    if not isinstance(recipe, dict):
        raise ConfigError(f"{key}: {path}: not a mapping of keys")
    return recipe


def stage_recipes(args: UpdateArguments, pairs_dir: Path, out: Path) -> Path:
    """The round's DPO and evaluate recipes (the named recipes with the round's model, data and outputs) and the
    pipeline that runs them, written under the output folder; returns the pipeline's path."""
    dpo = _load_recipe(args.dpo_config, "dpo_config")
    dpo.update(model_name_or_path=args.model_name_or_path, output_dir=str(out / "dpo"),
               dataset_test_split="none", dataset_test_split_size=0)  # feedback is scarce: train on all of it
    for key in ("dataset_name", "dataset_config", "dataset_mixture", "eval_max_samples"):
        dpo.pop(key, None)
    if dpo.get("eval_strategy", "no") != "no":
        dpo["eval_strategy"] = "no"
    if args.original_preferences:
        dpo["dataset_mixture"] = {"datasets": [{"path": str(pairs_dir), "weight": args.feedback_weight},
                                               {"path": args.original_preferences, "weight": args.original_weight}]}
    else:
        dpo["dataset_name"] = str(pairs_dir)
    evaluate = _load_recipe(args.evaluate_config, "evaluate_config")
    evaluate.update(models=[args.model_name_or_path, str(out / "dpo")], model_names=[args.served_name, args.candidate_name],
                    baseline=args.served_name, output_dir=str(out / "evaluate"))
    recipes = out / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    for name, recipe in (("dpo", dpo), ("evaluate", evaluate)):
        (recipes / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    pipeline = {"name": "update", "accelerate_config": args.accelerate_config,
                "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"},
                "summary": str(out / "pipeline_summary.json"),
                "stages": [{"name": "dpo", "script": "scripts/dpo.py", "config": str(recipes / "dpo.yaml"),
                            "output": str(out / "dpo"), "args": list(args.dpo_args or [])},
                           {"name": "evaluate", "script": "scripts/evaluate.py", "config": str(recipes / "evaluate.yaml"),
                            "output": str(out / "evaluate"), "args": list(args.evaluate_args or [])}]}
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- release
def _fmt_interval(result: GateResult) -> str:
    return "-" if result.interval is None else f"[{result.interval[0]:+.3f}, {result.interval[1]:+.3f}]"


def changelog(args: UpdateArguments, found: FeedbackPairs, provenance: dict, gates: list[GateResult]) -> str:
    c = found.counts
    data = (f"{c['pairs']} preference pairs from user feedback ({c.get('pairs_from_choices', 0)} from choices, "
            f"{c.get('pairs_from_ratings', 0)} from ratings) in the serve log `{provenance['log_file']}` "
            f"(sha256 `{provenance['log_sha256']}`), replies by {', '.join(found.model_versions)}; "
            f"skipped: {c.get('ratings_unpaired', 0)} unpaired ratings, {c.get('ratings_neutral', 0)} neutral ratings, "
            f"{c.get('skipped_guard_or_empty_reply', 0)} guard refusals or empty replies, "
            f"{c.get('skipped_identical_replies', 0)} pairs of identical replies, "
            f"{c.get('skipped_unknown_reply', 0)} unknown reply ids")
    if args.original_preferences:
        data += (f"; feedback pairs weighted {args.feedback_weight:g}, mixed with `{args.original_preferences}` "
                 f"(weight {args.original_weight:g})")
    rows = [f"| {g.gate.metric} | {g.gate.better} | {g.served:.4g} | {g.candidate:.4g} | {g.delta:+.4g} | "
            f"{_fmt_interval(g)} | {g.gate.tolerance:g}{' (relative)' if g.gate.relative else ''} | "
            f"{'pass' if g.passed else 'FAIL'} |" for g in gates]
    return "\n".join([
        f"Released by `llm-recipes update` on {time.strftime('%Y-%m-%d', time.gmtime())}: the next version of "
        f"`{args.model_name_or_path}`.",
        "",
        "## Changelog",
        "",
        f"- **Data:** {data}. Dataset: `{Path(args.output_dir) / 'feedback_pairs'}`.",
        f"- **What changed:** DPO (recipe `{args.dpo_config}`, as run: `{Path(args.output_dir) / 'recipes' / 'dpo.yaml'}`)"
        f" from the served model on these pairs.",
        f"- **Evaluation:** `{args.evaluate_config}`, both models in one run "
        f"(`{Path(args.output_dir) / 'evaluate' / 'results.json'}`); every gate held.",
        "",
        "| gate metric | better | served | new | delta | 95% interval of delta | tolerance | gate |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


MODEL_FILES_SKIPPED = ("checkpoint-*", "runs", ".staging*", ".lock*", "llm_recipes.json", "llm_recipes_run.json", "README.md")


def release(candidate: str | Path, folder: str | Path, card_description: str, args: UpdateArguments,
            gates: list[GateResult], provenance: dict) -> Path:
    """Copy the new version's model files to `folder` with a card carrying the changelog, and a marker; written
    beside it and renamed, so the folder is the old release or the new one, never half."""
    from llm_recipes.hub import mark_complete, write_model_card

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp = staging / folder.name  # the card's title is the folder's name
    shutil.copytree(candidate, tmp, ignore=shutil.ignore_patterns(*MODEL_FILES_SKIPPED))
    metrics = {f"{g.gate.metric} (delta)": g.delta for g in gates}
    write_model_card(tmp, stage="update", base_model=args.model_name_or_path,
                     datasets=[str(Path(args.output_dir) / "feedback_pairs")], metrics=metrics,
                     description=card_description)
    mark_complete(tmp, "update", base_model=args.model_name_or_path, feedback=provenance,
                  gates=[{"metric": g.gate.metric, "served": g.served, "new": g.candidate, "delta": g.delta,
                          "interval": g.interval, "tolerance": g.gate.tolerance, "relative": g.gate.relative}
                         for g in gates])
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    staging.rmdir()
    return folder


# ----------------------------------------------------------------------------------------------- the round
def run_update(args: UpdateArguments) -> Path:
    """The whole round; returns the release folder. Raises GateFailed when a gate regresses beyond tolerance."""
    from llm_recipes import integrity
    from llm_recipes.pipeline import run_pipeline

    if not args.feedback_log:
        raise ConfigError("feedback_log: not set (the serve log, e.g. runs/serve/requests.jsonl)")
    if not args.model_name_or_path:
        raise ConfigError("model_name_or_path: not set (the served model)")
    gates = build_gates(args.gates)  # bad gates or recipes stop the round before anything is written
    _load_recipe(args.dpo_config, "dpo_config")
    _load_recipe(args.evaluate_config, "evaluate_config")
    out = Path(args.output_dir)
    pairs_dir = out / "feedback_pairs"
    found = write_feedback_pairs(args.feedback_log, pairs_dir, args.star_threshold)
    provenance = {"log_file": args.feedback_log, "log_sha256": sha256_of(args.feedback_log),
                  "counts": found.counts, "model_versions": found.model_versions}
    print(f"update: {found.counts['pairs']} preference pairs from {args.feedback_log} -> {pairs_dir}", flush=True)
    pipeline = stage_recipes(args, pairs_dir, out)
    # its DPO and evaluation derive from this round's recipe and pairs: a stage left by a round with other settings is
    # redone (an error would ask for --force, which the pipeline running this round cannot pass on)
    run_pipeline(pipeline, force=integrity.forced(), verbose=args.verbose, redo_changed=True)
    return gate_and_release(args, found, provenance, gates, out / "evaluate" / "results.json", out / "dpo")


def gate_and_release(args: UpdateArguments, found: FeedbackPairs, provenance: dict, gates: list[GateArguments],
                     results_path: Path, candidate: Path) -> Path:
    """Check the gates on the evaluation's results.json; all held: release `candidate` with its changelog."""
    if not results_path.is_file():
        raise DataError(f"{results_path}: no such file (the evaluate stage writes it)")
    results = json.loads(results_path.read_text())
    checked = check_gates(results, args.served_name, args.candidate_name, gates, str(results_path))
    for result in checked:
        print(result.message(), flush=True)
    failed = [r for r in checked if not r.passed]
    if failed:
        raise GateFailed("; ".join(r.message() for r in failed) + " -- nothing released")
    folder = release(candidate, args.release_dir or Path(args.output_dir) / "release",
                     changelog(args, found, provenance, checked), args, checked, provenance)
    print(f"update: every gate held; released {folder}", flush=True)
    return folder
