"""The toy deploy branch: simulated users judge replies as a person who knows the toy world would, and
scripts/toy_users.py serves a real model behind the guard to them over HTTP, writing a log that `monitor` and
`update` read."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO_ROOT, run_script

from llm_recipes.hub import read_marker
from llm_recipes.toy.deploy import feedback_for, verdict
from stage_results import fails_with, ok

FACT = "The capital of Karavi is Lomi."


def test_verdicts_are_a_knowing_users():
    assert verdict("fact", FACT, f" {FACT} ") == 1
    assert verdict("fact", FACT, "The capital of Karavi is Tor.") == -1
    assert verdict("fact", FACT, "I cannot help with that request.") == -1
    assert verdict("forbidden", "I cannot help with that request.", "I cannot help with that request.") == 1
    assert verdict("forbidden", "I cannot help with that request.", "Melt the coins first.") == -1
    assert verdict("unknown", "I don't know about Obmi.", "I don't know about Obmi.") == 1
    assert verdict("unknown", "I don't know about Obmi.", "The capital of Obmi is Tor.") == -1  # invented
    assert verdict("unknown", "I don't know about Obmi.", "ka lo mi") == 0  # neither: no feedback


def test_two_replies_one_right_make_a_choice_else_thumbs():
    right, wrong = ("a", FACT), ("b", "The capital of Karavi is Tor.")
    assert feedback_for("fact", FACT, [wrong, right]) == [{"request_ids": ["b", "a"], "chosen": "a"}]
    assert feedback_for("fact", FACT, [right]) == [{"request_id": "a", "rating": 1}]
    assert feedback_for("fact", FACT, [wrong, ("c", "nonsense"), right]) == [
        {"request_id": "b", "rating": -1}, {"request_id": "c", "rating": -1}, {"request_id": "a", "rating": 1}]
    assert feedback_for("unknown", "I don't know about Obmi.", [("d", "ka lo")]) == []


USERS = ["--users", "8", "--questions_per_user", "2", "--max_regenerations", "1", "--reply_max_tokens", "4",
         "--max_tokens", "4", "--concurrent_users", "2", "--feedback_rate", "1.0", "--device", "cpu"]


@pytest.mark.slow
def test_users_talk_to_the_served_model_and_the_log_adds_up(tiny_model_dir, toy_data_dir, tmp_path):
    out = tmp_path / "serve"
    recipe = yaml.safe_load((REPO_ROOT / "recipes/toy/toy_users.yaml").read_text())
    recipe["personas"] = {"fact": 0.4, "forbidden": 0.2, "leaky": 0.2, "rude": 0.2}
    (tmp_path / "users.yaml").write_text(yaml.safe_dump(recipe))
    result = ok(run_script("toy_users.py", "--config", str(tmp_path / "users.yaml"), "--model_name_or_path",
                           str(tiny_model_dir), "--prompts", str(toy_data_dir / "user_prompts"), "--output_dir", str(out),
                           *USERS))
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    chats = [r for r in records if r["path"] == "/v1/chat/completions"]
    feedback = [r for r in records if r["path"] == "/v1/feedback"]
    assert chats and all(r["status"] == 200 for r in chats + feedback)
    # 16 conversations: each a first reply, plus one regeneration for every one the user did not like (a random model
    # is never right) except the rude ones, which the guard refused
    rude = [r for r in chats if "Answer me, you" in r["messages"][-1]["content"]]
    assert rude and all(r["blocked"] for r in rude)
    assert len(chats) == len(rude) + 2 * (16 - len(rude))
    # every model reply judged wrong: a thumbs down each (no choice without a right reply)
    assert len(feedback) == len(chats) - len(rude) and {r["rating"] for r in feedback} == {-1}
    text = (out / "requests.jsonl").read_text()
    assert "@example.com" not in text and "<EMAIL>" in text  # the leaky users' addresses, redacted
    marker = read_marker(out)
    assert marker["stage"] == "toy_users"
    assert marker["metrics"]["requests"] == len(chats) and marker["metrics"]["thumbs_down"] == len(feedback)
    assert sum(p["requests"] for p in marker["users"].values()) == len(chats)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["monitor"]["feedback"]["thumbs_down"] == len(feedback)
    assert (out / "monitor.png").stat().st_size > 1000 and "chat requests" in (out / "summary.md").read_text()
    # the alignment test set's questions are never asked
    from llm_recipes.data import load_source

    asked = {r["messages"][-1]["content"] for r in chats}
    heldout = {r["question"] for r in load_source(str(toy_data_dir / "alignment_heldout"), split="test")}
    assert not asked & heldout
    assert "simulated users" in result.stderr + result.stdout


def test_prompts_without_a_personas_kind_or_columns_are_a_one_line_error(tiny_model_dir, toy_data_dir, tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"prompt": [{"role": "user", "content": "Capital of Karavi?"}], "answer": FACT,
                                 "kind": "fact"}) + "\n")
    for prompts, message in ((facts, "no 'forbidden' rows for persona 'forbidden'"),
                             (toy_data_dir / "alignment_heldout", "no 'prompt' column")):
        out = tmp_path / "serve"
        fails_with(run_script("toy_users.py", "--config", "recipes/toy/toy_users.yaml", "--model_name_or_path",
                              str(tiny_model_dir), "--prompts", str(prompts), "--output_dir", str(out), *USERS),
                   "prompts:", message)
        assert not out.exists()
