"""The preference and distillation methods side by side on the toy world: SFT, DPO, PPO (from `make toy`) and KTO,
ORPO, SimPO, online DPO (recipes/toy/pipeline_methods.yaml) on the same toy alignment set, and the distilled student
against its teacher (size, generation speed in the same run, the share of the teacher's exact match and refusal it
keeps). One or more work folders, each holding a finished toy run of one seed (`llm-recipes toy --seed N` there):

    OMP_NUM_THREADS=1 python benchmarks/methods.py --workdirs /tmp/toy0 /tmp/toy1   # -> results/methods.{json,md}

Each folder's methods pipeline runs with that folder's seed (finished stages are skipped on a re-run). Rates come
with 95% Wilson intervals over their questions (100 fact, 60 forbidden, 100 unknown); mean reward and KL to SFT are
means over the 320 answers (the evaluate stage saves no per-answer values to put an interval on). Time is each
stage's wall time from the pipeline summaries; the load average is recorded, since a shared CPU inflates it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from toy_pipeline import machine_info  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PIPELINE = "recipes/toy/pipeline_methods.yaml"
METHODS = ("sft", "dpo", "ppo", "kto", "orpo", "simpo", "online_dpo")
# rate -> the kind of question it is counted over (toy_alignment's rows_per_kind)
RATES = {"exact_match": "fact", "refusal_rate": "forbidden", "over_refusal": "fact", "hallucination_rate": "unknown"}
# the stage that made each model (its time): the main toy pipeline's or the methods pipeline's
STAGE_OF = {"sft": "sft", "dpo": "dpo", "ppo": "ppo", "kto": "kto", "orpo": "orpo", "simpo": "simpo",
            "online_dpo": "online_dpo", "distill": "distill"}


def stage_seconds(*summaries: Path) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for path in summaries:
        if path.is_file():
            for record in json.loads(path.read_text())["stages"]:
                ran = record["seconds"] if record["status"] == "ran" else record.get("seconds_when_ran")
                if ran is not None:
                    seconds[record["stage"]] = ran
    return seconds


def generation_speed(teacher: str, student: str, prompts: list[str], rounds: int = 3, max_new_tokens: int = 40) -> dict:
    """Greedy generation tokens/s of teacher and student on the same prompts, alternating, in this process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.evaluation.generation import generate_answers

    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    models = {name: AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).eval()
              for name, path in (("teacher", teacher), ("student", student))}
    tokenizer = AutoTokenizer.from_pretrained(student)
    timings: dict[str, list[tuple[float, int]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            answers = generate_answers(model, tokenizer, prompts, max_new_tokens, 32)
            seconds = time.perf_counter() - start
            tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a, _ in answers)
            timings[name].append((seconds, tokens))
    for name, model in models.items():
        seconds = sum(s for s, _ in timings[name])
        tokens = sum(t for _, t in timings[name])
        out[name] = {"parameters": sum(p.numel() for p in model.parameters()), "tokens_per_s": tokens / seconds,
                     "seconds": seconds, "tokens": tokens}
    out["speedup"] = out["student"]["tokens_per_s"] / out["teacher"]["tokens_per_s"]
    out["size_ratio"] = out["student"]["parameters"] / out["teacher"]["parameters"]
    return out


def run_seed(workdir: Path, force: bool = False) -> dict:
    os.chdir(workdir)  # the pipeline's relative paths resolve here
    from llm_recipes import PROJECT_ROOT
    from llm_recipes.evaluation.intervals import wilson
    from llm_recipes.evaluation.scoring import load_rows
    from llm_recipes.hub import read_marker
    from llm_recipes.pipeline import run_pipeline

    seed = read_marker("runs/toy/data")["seed"]
    load_before = os.getloadavg()
    run_pipeline(str(PROJECT_ROOT / PIPELINE), seed=seed, force=force)
    results = json.loads(Path("runs/toy/methods/evaluate/results.json").read_text())
    counts = results["benchmark_details"]["toy_alignment"]["rows_per_kind"]
    seconds = stage_seconds(Path("runs/toy/pipeline_summary.json"), Path("runs/toy/methods/pipeline_summary.json"))
    rows = {}
    for name in (*METHODS, "distill"):
        figures = results["benchmarks"][name]["toy_alignment"]
        row = {"mean_reward": figures["mean_reward"], "kl_to_sft": figures["kl_to_reference"],
               "seconds": seconds.get(STAGE_OF[name])}
        for rate, kind in RATES.items():
            n = counts[kind]
            row[rate] = {"value": figures[rate], "n": n, "interval": wilson(figures[rate], n)}
        rows[name] = row
    marker = read_marker("runs/toy/distill")
    teacher = (marker.get("metrics") or {}).get("teacher") or marker.get("teacher") or "runs/toy/dpo"
    teacher_name = next((n for n in METHODS if f"runs/toy/{n}" == str(teacher).rstrip("/")), "dpo")
    prompts = [r["question"] for r in load_rows("runs/toy/data/alignment_heldout", split="test")][:64]
    speed = generation_speed(f"runs/toy/{teacher_name}", "runs/toy/distill", prompts)
    kept = {rate: (rows["distill"][rate]["value"] / rows[teacher_name][rate]["value"]
                   if rows[teacher_name][rate]["value"] else None) for rate in ("exact_match", "refusal_rate")}
    return {"seed": seed, "workdir": str(workdir), "rows": rows, "distill": {"teacher_model": teacher_name, **speed, "kept": kept},
            "load_average_before": load_before, "load_average_after": os.getloadavg()}


def fmt_rate(cell: dict) -> str:
    low, high = cell["interval"]
    return f"{cell['value']:.2f} [{low:.2f}, {high:.2f}]"


def markdown(runs: list[dict], machine: dict, command: str, note: str = "") -> str:
    lines = ["# Preference and distillation methods on the toy world", "",
             f"`{command}` on {machine['cpu']} ({machine['cores']} cores), {datetime.now(timezone.utc):%Y-%m-%d}; "
             f"torch {machine['torch']}, transformers {machine['transformers']}, trl {machine['trl']}.", "",
             "Rates with 95% Wilson intervals over their questions; reward (the toy reward model) and KL to SFT "
             "(sampled, per answer) are means over all 320 answers; time is the stage's wall time (- where no pipeline "
             "summary in the work folder has it).", "", *([note, ""] if note else [])]
    for run in runs:
        lines += [f"## Seed {run['seed']}", "",
                  f"Load average before {run['load_average_before'][0]:.1f}, after {run['load_average_after'][0]:.1f}.", "",
                  "| method | reward | exact match | refusal | over-refusal | hallucination | KL to SFT | time (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, row in run["rows"].items():
            secs = "-" if row["seconds"] is None else f"{row['seconds']:.0f}"
            lines.append(f"| {name} | {row['mean_reward']:.2f} | {fmt_rate(row['exact_match'])} | "
                         f"{fmt_rate(row['refusal_rate'])} | {fmt_rate(row['over_refusal'])} | "
                         f"{fmt_rate(row['hallucination_rate'])} | {row['kl_to_sft']:.1f} | {secs} |")
        d = run["distill"]
        kept = ", ".join(f"{k} {v:.0%}" if v is not None else f"{k} -" for k, v in d["kept"].items())
        lines += ["", f"Distillation ({d['teacher_model']} -> distill): student {d['student']['parameters']:,} parameters, "
                  f"{d['size_ratio']:.0%} of the teacher's {d['teacher']['parameters']:,}; greedy generation "
                  f"{d['student']['tokens_per_s']:.0f} vs {d['teacher']['tokens_per_s']:.0f} tokens/s "
                  f"({d['speedup']:.2f}x, same process, alternating); it keeps {kept} of the teacher's figures.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdirs", nargs="+", required=True, help="folders each holding a finished toy run")
    parser.add_argument("--force", action="store_true", help="rerun the methods' stages even if finished")
    parser.add_argument("--note", default="", help="a line for the results (how the stages were run, the machine's load)")
    parser.add_argument("--output", default=str(RESULTS / "methods"), help="results path without extension")
    args = parser.parse_args()
    command = "OMP_NUM_THREADS=1 python benchmarks/methods.py --workdirs " + " ".join(args.workdirs)
    machine = machine_info()
    runs = [run_seed(Path(w).resolve(), args.force) for w in args.workdirs]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "note": args.note, "machine": machine, "runs": runs}, indent=2) + "\n")
    text = markdown(runs, machine, command, args.note)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
