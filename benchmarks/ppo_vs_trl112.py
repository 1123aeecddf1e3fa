"""Correctness benchmark (not CI): our PPO against trl 1.12.0's experimental PPOTrainer (the last TRL
release with PPO), on the same policy, reward model, prompts, seed and settings; compares the reward and
KL curves and scores both final policies with one common scorer. trl 1.12 runs in its own virtual
environment (system packages shared, so torch/transformers/datasets/accelerate are the same; only trl
differs), created on first use at ~/.cache/llm-recipes-trl112.

    python benchmarks/ppo_vs_trl112.py                      # after `llm-recipes toy` (needs runs/toy/{sft,reward,data})
    python benchmarks/ppo_vs_trl112.py --updates 40 --seeds 0 1

Settings both trainers share: a separate value model initialised from the reward model (TRL's only mode),
a frozen copy of the policy as reference, k1 KL, whitened advantages, no reward whitening, one minibatch and
no gradient accumulation (the batch conventions of the two trainers differ beyond that), EOS stop token,
missing-EOS penalty. Known difference: TRL scores the raw token sequence (ending in <|im_end|>), ours
re-renders prompt + reply through the reward model's chat template (ending in <|im_end|>\\n, as the reward
model was trained): logged scores are on slightly different inputs, hence the common final scorer.
Writes benchmarks/results/ppo_vs_trl112_lr<learning_rate>.{json,md}.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path.home() / ".cache" / "llm-recipes-trl112"
RESULTS = ROOT / "benchmarks" / "results"


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import trl, requests; assert trl.__version__ == '1.12.0'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "trl==1.12.0"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "requests"], check=True)
    subprocess.run(check, check=True)
    return python


def run_ours(settings: dict, out_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from llm_recipes.ppo.config import PPOArguments
    from llm_recipes.ppo import PPOTrainer
    from datasets import Dataset

    h = settings["hyper"]
    torch.manual_seed(h["seed"])
    tokenizer = AutoTokenizer.from_pretrained(settings["policy"])
    prompts = Dataset.from_dict({"prompt": json.loads(Path(settings["prompts_file"]).read_text())})
    args = PPOArguments(
        output_dir=str(out_dir), per_device_train_batch_size=h["batch_size"], gradient_accumulation_steps=1,
        num_mini_batches=1, total_episodes=h["batch_size"] * h["updates"], num_ppo_epochs=h["num_ppo_epochs"],
        learning_rate=h["learning_rate"], lr_scheduler_type=h["lr_scheduler_type"], response_length=h["response_length"],
        temperature=h["temperature"], stop_token="eos", missing_eos_penalty=h["missing_eos_penalty"], kl_coef=h["kl_coef"],
        kl_estimator="k1", cliprange=h["cliprange"], vf_coef=h["vf_coef"], cliprange_value=h["cliprange_value"],
        gamma=h["gamma"], lam=h["lam"], whiten_rewards=False, whiten_advantages=True, seed=h["seed"],
        save_strategy="no", report_to="none", logging_steps=1000, use_cpu=True, num_sample_generations=0,
        local_rollout_forward_batch_size=h["batch_size"],
    )
    trainer = PPOTrainer(
        args, AutoModelForCausalLM.from_pretrained(settings["policy"]), tokenizer, prompts,
        reward_model=AutoModelForSequenceClassification.from_pretrained(settings["reward_model"]),
        reward_tokenizer=AutoTokenizer.from_pretrained(settings["reward_model"]),
        value_model=AutoModelForSequenceClassification.from_pretrained(settings["reward_model"]),
    )
    start = time.time()
    trainer.train()
    trainer.save_model(str(out_dir / "final"))
    return {"seconds": time.time() - start, "history": trainer.history}


def final_scores(policy_dir: str, settings: dict) -> dict:
    """One scorer for both: greedy replies to held-out prompts, mean reward, refusal rate, KL to the start."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from llm_recipes.data import load_source
    from llm_recipes.toy.alignment_eval import reward_scores, sampled_kl, score_policy
    from llm_recipes.evaluation.generation import generate_answers

    rows = list(load_source(settings["heldout"], split="test"))
    questions = [r["question"] for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(settings["policy"])
    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(settings["policy"]).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(settings["reward_model"]).eval()
    answers = generate_answers(policy, tokenizer, questions, settings["hyper"]["response_length"], 80)
    scores = score_policy(rows, answers, reward_scores(rm, AutoTokenizer.from_pretrained(settings["reward_model"]),
                                                        questions, [a for a, _ in answers]))
    scores["kl_to_start"] = sampled_kl(policy, reference, tokenizer, questions, settings["hyper"]["response_length"])
    return scores


def window_means(history: list[dict], key: str, windows: int = 4) -> list[float]:
    size = max(1, len(history) // windows)
    return [sum(h[key] for h in history[i : i + size]) / len(history[i : i + size]) for i in range(0, size * windows, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="runs/toy/sft")
    parser.add_argument("--reward_model", default="runs/toy/reward")
    parser.add_argument("--prompts", default="runs/toy/data/rl_prompts")
    parser.add_argument("--heldout", default="runs/toy/data/alignment_heldout")
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--kl_coef", type=float, default=0.1)
    parser.add_argument("--work_dir", default="/tmp/llm-recipes-ppo-bench")
    cli = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(ROOT)
    import torch

    torch.set_num_threads(1)
    from llm_recipes.data import load_source

    python = ensure_venv()
    work = Path(cli.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = load_source(cli.prompts, split="train").shuffle(seed=0).select(range(cli.batch_size * cli.updates))
    prompts_file = work / "prompts.json"
    prompts_file.write_text(json.dumps(list(rows["prompt"])))
    results = {"settings": None, "runs": []}
    for seed in cli.seeds:
        hyper = dict(batch_size=cli.batch_size, updates=cli.updates, num_ppo_epochs=2, learning_rate=cli.learning_rate,
                     lr_scheduler_type="constant", response_length=24, temperature=1.0, missing_eos_penalty=1.0,
                     kl_coef=cli.kl_coef, cliprange=0.2, vf_coef=0.1, cliprange_value=0.2, gamma=1.0, lam=0.95, seed=seed)
        settings = dict(policy=cli.policy, reward_model=cli.reward_model, prompts_file=str(prompts_file),
                        heldout=cli.heldout, output_dir=str(work / f"trl112-{seed}"), hyper=hyper)
        results["settings"] = {k: v for k, v in settings.items() if k not in ("output_dir", "prompts_file")}
        (work / "settings.json").write_text(json.dumps(settings))
        print(f"seed {seed}: trl 1.12.0 PPOTrainer ...", flush=True)
        subprocess.run([str(python), str(ROOT / "benchmarks" / "ppo_trl112_runner.py"), str(work / "settings.json"),
                        str(work / f"trl-{seed}.json")], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        trl_run = json.loads((work / f"trl-{seed}.json").read_text())
        print(f"seed {seed}: llm_recipes PPOTrainer ...", flush=True)
        ours = run_ours(settings, work / f"ours-{seed}")
        run = {"seed": seed}
        for name, run_data, final in (("trl_1_12", trl_run, work / f"trl112-{seed}" / "final"), ("ours", ours, work / f"ours-{seed}" / "final")):
            hist = run_data["history"]
            run[name] = {
                "seconds_per_update": run_data["seconds"] / max(len(hist), 1),
                "score_curve": [h["objective/scores"] for h in hist],
                "kl_curve": [h["objective/kl"] for h in hist],
                "score_windows": window_means(hist, "objective/scores"),
                "kl_windows": window_means(hist, "objective/kl"),
                "entropy_windows": window_means(hist, "policy/entropy_avg" if "policy/entropy_avg" in hist[0] else "policy/entropy"),
                "final_policy": final_scores(str(final), settings),
            }
        results["runs"].append(run)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = f"lr{cli.learning_rate:g}"
    (RESULTS / f"ppo_vs_trl112_{tag}.json").write_text(json.dumps(results, indent=1))
    lines = ["# PPO: llm-recipes vs trl 1.12.0 (same models, prompts, seed, settings)", "",
             f"Policy `{cli.policy}`, reward/value model `{cli.reward_model}`, {cli.updates} updates x {cli.batch_size} "
             f"prompts, 2 PPO epochs, lr {cli.learning_rate:g}, kl_coef {cli.kl_coef:g}. Windows: means over quarters of "
             "the run. Scores and KL as each trainer logs them; `final:` one common scorer (greedy replies to the "
             "held-out alignment prompts, the reward model through its chat template, sampled KL to the start).", "",
             "| seed | trainer | score (quarters) | KL (quarters) | s/update | final: reward | refusal | exact | KL to start |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        for name in ("trl_1_12", "ours"):
            r = run[name]
            f = r["final_policy"]
            lines.append(f"| {run['seed']} | {name} | {' / '.join(f'{x:.2f}' for x in r['score_windows'])} | "
                         f"{' / '.join(f'{x:.2f}' for x in r['kl_windows'])} | {r['seconds_per_update']:.2f} | "
                         f"{f['mean_reward']:.3f} | {f['refusal_rate']:.1%} | {f['exact_match']:.1%} | {f['kl_to_start']:.2f} |")
    (RESULTS / f"ppo_vs_trl112_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
