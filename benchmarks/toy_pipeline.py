"""The toy pipeline end to end (`llm-recipes toy`), timed per stage, in a temporary copy of the working tree so that
runs/toy/ is neither read nor overwritten. Goal: under 15 minutes on 2 CPU cores.

    OMP_NUM_THREADS=1 python benchmarks/toy_pipeline.py                    # the whole pipeline -> results/
    OMP_NUM_THREADS=1 python benchmarks/toy_pipeline.py --until tokenizer  # a slice (a check; not saved to results/)

The copy holds scripts/, recipes/ and accelerate_configs/; each stage runs exactly as the pipeline runs it (its
own `accelerate launch` of scripts/<stage>.py with the recipe), from the copy, so every relative path
(runs/toy/..., in recipes and in config defaults) lands in the copy. The package itself is the installed one.
Writes benchmarks/results/toy_pipeline.{json,md} (a slice writes them in the work folder instead). Run it on a
quiet machine: the load average before and after is recorded, since a shared CPU inflates every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PIPELINE = "recipes/toy/pipeline.yaml"
GOAL_SECONDS = 15 * 60
COPIED = ("scripts", "recipes", "accelerate_configs")


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


def make_tree(workdir: Path) -> Path:
    for name in COPIED:
        shutil.copytree(REPO / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return workdir


def run(workdir: Path, from_stage: str | None, until_stage: str | None) -> dict:
    os.chdir(workdir)  # the pipeline's relative paths (and the configs' defaults) resolve here
    from llm_recipes.hub import read_marker
    from llm_recipes.pipeline import load_pipeline, select_stages

    pipeline = load_pipeline(workdir / PIPELINE)
    stages = select_stages(pipeline, from_stage, until_stage)
    env = {**os.environ, **pipeline.env, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "HF_DATASETS_CACHE": str(workdir / "hf_datasets_cache")}
    records, start, load_before = [], time.time(), os.getloadavg()
    for number, stage in enumerate(stages, 1):
        print(f"[{number}/{len(stages)}] {stage.name}", flush=True)
        t0 = time.time()
        with open(workdir / f"{stage.name}.log", "w") as log:
            proc = subprocess.run(stage.command(), cwd=workdir, env={**env, **stage.env}, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.time() - t0
        ok = proc.returncode == 0 and read_marker(workdir / stage.output) is not None
        records.append({"stage": stage.name, "seconds": round(seconds, 1), "ok": ok})
        print(f"    {'done' if ok else 'FAILED'} in {seconds:.1f}s (log: {workdir / f'{stage.name}.log'})", flush=True)
        if not ok:
            break
    total = time.time() - start
    return {
        "benchmark": "toy_pipeline", "pipeline": PIPELINE, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": len(records) == len(pipeline.stages) and all(r["ok"] for r in records),
        "stages": records, "total_seconds": round(total, 1), "goal_seconds": GOAL_SECONDS,
        "meets_goal": total < GOAL_SECONDS and all(r["ok"] for r in records) and len(records) == len(pipeline.stages),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "machine": machine_info(),
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Toy pipeline, end to end (benchmarks/toy_pipeline.py)", "",
        f"{result['date']}; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, "
        f"transformers {m['transformers']}, trl {m['trl']}; OMP_NUM_THREADS={m['OMP_NUM_THREADS']}; "
        f"load average before {result['load_average_before']}, after {result['load_average_after']}.", "",
        "| stage | seconds | ok |", "|---|---:|---|",
        *[f"| {r['stage']} | {r['seconds']:.1f} | {'yes' if r['ok'] else 'FAILED'} |" for r in result["stages"]],
        f"| **total** | **{result['total_seconds']:.1f}** | |", "",
        f"Goal: the whole pipeline under {GOAL_SECONDS // 60} minutes on 2 cores: "
        + ("met." if result["meets_goal"] else ("NOT met." if result["complete"] else "not a complete run.")),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="from_stage")
    parser.add_argument("--until", dest="until_stage")
    parser.add_argument("--workdir", help="work folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its runs/toy/ and logs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the toy pipeline is built locally: never wait on the network
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="toy_pipeline_bench_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.from_stage and not (workdir / "recipes").exists():
        parser.error("--from needs --workdir of an earlier run (its runs/toy/ holds the earlier stages)")
    if not (workdir / "recipes").exists():
        make_tree(workdir)
    print(f"work folder: {workdir}", flush=True)
    result = run(workdir, args.from_stage, args.until_stage)
    sliced = bool(args.from_stage or args.until_stage)
    out = workdir if sliced else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "toy_pipeline.md").write_text(markdown(result))
    print(markdown(result))
    print(f"saved {out / 'toy_pipeline.json'} and .md")
    if not args.keep and not args.workdir and all(r["ok"] for r in result["stages"]):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["ok"] for r in result["stages"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
