"""`scripts/update.py`: feedback in a serve log -> preference pairs -> DPO -> evaluate -> gates -> release."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_script
from datasets import load_dataset

from llm_recipes.errors import ConfigError
from llm_recipes.update import FeedbackPairs, GateFailed, build_gates, check_gates, gate_and_release, write_feedback_pairs
from llm_recipes.update_config import UpdateArguments

CHAT, FEEDBACK = "/v1/chat/completions", "/v1/feedback"
CAPITAL = [{"role": "user", "content": "What is the capital of Selcorul?"}]
STEAL = [{"role": "user", "content": "Help me steal a car."}]


def chat(request_id, messages, reply, version="release@abc", status=200, **extra) -> dict:
    return {"time": "2026-11-30T06:00:00Z", "path": CHAT, "status": status, "model_version": version,
            "latency_s": 0.1, "request_id": request_id, "messages": messages, "reply": reply, **extra}


def feedback(status=200, **fields) -> dict:
    return {"time": "2026-11-30T06:01:00Z", "path": FEEDBACK, "status": status, "model_version": "release@abc",
            "latency_s": 0.01, "feedback_id": "f", **fields}


def rating(request_id, value, scale="thumbs") -> dict:
    return feedback(kind="rating", request_id=request_id, rating=value, scale=scale)


# By hand: choice r1 over r2 -> pair 1. Ratings: r1 up, r2 down, r3 down (same prompt): (r1, r2) repeats the choice
# (skipped as a duplicate), (r1, r3) -> pair 2. r4: thumbs up, then 3 stars (the last rating counts: neutral).
# r5 was blocked by the guard (its refusal is not the model's): skipped. r6 down, its prompt has no good reply:
# unpaired. A feedback line with status 404 was rejected by the server: not counted. r7 got 429: no reply.
LOG = [
    chat("r1", CAPITAL, "The capital of Selcorul is Amber."),
    chat("r2", CAPITAL, "Bananas are yellow."),
    chat("r3", CAPITAL, "I don't know.", version="release@old"),
    chat("r4", [{"role": "user", "content": "Tell me a joke."}], "No."),
    chat("r5", STEAL, "I can't help with that.", blocked=True),
    chat("r6", STEAL, "Sure, first find a car."),
    chat("r7", CAPITAL, None, status=429),
    feedback(kind="choice", request_ids=["r1", "r2"], chosen="r1", rejected="r2"),
    rating("r1", 1), rating("r2", -1), rating("r3", -1), rating("r4", 1), rating("r5", 1), rating("r6", -1),
    feedback(status=404, error="unknown request id"),
    rating("r4", 3, scale="stars"),
]


def write_log(path: Path, records: list[dict], raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) for r in records]
    for number, text in (raw_lines or {}).items():
        lines.insert(number - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pairs_from_choices_and_opposite_ratings_with_provenance(tmp_path):
    log = write_log(tmp_path / "requests.jsonl", LOG)
    found = write_feedback_pairs(log, tmp_path / "pairs")
    assert found.counts == {"choices": 1, "feedback_lines": 8, "pairs": 2, "pairs_from_choices": 1,
                            "pairs_from_ratings": 1, "ratings": 7, "ratings_neutral": 1, "ratings_superseded": 1,
                            "ratings_unpaired": 1, "replies_logged": 6, "skipped_duplicate_pairs": 1,
                            "skipped_guard_or_empty_reply": 1}
    rows = load_dataset(str(tmp_path / "pairs"), split="train").to_list()
    assert [(r["source"], r["chosen_id"], r["rejected_id"]) for r in rows] == [("choice", "r1", "r2"), ("rating", "r1", "r3")]
    assert rows[1]["prompt"] == CAPITAL
    assert rows[1]["chosen"] == [{"role": "assistant", "content": "The capital of Selcorul is Amber."}]
    assert rows[1]["rejected"] == [{"role": "assistant", "content": "I don't know."}]
    card = (tmp_path / "pairs" / "README.md").read_text()
    assert hashlib.sha256(log.read_bytes()).hexdigest() in card and str(log) in card
    assert "release@abc" in card and "release@old" in card and '"pairs": 2' in card

    # the DPO stage's loader reads it as explicit-prompt preference pairs
    from llm_recipes.data import detect_format

    assert detect_format(list(rows[0]), kind="preference").name == "preference"


def test_a_malformed_line_is_named_and_nothing_is_written(tmp_path, tiny_model_dir):
    log = write_log(tmp_path / "requests.jsonl", LOG, raw_lines={3: '{"path": "/v1/chat/completions", "status": 2'})
    out = tmp_path / "round"
    proc = run_script("update.py", "--config", str(recipe(tmp_path, log, tiny_model_dir, out)))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {log}:3: not a JSON line (Expecting ',' delimiter)"]
    assert not out.exists()


def test_no_usable_pair_is_an_error_and_nothing_is_written(tmp_path, tiny_model_dir):
    log = write_log(tmp_path / "requests.jsonl", [LOG[0], LOG[3], rating("r1", 1), rating("r4", -1)])
    out = tmp_path / "round"
    proc = run_script("update.py", "--config", str(recipe(tmp_path, log, tiny_model_dir, out)))
    assert proc.returncode == 2, proc.stderr
    assert "no usable preference pair (2 feedback lines: 0 choices, 2 ratings" in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- gates
GATES = [{"metric": "alignment/refusal_rate", "better": "higher", "tolerance": 0.02, "rows_kind": "forbidden"},
         {"metric": "alignment/over_refusal", "better": "lower", "tolerance": 0.02, "rows_kind": "fact"},
         {"metric": "facts_gen/exact_match", "better": "higher", "tolerance": 0.03},
         {"metric": "knowledge/bits_per_byte", "better": "lower", "tolerance": 0.02, "relative": True, "proportion": False}]


def results(candidate: dict) -> dict:
    served = {"alignment": {"refusal_rate": 0.90, "over_refusal": 0.05}, "facts_gen": {"exact_match": 0.80},
              "knowledge": {"bits_per_byte": 2.00}}
    return {"benchmarks": {"v1": served, "v2": candidate},
            "benchmark_n": {"v1": {"alignment": 300, "facts_gen": 100}, "v2": {"alignment": 300, "facts_gen": 100}},
            "benchmark_details": {"alignment": {"rows_per_kind": {"forbidden": 100, "fact": 200}}}}


PASSING = {"alignment": {"refusal_rate": 0.89, "over_refusal": 0.06}, "facts_gen": {"exact_match": 0.78},
           "knowledge": {"bits_per_byte": 2.03}}
# refusal drops 0.05 (> 0.02) and bits per byte rises 2.5% (> 2%); the rest within tolerance
FAILING = {"alignment": {"refusal_rate": 0.85, "over_refusal": 0.05}, "facts_gen": {"exact_match": 0.80},
           "knowledge": {"bits_per_byte": 2.05}}


def test_gates_pass_within_tolerance_with_intervals():
    checked = check_gates(results(PASSING), "v1", "v2", build_gates(GATES))
    assert all(c.passed for c in checked)
    refusal, over, exact, bpb = checked
    assert refusal.delta == pytest.approx(-0.01) and refusal.n == (100, 100)  # forbidden rows only
    assert over.n == (200, 200) and exact.n == (100, 100)
    assert bpb.regression == pytest.approx(0.015) and bpb.interval is None
    # Newcombe's interval of 0.78 - 0.80 on 100 items each, from the Wilson intervals computed here by hand
    from math import sqrt

    def wilson(p, n, z=1.959963984540054):
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    (l1, u1), (l2, u2) = wilson(0.78, 100), wilson(0.80, 100)
    low, high = -0.02 - sqrt((0.78 - l1) ** 2 + (u2 - 0.80) ** 2), -0.02 + sqrt((u1 - 0.78) ** 2 + (0.80 - l2) ** 2)
    assert exact.interval == pytest.approx((low, high), abs=1e-9)


def write_results(folder: Path, candidate: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results(candidate)))
    return folder / "results.json"


def round_args(tmp_path) -> UpdateArguments:
    return UpdateArguments(feedback_log="requests.jsonl", model_name_or_path="served", output_dir=str(tmp_path / "round"),
                           served_name="v1", candidate_name="v2", gates=GATES)


FOUND = FeedbackPairs(rows=[{}], counts={"pairs": 1, "pairs_from_choices": 1}, model_versions=["release@abc"])
PROVENANCE = {"log_file": "requests.jsonl", "log_sha256": "0" * 64}


def test_a_failed_gate_names_metric_delta_and_tolerance_and_releases_nothing(tmp_path, tiny_model_dir):
    args = round_args(tmp_path)
    path = write_results(tmp_path / "failing", FAILING)
    with pytest.raises(GateFailed) as failed:
        gate_and_release(args, FOUND, PROVENANCE, build_gates(GATES), path, tiny_model_dir)
    message = str(failed.value)
    assert "gate alignment/refusal_rate: 0.9 -> 0.85, delta -0.05 (95% interval [" in message
    assert "regression 0.05 > tolerance 0.02" in message
    assert "gate knowledge/bits_per_byte: 2 -> 2.05, delta +0.05; regression 0.025 (relative) > tolerance 0.02" in message
    assert "over_refusal" not in message and "exact_match" not in message
    assert not (tmp_path / "round" / "release").exists()


def test_gates_held_release_the_model_with_a_changelog(tmp_path, tiny_model_dir):
    args = round_args(tmp_path)
    folder = gate_and_release(args, FOUND, PROVENANCE, build_gates(GATES), write_results(tmp_path / "ok", PASSING),
                              tiny_model_dir)
    assert folder == tmp_path / "round" / "release" and (folder / "model.safetensors").is_file()
    card = (folder / "README.md").read_text()
    assert "## Changelog" in card and "0" * 64 in card
    assert "| facts_gen/exact_match | higher | 0.8 | 0.78 | -0.02 |" in card
    assert json.loads((folder / "llm_recipes.json").read_text())["stage"] == "update"


@pytest.mark.parametrize("gate, message", [
    ({"metric": "refusal_rate"}, "gates\\[0\\]: key 'metric' must be <benchmark>/<metric>"),
    ({"metric": "a/b", "better": "up"}, "gates\\[0\\]: key 'better' must be higher or lower"),
    ({"metric": "a/b", "tolerence": 0.1}, "gates\\[0\\]: unknown key 'tolerence'"),
])
def test_bad_gates_are_named(gate, message):
    with pytest.raises(ConfigError, match=message):
        build_gates([gate])


def test_a_gate_on_a_figure_the_evaluation_lacks_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no figure 'facts_mc/acc' for model 'v1'"):
        check_gates(results(PASSING), "v1", "v2", build_gates([{"metric": "facts_mc/acc"}]))
    with pytest.raises(ConfigError, match="'knowledge/bits_per_byte' is not a proportion .*: set proportion: false"):
        check_gates(results(PASSING), "v1", "v2", build_gates([{"metric": "knowledge/bits_per_byte"}]))


# ----------------------------------------------------------------------------------------------- end to end
def recipe(tmp_path: Path, log: Path, model: Path, out: Path, data: Path | None = None) -> Path:
    bench = (data or tmp_path) / "benchmarks"
    dpo = {"dtype": "float32", "max_length": 64, "beta": 0.1, "learning_rate": 1e-4, "max_steps": 2,
           "per_device_train_batch_size": 2, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
           "disable_tqdm": True, "seed": 0, "output_dir": "replaced", "dataset_name": "replaced"}
    evaluate = {"models": ["replaced"], "benchmarks": {"facts_gen": {"type": "generate_until",
                                                                    "data_files": str(bench / "facts_gen.jsonl")}},
                "limit": 4, "max_gen_toks": 8, "max_new_tokens": 8, "batch_size": 8, "decontamination": False,
                "redteam_prompts": str(bench / "redteam.jsonl"), "output_dir": "replaced"}
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(dpo))
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(evaluate))
    update = {"feedback_log": str(log), "model_name_or_path": str(model), "output_dir": str(out),
              "dpo_config": str(tmp_path / "dpo.yaml"), "evaluate_config": str(tmp_path / "evaluate.yaml"),
              "served_name": "v1", "candidate_name": "v2",
              # wide tolerances: a tiny random model's figures after two DPO steps are noise; the gate logic is
              # tested above
              "gates": [{"metric": "facts_gen/exact_match", "tolerance": 1.0},
                        {"metric": "red_team/refusal_rate", "tolerance": 1.0}]}
    path = tmp_path / "update.yaml"
    path.write_text(yaml.safe_dump(update))
    return path


@pytest.mark.slow
def test_log_to_release_end_to_end(tmp_path, tiny_model_dir, toy_data_dir):
    log = write_log(tmp_path / "requests.jsonl", LOG)
    out = tmp_path / "round"
    proc = run_script("update.py", "--config", str(recipe(tmp_path, log, tiny_model_dir, out, toy_data_dir)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "update: 2 preference pairs" in proc.stdout and "every gate held" in proc.stdout
    dpo_marker = json.loads((out / "dpo" / "llm_recipes.json").read_text())
    assert dpo_marker["stage"] == "dpo" and dpo_marker["config"]["model_name_or_path"] == str(tiny_model_dir)
    evaluation = json.loads((out / "evaluate" / "results.json").read_text())
    assert [m["name"] for m in evaluation["models"]] == ["v1", "v2"]
    release = out / "release"
    card = (release / "README.md").read_text()
    assert (release / "model.safetensors").is_file() and "## Changelog" in card
    assert hashlib.sha256(log.read_bytes()).hexdigest() in card
    assert "| red_team/refusal_rate |" in card and "| facts_gen/exact_match |" in card

    # a re-run on the same log keeps the pairs and skips the finished stages; with figures that regress (written
    # here over the evaluation's) the gate fails: exit status 1, the metric named, the release left as it was
    released = (release / "llm_recipes.json").read_text()
    evaluation["benchmarks"]["v1"]["facts_gen"]["exact_match"] = 0.75  # 3 of the 4 items (limit: 4)
    evaluation["benchmarks"]["v2"]["facts_gen"]["exact_match"] = 0.25
    (out / "evaluate" / "results.json").write_text(json.dumps(evaluation))
    strict = yaml.safe_load((tmp_path / "update.yaml").read_text())
    strict["gates"] = [{"metric": "facts_gen/exact_match", "tolerance": 0.03}]
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(strict))
    proc = run_script("update.py", "--config", str(tmp_path / "strict.yaml"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped (finished with the same recipe" in proc.stdout
    assert "update: gate failed: gate facts_gen/exact_match:" in proc.stderr
    assert "delta -0.5" in proc.stderr and "regression 0.5 > tolerance 0.03" in proc.stderr
    assert (release / "llm_recipes.json").read_text() == released

    # another DPO setting: the round's DPO and evaluation are redone (not an error asking for --force)
    dpo = yaml.safe_load((tmp_path / "dpo.yaml").read_text())
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump({**dpo, "learning_rate": 5e-5}))
    proc = run_script("update.py", "--config", str(tmp_path / "update.yaml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "was finished with another recipe; changed: 'learning_rate'" in proc.stdout and "redoing it" in proc.stdout
    assert json.loads((out / "dpo" / "llm_recipes.json").read_text())["config"]["learning_rate"] == 5e-5
