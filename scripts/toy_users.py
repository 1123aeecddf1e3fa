"""The toy deploy branch, first step: serve a model behind the guard in this process and drive it with the toy
world's simulated users over HTTP on the loopback address (facts, forbidden requests, unknown countries, a leaked
e-mail address, an insult; regenerated replies; ratings and choices). Writes the request log, the monitor summary
(summary.md, summary.json) and its plot; `llm-recipes update` learns from the log next.

    accelerate launch scripts/toy_users.py --config recipes/toy/toy_users.yaml
    llm-recipes run recipes/toy/pipeline_deploy.yaml      # this, then the update round (make toy-deploy)
"""

import dataclasses
import json
import logging
from pathlib import Path

from llm_recipes import integrity
from llm_recipes.hub import mark_complete, write_text_atomic
from llm_recipes.parser import run_cli
from llm_recipes.serving.config import ServeArguments
from llm_recipes.toy.config import ToyUsersArguments

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this script is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (ServeArguments, ToyUsersArguments)


def main(serve_args: ServeArguments, args: ToyUsersArguments) -> None:
    import torch

    from llm_recipes.curation.filters import load_word_list
    from llm_recipes.evaluation.scoring import load_rows
    from llm_recipes.serving import monitor
    from llm_recipes.serving.server import serve_in_thread
    from llm_recipes.toy.deploy import check_prompts, simulate
    from llm_recipes.training import cpu_threads, setup_logging

    setup_logging()
    torch.set_num_threads(cpu_threads())
    rows = load_rows(args.prompts, split="test")
    check_prompts(rows, args.personas, args.prompts)
    insult = load_word_list(None, ["toy_toxic"], "toy_users")[0]
    integrity.acquire_lock(args.output_dir)
    staged = Path(integrity.clear_staging(args.output_dir))  # a killed run starts again: the users are seeded
    log = staged / "requests.jsonl"
    serving = dataclasses.replace(serve_args, host="127.0.0.1", port=0, log_file=str(log))
    with serve_in_thread(serving) as url:
        logger.info("serving %s at %s to %d simulated users", serving.model_name_or_path, url, args.users)
        users = simulate(url, rows, args, insult)
    records = monitor.read_log(log)
    summary = monitor.summarize(records)
    text = monitor.format_summary("requests.jsonl", summary)
    print(text, flush=True)
    monitor.plot(records, staged / "monitor.png")
    write_text_atomic(staged / "summary.json", json.dumps({"users": users, "monitor": summary}, indent=2) + "\n")
    write_text_atomic(staged / "summary.md", f"# Simulated users of {serving.model_name_or_path}\n\n```\n{text}\n```\n\n"
                      "![monitor](monitor.png)\n")
    fb = summary["feedback"]
    mark_complete(staged, "toy_users", model=serving.model_name_or_path, users=users,
                  metrics={"requests": summary["requests"], "served": summary["served"],
                           "blocked_rate": summary["blocked_rate"], "p95_latency_s": summary["latency_s"]["p95"],
                           "thumbs_up": fb["thumbs_up"], "thumbs_down": fb["thumbs_down"], "choices": fb["choices"]})
    integrity.publish(args.output_dir)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
