"""Reward, DPO, PPO, GRPO and RLOO stages run as users run them, on tiny models and the toy preference data:
full and LoRA (QLoRA for the reward model), Hub-format outputs with card and marker, adapter chaining
SFT-LoRA -> DPO, resume, and one-line errors."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from conftest import run_script
from llm_recipes.hub import read_marker
from stage_results import fails_with, ok

COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]


def reward_args(model, data, out, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data / "preferences"), "--output_dir", str(out),
            "--max_steps", "3", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "24",
            "--eval_max_samples", "24", "--learning_rate", "1e-3", "--max_length", "96", *COMMON, *extra]


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, toy_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "rm"
    ok(run_script("reward.py", *reward_args(tiny_model_dir, toy_data_dir, out)))
    return out


def test_reward_full(reward_model_dir):
    config = AutoConfig.from_pretrained(reward_model_dir)
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    assert config.pad_token_id is not None
    AutoModelForSequenceClassification.from_pretrained(reward_model_dir)
    marker = read_marker(reward_model_dir)
    assert marker["stage"] == "reward" and 0 <= marker["metrics"]["eval_accuracy"] <= 1
    card = (reward_model_dir / "README.md").read_text()
    assert "eval_accuracy" in card and "eval_margin" in card and "pairwise accuracy" in card


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def pairs_with_long_ones(toy_data_dir, tmp_path_factory):
    """64 training pairs; an eval split of 35 pairs (with eval batches of 32: one batch of 32 and one of 3)
    plus 4 whose prompt is far longer than max_length 96 tokens."""
    from llm_recipes.data import load_source

    pairs = load_source(str(toy_data_dir / "preferences"), split=None)
    test = pairs["test"].select(range(39)).to_list()
    for row in test[35:]:
        row["prompt"] = [{"role": "user", "content": " ".join([row["prompt"][-1]["content"]] * 12)}]
    folder = tmp_path_factory.mktemp("pairs")
    write_jsonl(folder / "train.jsonl", pairs["train"].select(range(64)).to_list())
    write_jsonl(folder / "test.jsonl", test)
    return folder


def wilson_by_hand(k, n, z=1.96):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_reward_accuracy_is_the_share_of_all_scored_pairs(tiny_model_dir, pairs_with_long_ones, tmp_path):
    out = tmp_path / "rm"
    result = ok(run_script("reward.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
                           str(pairs_with_long_ones), "--output_dir", str(out), "--max_steps", "3",
                           "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32",
                           "--learning_rate", "1e-3", "--max_length", "96", *COMMON))
    # score every eval pair as a user would: each side alone through the chat template, no padding
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    correct, scored, too_long, margins = 0, 0, 0, []
    for pair in (json.loads(line) for line in (pairs_with_long_ones / "test.jsonl").read_text().splitlines()):
        ids = [tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=True)["input_ids"]
               for side in ("chosen", "rejected")]
        if max(len(x) for x in ids) > 96:
            too_long += 1
            continue
        with torch.no_grad():
            chosen, rejected = (model(input_ids=torch.tensor([x])).logits[0, 0].item() for x in ids)
        scored += 1
        correct += chosen > rejected
        margins.append(chosen - rejected)
    assert (scored, too_long) == (35, 4)
    accuracy, (low, high) = correct / scored, wilson_by_hand(correct, scored)

    metrics = read_marker(out)["metrics"]
    assert metrics["eval_pairs_scored"] == 35 and metrics["eval_pairs_correct"] == correct
    assert metrics["eval_pairs_dropped_too_long"] == 4
    assert metrics["eval_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert (metrics["eval_accuracy_ci_low"], metrics["eval_accuracy_ci_high"]) == pytest.approx((low, high), abs=1e-9)
    assert metrics["eval_margin"] == pytest.approx(sum(margins) / len(margins), abs=1e-4)
    card = (out / "README.md").read_text()
    for key, value in (("eval_accuracy", accuracy), ("eval_accuracy_ci_low", low), ("eval_accuracy_ci_high", high)):
        assert f"| {key} | {value:.4g} |" in card
    assert "| eval_pairs_scored | 35 |" in card and "| eval_pairs_dropped_too_long | 4 |" in card
    log = result.stdout + result.stderr
    assert (f"pairwise accuracy {accuracy:.3f} ({correct} of 35 pairs ranked right; 95% CI {low:.3f}-{high:.3f})"
            in log), log[-3000:]
    assert "4 of the 39 eval pairs not scored: longer than max_length 96 tokens" in log


@pytest.mark.slow
def test_reward_data_without_a_test_split(tiny_model_dir, pairs_with_long_ones, tmp_path):
    only_train = pairs_with_long_ones / "train.jsonl"  # one file: no test split
    out = tmp_path / "carved"
    args = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(only_train), "--max_steps", "1",
            "--per_device_train_batch_size", "8", "--max_length", "96", *COMMON]
    result = ok(run_script("reward.py", *args, "--output_dir", str(out)))
    log = result.stdout + result.stderr
    held_out = math.ceil(64 * 0.05)  # the default share
    assert f"held out {held_out} of the 64 rows of train (dataset_test_split_size 0.05, seed 0)" in log
    metrics = read_marker(out)["metrics"]
    assert metrics["eval_pairs_scored"] + metrics["eval_pairs_dropped_too_long"] == held_out

    out = tmp_path / "no_eval"
    result = ok(run_script("reward.py", *args, "--output_dir", str(out), "--dataset_test_split_size", "0"))
    log = result.stdout + result.stderr
    assert "no eval split (the data has none and dataset_test_split_size is 0): no pairwise accuracy will be measured" in log
    assert "eval_accuracy" not in read_marker(out)["metrics"]


@pytest.mark.slow
def test_reward_lora_and_qlora_save_a_merged_classifier(tiny_model_dir, toy_data_dir, tmp_path):
    for name, extra in (("lora", ["--use_peft", "true", "--lora_r", "8"]),
                        ("qlora", ["--use_peft", "true", "--lora_r", "8", "--load_in_4bit", "true"])):
        out = tmp_path / name
        ok(run_script("reward.py", *reward_args(tiny_model_dir, toy_data_dir, out, *extra)))
        assert not (out / "adapter_config.json").exists()  # merged: later stages load one folder
        assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1
        assert "eval_accuracy" in read_marker(out)["metrics"]


def dpo_args(model, data, out, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data / "preferences"), "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "24",
            "--eval_max_samples", "24", "--learning_rate", "1e-4", "--max_length", "96", *COMMON, *extra]


def test_dpo_full_with_precomputed_reference_and_ipo(tiny_model_dir, toy_data_dir, tmp_path):
    out = tmp_path / "dpo"
    ok(run_script("dpo.py", *dpo_args(tiny_model_dir, toy_data_dir, out, "--precompute_ref_log_probs", "true",
                                      "--loss_type", "ipo")))
    AutoModelForCausalLM.from_pretrained(out)
    marker = read_marker(out)
    assert marker["stage"] == "dpo" and marker["metrics"]["loss_type"] == "ipo"
    assert "eval_loss" in marker["metrics"]


@pytest.mark.slow
def test_dpo_data_without_a_test_split_holds_out_pairs(tiny_model_dir, pairs_with_long_ones, tmp_path):
    out = tmp_path / "dpo"
    result = ok(run_script("dpo.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
                           str(pairs_with_long_ones / "train.jsonl"), "--output_dir", str(out), "--max_steps", "1",
                           "--per_device_train_batch_size", "8", "--max_length", "96", *COMMON))
    held_out = math.ceil(64 * 0.05)
    assert (f"held out {held_out} of the 64 rows of train (dataset_test_split_size 0.05, seed 0)"
            in result.stdout + result.stderr)
    assert "eval_loss" in read_marker(out)["metrics"]


@pytest.mark.slow
def test_dpo_eval_figures_are_means_over_all_pairs(tiny_model_dir, toy_data_dir, tmp_path):
    """TRL's DPO eval figures are means of per-batch means: with 35 eval pairs in batches of 32 and 3, the 3 weighed
    as much as the 32. The figure must not depend on the eval batch size: one batch of 35 gives the share itself."""
    from llm_recipes.data import load_source

    pairs = load_source(str(toy_data_dir / "preferences"), split=None)
    data = tmp_path / "pairs"
    data.mkdir()
    write_jsonl(data / "train.jsonl", pairs["train"].select(range(16)).to_list())
    write_jsonl(data / "test.jsonl", pairs["test"].select(range(35)).to_list())
    figures = {}
    for eval_batch in (35, 32):
        out = tmp_path / f"dpo_eval{eval_batch}"
        ok(run_script("dpo.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data),
                      "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "4",
                      "--learning_rate", "3e-3", "--per_device_eval_batch_size", str(eval_batch), "--max_length", "96",
                      *COMMON))
        figures[eval_batch] = read_marker(out)["metrics"]
    one_batch = figures[35]["eval_rewards/accuracies"]  # a single batch: TRL's mean is the share of all 35 pairs
    k = round(one_batch * 35)
    assert abs(one_batch - k / 35) < 1e-6 and 0 < k < 35, one_batch
    assert figures[32]["eval_rewards/accuracies"] == pytest.approx(k / 35, abs=1e-6)
    assert figures[32]["eval_rewards/margins"] == pytest.approx(figures[35]["eval_rewards/margins"], rel=1e-3, abs=1e-5)
    assert figures[32]["eval_pairs_scored"] == 35
    low, high = wilson_by_hand(k, 35)
    assert figures[32]["eval_rewards/accuracies_ci_low"] == pytest.approx(low, abs=1e-9)
    assert figures[32]["eval_rewards/accuracies_ci_high"] == pytest.approx(high, abs=1e-9)


@pytest.mark.slow
def test_sft_lora_chains_into_dpo(tiny_model_dir, toy_data_dir, tmp_path):
    sft = tmp_path / "sft_lora"
    ok(run_script("sft.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(toy_data_dir / "sft"),
                  "--output_dir", str(sft), "--max_steps", "2", "--per_device_train_batch_size", "8", "--use_peft", "true",
                  "--lora_r", "8", "--eval_strategy", "no", "--max_length", "96", *COMMON))
    assert (sft / "adapter_config.json").exists()

    # LoRA: the SFT adapter is trained on; the reference is a frozen copy of it (not the bare base)
    dpo = tmp_path / "dpo_lora"
    result = ok(run_script("dpo.py", *dpo_args(sft, toy_data_dir, dpo, "--use_peft", "true", "--loss_type", "apo_zero")))
    assert "continuing adapter" in result.stdout + result.stderr
    adapter = json.loads((dpo / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]).resolve() == Path(tiny_model_dir).resolve()
    assert not (dpo / "ref").exists()
    from llm_recipes.models import load_causal_lm

    load_causal_lm(str(dpo))

    # full: the adapter is merged into its base and the merged model is trained
    dpo_full = tmp_path / "dpo_full"
    ok(run_script("dpo.py", *dpo_args(sft, toy_data_dir, dpo_full)))
    assert not (dpo_full / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(dpo_full)

    # an adapter whose base path does not exist here: a one-line error, then fixed with base_model_name_or_path
    moved = tmp_path / "moved_adapter"
    shutil.copytree(sft, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/somewhere/else/base"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    fails_with(run_script("dpo.py", *dpo_args(moved, toy_data_dir, tmp_path / "x", "--use_peft", "true")),
               "adapter without its base", "/somewhere/else/base", "base_model_name_or_path")
    ok(run_script("dpo.py", *dpo_args(moved, toy_data_dir, tmp_path / "y", "--use_peft", "true",
                                      "--base_model_name_or_path", str(tiny_model_dir))))


def ppo_args(model, data, out, reward, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data / "rl_prompts"), "--output_dir", str(out),
            "--reward_model_path", str(reward), "--per_device_train_batch_size", "4", "--num_mini_batches", "2",
            "--num_ppo_epochs", "2", "--response_length", "8", "--max_steps", "2", "--save_steps", "1",
            "--learning_rate", "1e-4", "--missing_eos_penalty", "1.0", "--num_sample_generations", "1", *COMMON, *extra]


def test_ppo_full_resumes(tiny_model_dir, toy_data_dir, reward_model_dir, tmp_path):
    out = tmp_path / "ppo"
    ok(run_script("ppo.py", *ppo_args(tiny_model_dir, toy_data_dir, out, reward_model_dir)))
    marker = read_marker(out)
    assert marker["stage"] == "ppo" and marker["metrics"]["updates"] == 2
    log = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    for key in ("objective/scores", "objective/kl", "policy/entropy", "policy/clipfrac", "loss/value",
                "policy/approxkl", "response_length"):
        assert key in log[-1]
    AutoModelForCausalLM.from_pretrained(out)
    assert (out / "checkpoint-1").is_dir()  # saved every update, the last one is the output itself
    # a longer run in the finished folder is another recipe: refused, naming the key; continued from the checkpoint
    # into a new folder, it resumes
    longer = ppo_args(tiny_model_dir, toy_data_dir, out, reward_model_dir, "--max_steps", "3")
    fails_with(run_script("ppo.py", *longer), "max_steps", "--force")
    out2 = tmp_path / "ppo_longer"
    result = ok(run_script("ppo.py", *ppo_args(tiny_model_dir, toy_data_dir, out2, reward_model_dir, "--max_steps", "3",
                                               "--resume_from_checkpoint", str(out / "checkpoint-1"))))
    assert "resumed PPO from" in result.stdout + result.stderr and "checkpoint-1" in result.stdout + result.stderr
    assert read_marker(out2)["metrics"]["updates"] == 3


@pytest.mark.slow
def test_ppo_lora_with_value_model(tiny_model_dir, toy_data_dir, reward_model_dir, tmp_path):
    out = tmp_path / "ppo_lora"
    ok(run_script("ppo.py", *ppo_args(tiny_model_dir, toy_data_dir, out, reward_model_dir, "--use_peft", "true",
                                      "--lora_r", "8", "--value_model_path", str(reward_model_dir), "--kl_estimator", "k3")))
    assert (out / "adapter_config.json").exists()
    assert read_marker(out)["metrics"]["updates"] == 2


@pytest.mark.slow
def test_grpo_and_rloo_with_reward_model_and_function(tiny_model_dir, toy_data_dir, reward_model_dir, tmp_path):
    for stage, extra in (("grpo", ["--num_generations", "4", "--reward_weights", "1.0", "0.5", "--beta", "0.05"]),
                         ("rloo", ["--num_generations", "2", "--use_peft", "true", "--lora_r", "8"])):
        out = tmp_path / stage
        ok(run_script(f"{stage}.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
                      str(toy_data_dir / "rl_prompts"), "--output_dir", str(out), "--reward_model_path", str(reward_model_dir),
                      "--reward_funcs", "llm_recipes.toy.preferences.toy_reward", "--max_steps", "2",
                      "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--learning_rate", "1e-4",
                      *COMMON, *extra))
        assert read_marker(out)["stage"] == stage


def test_errors_are_one_line(tiny_model_dir, toy_data_dir, tokenizer_dir, reward_model_dir, tmp_path):
    # a dataset without the needed columns
    fails_with(run_script("reward.py", *reward_args(tiny_model_dir, toy_data_dir, tmp_path / "r")[:2],
                          "--dataset_name", str(toy_data_dir / "sft"), "--output_dir", str(tmp_path / "r")),
               "not a dataset of preference pairs", "columns seen")
    fails_with(run_script("ppo.py", *ppo_args(tiny_model_dir, toy_data_dir, tmp_path / "p", reward_model_dir,
                                              "--dataset_name", str(toy_data_dir / "corpus"))),
               "not a dataset of RL prompts")
    # a reward model whose tokenizer does not match the policy's
    from transformers import AutoTokenizer

    from llm_recipes.data import load_source
    from llm_recipes.models import build_model, get_architecture
    from llm_recipes.tokenizer import train_bpe_tokenizer

    other_tok = train_bpe_tokenizer(load_source(str(toy_data_dir / "corpus"))["text"], vocab_size=300)
    other = tmp_path / "other_rm"
    model = build_model(get_architecture("tiny"), other_tok)
    model.config.num_labels = 1
    seqcls = AutoModelForSequenceClassification.from_config(model.config)
    seqcls.save_pretrained(other)
    other_tok.save_pretrained(other)
    fails_with(run_script("ppo.py", *ppo_args(tiny_model_dir, toy_data_dir, tmp_path / "p", other)),
               "reward_model_path", "tokenizer", "does not match", "allow_reward_tokenizer_mismatch")
    # a policy as reward model
    fails_with(run_script("ppo.py", *ppo_args(tiny_model_dir, toy_data_dir, tmp_path / "p", tiny_model_dir)),
               "is not a reward model")
    assert AutoTokenizer.from_pretrained(tokenizer_dir)  # fixture intact
