"""The online DPO stage run as users run it, on the tiny model and a tiny reward model: the pairs it trains on are
sampled from the current policy, scored by the reward model given, and the higher-scored one is `chosen`; resume
from a checkpoint; one-line errors."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from conftest import run_script
from llm_recipes.data import load_source
from llm_recipes.hub import read_marker
from stage_results import fails_with, ok

COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]
TOP_K = 3  # sampling keeps the policy's 3 likeliest tokens: a token outside them was not sampled from that policy
BATCH = 4


def online_dpo_args(model, data, out, reward, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data / "rl_prompts"), "--output_dir", str(out),
            "--reward_model_path", str(reward), "--per_device_train_batch_size", str(BATCH), "--max_new_tokens", "8",
            "--temperature", "1.0", "--top_k", str(TOP_K), "--learning_rate", "1e-3", "--max_steps", "2",
            "--logging_steps", "1", "--save_steps", "1", "--log_pairs_steps", "1", *COMMON, *extra]


@pytest.fixture(scope="module")
def online_run(tiny_model_dir, toy_data_dir, tiny_reward_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("online_dpo") / "run"
    ok(run_script("online_dpo.py", *online_dpo_args(tiny_model_dir, toy_data_dir, out, tiny_reward_model_dir)))
    return out


def read_pairs(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "sampled_pairs.jsonl").read_text().splitlines()]


def step_log(checkpoint: Path, step: int) -> dict:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return next(e for e in state["log_history"] if e.get("step") == step and "logps/chosen" in e)


def prompt_ids(tokenizer, prompt) -> list[int]:
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def completion_logits(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """The policy's next-token logits at each completion position (one unpadded forward pass)."""
    ids = torch.tensor([prompt + completion])
    return model(ids).logits[0, len(prompt) - 1 : -1]


@torch.no_grad()
def reward(reward_model, tokenizer, prompt, completion_ids) -> float:
    """The reward model's score of one (prompt, reply), as the reward stage trained it: the conversation through
    the chat template, no padding."""
    reply = tokenizer.decode(completion_ids, skip_special_tokens=True)
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    return float(reward_model(**enc).logits[0, 0])


def test_pairs_are_sampled_from_the_policy_and_ranked_by_the_reward_model(online_run, tiny_model_dir, toy_data_dir,
                                                                           tiny_reward_model_dir):
    marker = read_marker(online_run)
    assert marker["stage"] == "online_dpo" and str(tiny_reward_model_dir) in marker["metrics"]["rewards"]
    AutoModelForCausalLM.from_pretrained(online_run)
    pairs = read_pairs(online_run)
    assert [p["step"] for p in pairs] == [1] * BATCH + [2] * BATCH  # one pair per prompt, each step
    dataset_prompts = {json.dumps(p) for p in load_source(str(toy_data_dir / "rl_prompts"))["prompt"]}
    assert all(json.dumps(p["prompt"]) in dataset_prompts for p in pairs)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir).eval()
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    after_step_1 = AutoModelForCausalLM.from_pretrained(online_run / "checkpoint-1").eval()
    policy_at_step = {1: start, 2: after_step_1}

    logps = {}  # (pair index, completion) -> the starting policy's log-prob of the completion, summed over tokens
    for index, pair in enumerate(pairs):
        prompt = prompt_ids(tokenizer, pair["prompt"])
        for which, completion in enumerate(pair["completion_ids"]):
            assert 1 <= len(completion) <= 8
            # sampled from the policy of that step: every token is among its TOP_K likeliest there
            logits = completion_logits(policy_at_step[pair["step"]], prompt, completion)
            kth = logits.topk(TOP_K, dim=-1).values[:, -1]
            chosen_logits = logits.gather(1, torch.tensor(completion)[:, None])[:, 0]
            assert (chosen_logits >= kth - 1e-4).all(), (index, which, completion)
            # scored by the reward model given
            scored = reward(reward_model, tokenizer, pair["prompt"], completion)
            assert scored == pytest.approx(pair["rewards"][which], abs=1e-4)
            if pair["step"] == 1:
                logits = completion_logits(start, prompt, completion)
                logps[index, which] = float(logits.log_softmax(-1).gather(1, torch.tensor(completion)[:, None]).sum())
    assert any(p["completion_ids"][0] != p["completion_ids"][1] for p in pairs)  # two samples, not one greedy reply

    # the chosen of each pair is the higher-rewarded completion: TRL's logged means of step 1 (the starting policy's
    # log-probs of the chosen and rejected completions, the reward margin) match the pairs ranked here
    step_1 = [(i, p) for i, p in enumerate(pairs) if p["step"] == 1]
    higher = {i: 0 if p["rewards"][0] >= p["rewards"][1] else 1 for i, p in step_1}
    assert any(abs(logps[i, 0] - logps[i, 1]) > 0.1 and p["rewards"][0] != p["rewards"][1] for i, p in step_1)
    logged = step_log(online_run / "checkpoint-1", 1)
    assert logged["logps/chosen"] == pytest.approx(sum(logps[i, higher[i]] for i, _ in step_1) / BATCH, rel=1e-3)
    assert logged["logps/rejected"] == pytest.approx(sum(logps[i, 1 - higher[i]] for i, _ in step_1) / BATCH, rel=1e-3)
    margin = sum(abs(p["rewards"][0] - p["rewards"][1]) for _, p in step_1) / BATCH
    assert logged["objective/scores_margin"] == pytest.approx(margin, rel=1e-3, abs=1e-5)
    assert all(p["chosen"] == higher[i] for i, p in step_1)


def test_resume_continues_from_the_checkpoint(online_run, tiny_model_dir, toy_data_dir, tiny_reward_model_dir, tmp_path):
    out = tmp_path / "longer"
    result = ok(run_script("online_dpo.py", *online_dpo_args(tiny_model_dir, toy_data_dir, out, tiny_reward_model_dir,
                                                             "--max_steps", "3", "--resume_from_checkpoint",
                                                             str(online_run / "checkpoint-1"))))
    assert not (out / "checkpoint-1").exists() and (out / "checkpoint-3").is_dir(), result.stderr[-2000:]
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    # step 1 was not trained again, and step 2 redid what the first run did from that checkpoint: the same
    # weights and random state sample the same pairs
    pairs = read_pairs(out)
    assert [p["step"] for p in pairs] == [2] * BATCH + [3] * BATCH
    first_run_step_2 = [p for p in read_pairs(online_run) if p["step"] == 2]
    assert [p["completion_ids"] for p in pairs[:BATCH]] == [p["completion_ids"] for p in first_run_step_2]
    assert step_log(out / "checkpoint-3", 1) == step_log(online_run / "checkpoint-1", 1)


def test_errors_are_one_line(tiny_model_dir, toy_data_dir, tiny_reward_model_dir, tmp_path):
    out = tmp_path / "x"
    args = online_dpo_args(tiny_model_dir, toy_data_dir, out, tiny_reward_model_dir)
    fails_with(run_script("online_dpo.py", *args, "--dataset_name", str(toy_data_dir / "corpus")),
               "not a dataset of RL prompts", str(toy_data_dir / "corpus"))
    assert not out.exists()
    # TRL's eval loop cannot run on prompts: refused when the recipe is read
    from llm_recipes.alignment_config import OnlineDPOArguments
    from llm_recipes.data_config import DataArguments
    from llm_recipes.errors import ConfigError
    from llm_recipes.model_config import AlignmentModelArguments
    from llm_recipes.parser import parse_config

    with pytest.raises(ConfigError, match="eval_strategy: 'steps' is not possible"):
        parse_config((DataArguments, OnlineDPOArguments, AlignmentModelArguments), [*args, "--eval_strategy", "steps"])


@pytest.mark.slow
def test_lora_saves_an_adapter(tiny_model_dir, toy_data_dir, tiny_reward_model_dir, tmp_path):
    """With LoRA the reference is the policy with its adapter disabled: no second model; the output is the adapter."""
    out = tmp_path / "lora"
    ok(run_script("online_dpo.py", *online_dpo_args(tiny_model_dir, toy_data_dir, out, tiny_reward_model_dir,
                                                    "--use_peft", "true", "--lora_r", "8", "--save_steps", "10")))
    assert (out / "adapter_config.json").is_file() and read_marker(out)["stage"] == "online_dpo"
    assert len(read_pairs(out)) == 2 * BATCH
