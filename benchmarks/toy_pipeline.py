"""The toy pipeline end to end (`llm-recipes toy`), timed per stage, in a work folder of its own so that the
runs/toy/ of the directory you are in is neither read nor overwritten. Goal: under 15 minutes on 2 CPU cores.

    OMP_NUM_THREADS=1 python benchmarks/toy_pipeline.py                    # the whole pipeline -> results/
    OMP_NUM_THREADS=1 python benchmarks/toy_pipeline.py --seed 1           # another seed -> results/toy_pipeline_seed1.*
    OMP_NUM_THREADS=1 python benchmarks/toy_pipeline.py --until tokenizer  # a slice (a check; not saved to results/)

It runs the pipeline exactly as `llm-recipes toy` does (llm_recipes.pipeline.run_pipeline: each stage its own
`accelerate launch` of the package's stage script with its recipe) from the work folder, so every relative path
(runs/toy/..., in recipes and in config defaults) lands there; each stage's log is runs/toy/logs/<stage>.log.
Writes benchmarks/results/toy_pipeline.{json,md} (a slice writes them in the work folder instead), with the
report's claims table (what each stage does to the model, with intervals and goals). Run it on a quiet machine:
the load average before and after is recorded, since a shared CPU inflates every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PIPELINE = "recipes/toy/pipeline.yaml"
GOAL_SECONDS = 15 * 60


def machine_info() -> dict:
    import torch
    import transformers
    import trl

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    mem = None
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = round(kb / 2**20, 1)
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "trl": trl.__version__, "cuda": torch.cuda.is_available(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def run(workdir: Path, from_stage: str | None, until_stage: str | None, seed: int | None = None) -> dict:
    os.chdir(workdir)  # the pipeline's relative paths (and the configs' defaults) resolve here
    from llm_recipes import PROJECT_ROOT
    from llm_recipes.pipeline import load_pipeline, run_pipeline

    pipeline = load_pipeline(PROJECT_ROOT / PIPELINE)
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_DATASETS_CACHE": str(workdir / "hf_datasets_cache")}
    start, load_before = time.time(), os.getloadavg()
    try:
        records = run_pipeline(PROJECT_ROOT / PIPELINE, from_stage, until_stage, extra_env=env, seed=seed)
    except SystemExit as failure:  # a failed stage: the runner saved the records so far in the summary
        print(failure, file=sys.stderr)
        records = json.loads(Path(pipeline.summary_path).read_text())["stages"]
    total = time.time() - start
    stages = [{"stage": r["stage"], "seconds": round(r["seconds"], 1), "ok": r["status"] == "ran"} for r in records]
    evaluated = workdir / "runs" / "toy" / "evaluate" / "results.json"
    claims = json.loads(evaluated.read_text()).get("lead_tables", []) if evaluated.exists() else []
    return {
        "benchmark": "toy_pipeline", "pipeline": PIPELINE, "seed": 0 if seed is None else seed,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "claims": claims,
        "complete": len(stages) == len(pipeline.stages) and all(r["ok"] for r in stages),
        "stages": stages, "total_seconds": round(total, 1), "goal_seconds": GOAL_SECONDS,
        "meets_goal": total < GOAL_SECONDS and all(r["ok"] for r in stages) and len(stages) == len(pipeline.stages),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "machine": machine_info(),
    }


def markdown(result: dict) -> str:
    from llm_recipes.evaluation.report import md_table

    m = result["machine"]
    lines = [
        "# Toy pipeline, end to end (benchmarks/toy_pipeline.py)", "",
        f"`python benchmarks/toy_pipeline.py --seed {result.get('seed', 0)}`, {result['date']}; {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB; torch {m['torch']}, "
        f"transformers {m['transformers']}, trl {m['trl']}; OMP_NUM_THREADS={m['OMP_NUM_THREADS']}; "
        f"load average before {result['load_average_before']}, after {result['load_average_after']}.", "",
        md_table(["stage", "seconds", "ok"],
                 [*[[r["stage"], f"{r['seconds']:.1f}", "yes" if r["ok"] else "FAILED"] for r in result["stages"]],
                  ["**total**", f"**{result['total_seconds']:.1f}**", ""]]), "",
        f"Goal: the whole pipeline under {GOAL_SECONDS // 60} minutes on 2 cores: "
        + ("met." if result["meets_goal"] else ("NOT met." if result["complete"] else "not a complete run.")),
    ]
    for table in result.get("claims", []):  # the evaluate report's claims table
        lines += ["", f"## {table['title']}", "", md_table(table["header"], table["rows"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="from_stage")
    parser.add_argument("--until", dest="until_stage")
    parser.add_argument("--workdir", help="work folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its runs/toy/ and logs)")
    parser.add_argument("--seed", type=int, help="seed of every stage that has one (default: the recipes' 0)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the toy pipeline is built locally: never wait on the network
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="toy_pipeline_bench_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.from_stage and not (workdir / "runs" / "toy").exists():
        parser.error("--from needs --workdir of an earlier run (its runs/toy/ holds the earlier stages)")
    print(f"work folder: {workdir}", flush=True)
    result = run(workdir, args.from_stage, args.until_stage, args.seed)
    sliced = bool(args.from_stage or args.until_stage)
    out = workdir if sliced else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = "toy_pipeline" if not args.seed else f"toy_pipeline_seed{args.seed}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print("\n" + markdown(result))
    print(f"saved {out / stem}.json and .md")
    if not args.keep and not args.workdir and all(r["ok"] for r in result["stages"]):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["ok"] for r in result["stages"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
