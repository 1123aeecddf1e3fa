"""Run trl 1.12.0's experimental PPOTrainer (the last TRL release with PPO) on the same models, prompts and
settings as our PPO, and write its per-update metrics. Runs inside its own virtual environment (see
benchmarks/ppo_vs_trl112.py); it imports nothing from llm_recipes.

    python benchmarks/ppo_trl112_runner.py settings.json out.json
"""

import json
import sys
import time

import torch


def main(settings_path: str, out_path: str) -> None:
    torch.set_num_threads(1)
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    assert trl.__version__ == "1.12.0", trl.__version__
    s = json.loads(open(settings_path).read())
    tokenizer = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    prompts = json.loads(open(s["prompts_file"]).read())
    ids = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ids]
    train = Dataset.from_dict({"input_ids": ids})
    policy = AutoModelForCausalLM.from_pretrained(s["policy"])
    ref = AutoModelForCausalLM.from_pretrained(s["policy"])
    reward = AutoModelForSequenceClassification.from_pretrained(s["reward_model"], num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(s["reward_model"], num_labels=1)
    h = s["hyper"]
    args = PPOConfig(
        output_dir=s["output_dir"], per_device_train_batch_size=h["batch_size"], gradient_accumulation_steps=1,
        num_mini_batches=1, total_episodes=h["batch_size"] * h["updates"], num_ppo_epochs=h["num_ppo_epochs"],
        learning_rate=h["learning_rate"], lr_scheduler_type=h["lr_scheduler_type"], response_length=h["response_length"],
        temperature=h["temperature"], stop_token="eos", missing_eos_penalty=h["missing_eos_penalty"],
        kl_coef=h["kl_coef"], kl_estimator="k1", cliprange=h["cliprange"], vf_coef=h["vf_coef"],
        cliprange_value=h["cliprange_value"], gamma=h["gamma"], lam=h["lam"], whiten_rewards=False, seed=h["seed"],
        num_sample_generations=0, save_strategy="no", report_to="none", logging_steps=1, use_cpu=True, bf16=False,
        local_rollout_forward_batch_size=h["batch_size"], disable_tqdm=True,
    )
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=train, value_model=value, eval_dataset=train.select(range(8)))
    start = time.time()
    trainer.train()
    history = [row for row in trainer.state.log_history if "objective/scores" in row]
    trainer.save_model(s["output_dir"] + "/final")
    tokenizer.save_pretrained(s["output_dir"] + "/final")
    out = {"trl_version": trl.__version__, "seconds": time.time() - start, "history": history}
    open(out_path, "w").write(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
