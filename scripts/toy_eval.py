"""Ask each model the toy world's held-out questions: format-following, EOS and exact-match rates.

    accelerate launch scripts/toy_eval.py --config recipes/toy/toy_eval.yaml
"""

import json
import logging
from pathlib import Path

from transformers import AutoModelForCausalLM

from llm_recipes import models
from llm_recipes.configs import ToyEvalArguments, run_cli
from llm_recipes.data import load_source
from llm_recipes.hub import mark_complete, write_text_atomic
from llm_recipes.toy.evaluate import generate_answers, score_answers
from llm_recipes.training import cpu_threads, setup_logging

logger = logging.getLogger("llm_recipes")


# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (ToyEvalArguments,)


def main(args: ToyEvalArguments) -> None:
    setup_logging()
    import torch

    torch.set_num_threads(cpu_threads())
    rows = list(load_source(args.questions, split="test"))
    results = {}
    for name in args.models:
        tokenizer = models.load_tokenizer_from(name, "models")
        model = models.load_pretrained(AutoModelForCausalLM, name, "models")
        answers = generate_answers(model, tokenizer, [r["question"] for r in rows], args.max_new_tokens, args.batch_size)
        results[name] = score_answers(rows, answers)
        results[name]["examples"] = [{"question": r["question"], "answer": a} for r, (a, _) in zip(rows[:3], answers)]
    print(f"\nheld-out toy questions ({len(rows)}):")
    print(f"{'model':<32} {'format':>8} {'EOS':>8} {'exact':>8}")
    for name, r in results.items():
        print(f"{name:<32} {r['format_rate']:>8.1%} {r['eos_rate']:>8.1%} {r['exact_match']:>8.1%}")
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.output_dir) / "results.json", json.dumps(results, indent=2) + "\n")
    mark_complete(args.output_dir, "toy_eval", results={k: {m: v for m, v in r.items() if m != "examples"} for k, r in results.items()})


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
