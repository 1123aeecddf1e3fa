"""The project's PPO trainer raises a rule-based reward on a tiny model, and stays at KL 0 before it moves."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes.ppo.config import PPOArguments
from llm_recipes.data import load_source
from llm_recipes.ppo import PPOTrainer


def a_share(prompts, completions, **_):
    """Rule-based reward: the share of the letter 'a' in the reply."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("a") / max(len(t), 1) for t in texts]


def make_trainer(tiny_model_dir, toy_data_dir, tmp_path, ptx_text_dataset=None, **overrides):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = load_source(str(toy_data_dir / "rl_prompts"), split="train").select(range(256))
    settings = dict(output_dir=str(tmp_path / "ppo"), learning_rate=3e-3, per_device_train_batch_size=16,
                    num_mini_batches=2, num_ppo_epochs=2, response_length=8, temperature=1.0, kl_coef=0.01,
                    total_episodes=32 * 14, logging_steps=100, save_strategy="no", use_cpu=True, seed=0,
                    report_to="none", num_sample_generations=0)
    settings.update(overrides)
    args = PPOArguments(**settings)
    return PPOTrainer(args, policy, tokenizer, prompts, reward_function=a_share, ptx_text_dataset=ptx_text_dataset)


def test_ppo_raises_a_rule_based_reward(tiny_model_dir, toy_data_dir, tmp_path):
    torch.manual_seed(0)
    # 20 updates: the share of 'a' climbs from about 0.065 to 0.19; after 14 it had reached only 0.11 (transformers
    # 5.24), too close to the margin below to tell learning from noise
    trainer = make_trainer(tiny_model_dir, toy_data_dir, tmp_path, total_episodes=32 * 20)
    summary = trainer.train()
    scores = [h["objective/scores"] for h in trainer.history]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert last > first + 0.05, scores
    assert trainer.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at first
    assert trainer.history[-1]["objective/kl"] > 0
    for key in ("policy/entropy", "policy/clipfrac", "loss/value", "policy/approxkl", "response_length"):
        assert key in trainer.history[-1]
    assert summary["final_scores"] > summary["first_scores"]


def test_ppo_reports_to_tensorboard_and_its_json_lines_log(tiny_model_dir, toy_data_dir, tmp_path, monkeypatch):
    """`report_to: tensorboard` writes the per-update curves as TensorBoard events (accelerate's tracker) beside the
    project's own JSON lines; a name accelerate has no tracker for is a one-line error naming the key."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from llm_recipes.errors import ConfigError

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    trainer = make_trainer(tiny_model_dir, toy_data_dir, tmp_path, total_episodes=32 * 2, logging_steps=1,
                           report_to="tensorboard")
    trainer.train()
    trainer.end()
    out = tmp_path / "ppo"
    lines = [json.loads(x) for x in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert [x["update"] for x in lines] == [1, 2]
    events = [p for p in (out / "runs").rglob("events.out.tfevents.*")]
    assert events, sorted(str(p) for p in out.rglob("*"))
    scalars = EventAccumulator(str(events[0].parent)).Reload().Scalars("objective/scores")
    assert [s.step for s in scalars] == [1, 2]
    assert [s.value for s in scalars] == pytest.approx([x["objective/scores"] for x in lines])
    with pytest.raises(ConfigError, match="report_to: azure_ml"):
        make_trainer(tiny_model_dir, toy_data_dir, tmp_path, report_to="azure_ml")


def test_ppo_keeps_the_newest_complete_checkpoints_and_resumes_from_the_last(tiny_model_dir, toy_data_dir, tmp_path):
    """save_total_limit keeps the newest complete checkpoints; a folder a kill cut off (no progress file) is
    neither counted nor resumed from; a resumed run continues at the update it saved and ends where one
    uninterrupted run ends."""
    from llm_recipes.ppo import list_checkpoints

    settings = dict(total_episodes=32 * 4, save_strategy="steps", save_steps=1, save_total_limit=2, logging_steps=1)
    trainer = make_trainer(tiny_model_dir, toy_data_dir, tmp_path, **settings)
    trainer.train()
    out = tmp_path / "ppo"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert list_checkpoints(str(out)) == [str(out / "checkpoint-2"), str(out / "checkpoint-3")]
    (out / "checkpoint-4").mkdir()  # a save cut off before its progress file
    assert list_checkpoints(str(out))[-1] == str(out / "checkpoint-3")

    resumed = make_trainer(tiny_model_dir, toy_data_dir, tmp_path, **settings)
    resumed.train(resume_from_checkpoint=list_checkpoints(str(out))[-1])
    assert [h["update"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:3] == trainer.history[:3]  # the saved history, as it was
    assert [json.loads(x)["update"] for x in (out / "ppo_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert resumed.history[3]["objective/scores"] == pytest.approx(trainer.history[3]["objective/scores"], abs=1e-5)


def _nll(model, tokenizer, text: str) -> float:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return float(model(ids, labels=ids).loss)


def test_ppo_ptx_text_term_trains_on_plain_text(tiny_model_dir, toy_data_dir, tmp_path):
    """PPO-ptx's pretraining term: a language-modelling loss on plain text beside the RL objective. A sentence the
    RL prompts never ask about is learnt with the term and not without it."""
    from datasets import Dataset

    sentence = "The capital of Zorvia is Quelmar, on the river Ost."
    text = Dataset.from_dict({"text": [sentence] * 8, "source": ["web"] * 8})  # extra columns are ignored
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = _nll(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, sentence)
    after = {}
    for coef in (0.0, 1.0):
        torch.manual_seed(0)
        trainer = make_trainer(tiny_model_dir, toy_data_dir, tmp_path / str(coef), ptx_text_dataset=text,
                               total_episodes=32 * 4, ptx_text_coef=coef, logging_steps=1)
        trainer.train()
        after[coef] = _nll(trainer.accelerator.unwrap_model(trainer.model).policy, tokenizer, sentence)
        assert ("loss/ptx_text" in trainer.history[-1]) == bool(coef)
    assert after[1.0] < before - 1.0 and after[1.0] < after[0.0] - 1.0, (before, after)


def test_ptx_text_keeps_only_the_named_sources(tmp_path):
    from llm_recipes.ppo.ptx import load_ptx_data

    rows = [{"text": f"doc {i}", "source": source} for i, source in enumerate(["encyclopedia", "community", "web"] * 3)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = dict(output_dir=str(tmp_path / "ppo"), report_to="none", ptx_text_coef=1.0, ptx_text_dataset_name=str(path))
    _, every = load_ptx_data(PPOArguments(**settings))
    _, kept = load_ptx_data(PPOArguments(**settings, ptx_text_sources=["encyclopedia", "web"]))
    assert len(every) == 9
    assert sorted(kept["text"]) == ["doc 0", "doc 2", "doc 3", "doc 5", "doc 6", "doc 8"]
