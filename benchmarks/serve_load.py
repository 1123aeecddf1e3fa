"""Load on the serving stack: N concurrent clients on the loopback address for a bounded time against transformers'
own app bare, then behind the guard (the recipe's filters, the request log), same model, same run. Goals: no
errors, and the guard's overhead (guarded / bare mean latency) at most 1.10.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py                                 # runs/toy/release -> results/
    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --model DIR --clients 4 --seconds 20 --rounds 2

Phases alternate (bare, guarded, bare, guarded, ... `--rounds` of each) so that a change in the machine's load
hits both sides alike; the load average before and after is recorded, since a shared CPU inflates every figure.
Each client is a thread with its own httpx connection sending non-streamed, greedy requests (`model` names the
served folder: the bare app loads any model it is asked for) with a fixed
`max_tokens` (the same prompts in both phases: the same work for the model); a request is timed from send to the
whole reply. The clients run in this process, beside the server's threads: both phases pay that alike.
Writes benchmarks/results/serve_load.{json,md} (or --output-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GOAL_OVERHEAD = 1.10
PROMPTS = ["What is the capital of Vorland?", "Tell me about the river Selcorul.", "Who founded the city of Ambrel?",
           "Name a mountain in Vorland.", "What language is spoken in Selcorul?", "Hello! How are you?"]


def machine_info() -> dict:
    import torch
    import transformers

    return {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}


def load(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` threads sending requests back to back until `seconds` have passed; every request is recorded."""
    import httpx

    results: list[tuple[float, int, int]] = []  # (latency s, HTTP status or -1 for an exception, completion tokens)
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            n = index
            while time.perf_counter() < deadline:
                body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}],
                        "max_tokens": max_tokens, "temperature": 0}
                n += clients
                sent = time.perf_counter()
                try:
                    reply = http.post("/v1/chat/completions", json=body)
                    status = reply.status_code
                    tokens = ((reply.json().get("usage") or {}).get("completion_tokens") or 0) if status == 200 else 0
                    problem = None if status == 200 else f"HTTP {status}: {reply.text[:200]}"
                except Exception as err:  # a benchmark counts every failure, of any kind
                    status, tokens, problem = -1, 0, f"{type(err).__name__}: {err}"
                with lock:
                    results.append((time.perf_counter() - sent, status, tokens))
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall_s": time.perf_counter() - start, "results": results, "errors": errors}


def warm_up(url: str, model: str, max_tokens: int) -> None:
    """One request, not counted: the first request after a start pays for lazy initialisations."""
    import httpx

    reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": max_tokens})
    if reply.status_code != 200:
        raise RuntimeError(f"the warm-up request got HTTP {reply.status_code}: {reply.text[:300]}")


def figures(phases: list[dict]) -> dict:
    """One side (bare or guarded) over its phases."""
    ok = [r for p in phases for r in p["results"] if r[1] == 200]
    latencies = [r[0] for r in ok]
    wall = sum(p["wall_s"] for p in phases)
    p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99])) if latencies else (None,) * 3
    errors = [e for p in phases for e in p["errors"]]
    return {"requests": sum(len(p["results"]) for p in phases), "ok": len(ok), "errors": len(errors),
            "error_examples": sorted(set(errors))[:5], "seconds": wall,
            "throughput_rps": len(ok) / wall if wall else None,
            "tokens_per_s": sum(r[2] for r in ok) / wall if wall else None,
            "latency_s": {"mean": statistics.fmean(latencies) if latencies else None, "p50": p50, "p95": p95, "p99": p99}}


def run(args: argparse.Namespace) -> dict:
    import torch

    from llm_recipes.parser import build_options
    from llm_recipes.serving.config import ServeArguments
    from llm_recipes.serving.guard import Guard, GuardSettings, RequestLog, build_filters
    from llm_recipes.serving.server import build_transformers_app, check_args, model_version, serve_app_in_thread

    torch.set_num_threads(1)
    import yaml

    recipe = yaml.safe_load(Path(args.recipe).read_text())
    serve_args = build_options(ServeArguments, {**recipe, "model_name_or_path": args.model}, args.recipe)
    check_args(serve_args)
    app, shutdown = build_transformers_app(args.model, device="cpu", dtype="auto")
    log_dir = tempfile.TemporaryDirectory(prefix="serve_load_")
    settings = GuardSettings(
        served_model=args.model, model_version=model_version(args.model), system_prompt=serve_args.system_prompt,
        refusal=serve_args.refusal, input_filters=build_filters(serve_args.input_filters, "input_filters"),
        output_filters=build_filters(serve_args.output_filters, "output_filters"), max_tokens=serve_args.max_tokens,
        max_request_bytes=serve_args.max_request_bytes, max_concurrent=max(args.clients, serve_args.max_concurrent))
    log = RequestLog(str(Path(log_dir.name) / "requests.jsonl"))
    apps = {"bare": app, "guarded": Guard(app, settings, log)}
    phases: dict[str, list[dict]] = {"bare": [], "guarded": []}
    load_before = os.getloadavg()
    try:
        for round_ in range(args.rounds):
            for side in ("bare", "guarded"):
                with serve_app_in_thread(apps[side], log_level="error") as url:
                    warm_up(url, args.model, args.max_tokens)
                    phase = load(url, args.model, args.clients, args.seconds, args.max_tokens)
                phases[side].append(phase)
                print(f"round {round_ + 1} {side}: {sum(r[1] == 200 for r in phase['results'])} ok, "
                      f"{len(phase['errors'])} errors in {phase['wall_s']:.1f} s", flush=True)
        logged = sum(1 for _ in open(log.path, encoding="utf-8")) if log.path.exists() else 0
    finally:
        shutdown()
        log_dir.cleanup()
    bare, guarded = figures(phases["bare"]), figures(phases["guarded"])
    overhead = (guarded["latency_s"]["mean"] / bare["latency_s"]["mean"]
                if guarded["latency_s"]["mean"] and bare["latency_s"]["mean"] else None)
    recipe_path = Path(args.recipe).resolve()
    return {"model": args.model, "clients": args.clients, "seconds_per_phase": args.seconds, "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "recipe": str(recipe_path.relative_to(REPO)) if recipe_path.is_relative_to(REPO) else args.recipe,
            "bare": bare, "guarded": guarded, "guarded_requests_logged": logged, "overhead_latency_ratio": overhead,
            "throughput_ratio_bare_over_guarded": (bare["throughput_rps"] / guarded["throughput_rps"]
                                                   if guarded["throughput_rps"] else None),
            "goal": {"errors": 0, "overhead_latency_ratio_max": GOAL_OVERHEAD},
            "meets_goal": bool(bare["errors"] == guarded["errors"] == 0 and overhead is not None
                               and overhead <= GOAL_OVERHEAD),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def markdown(result: dict) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}"

    lines = ["# Serving under load: transformers' app bare vs behind the guard", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}", "",
             f"Model: `{result['model']}`; {result['clients']} concurrent clients, {result['rounds']} round(s) of "
             f"{result['seconds_per_phase']} s per side, max_tokens {result['max_tokens']}, greedy, not streamed; "
             f"guard: {result['recipe']}", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), "",
             f"Load average before {result['load_average_before']}, after {result['load_average_after']}", "",
             "| side | requests | ok | errors | req/s | tokens/s | mean ms | p50 ms | p95 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for side in ("bare", "guarded"):
        f = result[side]
        lines.append(f"| {side} | {f['requests']} | {f['ok']} | {f['errors']} | {f['throughput_rps']:.2f} | "
                     f"{f['tokens_per_s']:.1f} | {ms(f['latency_s']['mean'])} | {ms(f['latency_s']['p50'])} | "
                     f"{ms(f['latency_s']['p95'])} | {ms(f['latency_s']['p99'])} |")
    overhead = result["overhead_latency_ratio"]
    lines += ["", f"Guard overhead (guarded / bare mean latency): **{overhead:.3f}** (goal <= {GOAL_OVERHEAD}); "
              f"throughput bare / guarded: {result['throughput_ratio_bare_over_guarded']:.3f}; "
              f"requests the guard logged: {result['guarded_requests_logged']}. Meets the goal: "
              f"{'yes' if result['meets_goal'] else 'no'}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/toy/release", help="a release folder (or any saved model folder)")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "serve" / "serve.yaml"), help="the guard's recipe")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases per side, alternating bare and guarded")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--output-dir", default=str(RESULTS))
    args = parser.parse_args()
    from llm_recipes.errors import RecipeError

    try:
        if args.clients < 1 or args.rounds < 1 or args.seconds <= 0 or args.max_tokens < 1:
            raise RecipeError("--clients, --rounds, --max-tokens must be >= 1 and --seconds > 0")
        result = run(args)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {"command": "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/serve_load.py", *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(), **result}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "serve_load.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
