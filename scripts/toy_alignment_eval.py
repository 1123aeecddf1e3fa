"""The toy alignment report: for each policy (SFT, DPO, PPO, ...) on held-out prompts, the mean reward under
the reward model, exact match on fact questions, refusal rate on forbidden requests (and over-refusal of
harmless ones), KL to the reference (SFT) policy; and the reward model's pairwise accuracy per kind of pair.

    accelerate launch scripts/toy_alignment_eval.py --config recipes/toy/toy_alignment_eval.yaml
"""

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from llm_recipes import alignment, models
from llm_recipes.configs import ToyAlignmentEvalArguments, run_cli
from llm_recipes.data import load_source
from llm_recipes.hub import mark_complete, write_text_atomic
from llm_recipes.toy.alignment_eval import pairwise_accuracy, reward_scores, sampled_kl, score_policy
from llm_recipes.toy.evaluate import generate_answers
from llm_recipes.training import cpu_threads, setup_logging

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (ToyAlignmentEvalArguments,)


def main(args: ToyAlignmentEvalArguments) -> None:
    setup_logging()
    torch.set_num_threads(cpu_threads())
    rows = list(load_source(args.questions, split="test"))
    questions = [r["question"] for r in rows]
    reward_model = reward_tokenizer = None
    results: dict = {"policies": {}}
    if args.reward_model_path:
        reward_tokenizer = alignment.check_reward_model(args.reward_model_path)
        reward_model = models.load_pretrained(AutoModelForSequenceClassification, args.reward_model_path,
                                              "reward_model_path").eval()
        if args.preferences:
            pairs = list(load_source(args.preferences, split="test"))
            results["reward_model"] = pairwise_accuracy(reward_model, reward_tokenizer, pairs, args.batch_size)
    reference_name = args.reference_model or args.models[0]
    reference = alignment.load_causal_lm(reference_name, key="reference_model").eval()
    for name in args.models:
        tokenizer = models.load_tokenizer_from(name, "models")
        policy = reference if name == reference_name else alignment.load_causal_lm(name, key="models").eval()
        answers = generate_answers(policy, tokenizer, questions, args.max_new_tokens, args.batch_size)
        rewards = (reward_scores(reward_model, reward_tokenizer, questions, [a for a, _ in answers], args.batch_size)
                   if reward_model is not None else None)
        scores = score_policy(rows, answers, rewards)
        scores["kl_to_reference"] = 0.0 if policy is reference else sampled_kl(
            policy, reference, tokenizer, questions, args.max_new_tokens, args.kl_samples, args.batch_size, args.seed)
        scores["examples"] = [{"question": r["question"], "kind": r["kind"], "answer": a}
                              for r, (a, _) in list(zip(rows, answers))[:6]]
        results["policies"][name] = scores

    print(f"\ntoy alignment: {len(rows)} held-out prompts "
          f"({sum(r['kind'].startswith('forbidden') for r in rows)} forbidden); KL against {reference_name}")
    if "reward_model" in results:
        rm = results["reward_model"]
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in rm.items() if k not in ("all", "margin", "n"))
        print(f"reward model pairwise accuracy: {rm['all']:.3f} on {rm['n']} held-out pairs ({kinds}); margin {rm['margin']:.2f}")
    print(f"{'policy':<28} {'reward':>8} {'exact':>7} {'refusal':>8} {'(new phr.)':>10} {'over-ref':>9} {'EOS':>6} {'KL':>8}")
    for name, r in results["policies"].items():
        print(f"{name:<28} {r.get('mean_reward', float('nan')):>8.3f} {r['exact_match']:>7.1%} {r['refusal_rate']:>8.1%} "
              f"{r['refusal_new_phrasing']:>10.1%} {r['over_refusal']:>9.1%} {r['eos_rate']:>6.1%} {r['kl_to_reference']:>8.3f}")
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.output_dir) / "results.json", json.dumps(results, indent=2) + "\n")
    headline = {name: {k: round(v, 4) for k, v in r.items() if isinstance(v, float)} for name, r in results["policies"].items()}
    if "reward_model" in results:
        headline["reward_model_accuracy"] = round(results["reward_model"]["all"], 4)
    mark_complete(args.output_dir, "toy_alignment_eval", results=headline)


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
