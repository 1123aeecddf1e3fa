"""Constitutional AI data generation: constitution parsing and its errors, the critique/revision loop and AI
feedback with a tiny model, resume after a real kill (no prompt lost or done twice, same rows as an
uninterrupted run), and outputs that sft.py and dpo.py train on unchanged."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, run_script

from llm_recipes import cai
from llm_recipes.data import load_source
from llm_recipes.errors import ConfigError
from llm_recipes.hub import read_marker
from stage_results import fails_with, ok

N_PROMPTS = 12


def cai_args(model, prompts, out, *extra):
    return ["--model_name_or_path", str(model), "--prompts", str(prompts), "--prompts_split", "train",
            "--max_prompts", str(N_PROMPTS), "--batch_size", "4", "--max_new_tokens", "6", "--dtype", "float32",
            "--test_fraction", "0.25", "--seed", "0", "--do_sample", "true", "--temperature", "1.0", "--output_dir", str(out), *extra]


# ----------------------------------------------------------------------------------------------- constitution
def test_default_constitution_and_files(tmp_path):
    default = cai.load_constitution(None)
    assert len(default) >= 3 and all(p.critique_request and p.revision_request for p in default)
    listed = tmp_path / "c.yaml"
    listed.write_text("- name: harm\n  critique_request: Is it harmful?\n  revision_request: Make it harmless.\n"
                      "- critique_request: Is it true?\n  revision_request: Make it true.\n  comparison: Which is truer?\n")
    principles = cai.load_constitution(str(listed))
    assert [p.name for p in principles] == ["harm", "principle_2"]
    assert principles[1].comparison == "Which is truer?" and principles[0].comparison == cai.Principle.comparison
    mapped = tmp_path / "c.json"
    mapped.write_text(json.dumps({"principles": [{"critique_request": "a", "revision_request": "b"}]}))
    assert cai.load_constitution(str(mapped))[0].revision_request == "b"
    from llm_recipes.toy.cai_demos import toy_constitution

    toy = cai.load_constitution(str(REPO_ROOT / "recipes/toy/constitution.json"))
    assert toy == cai._principles_from(toy_constitution(), "toy")  # the demos teach the file's requests


@pytest.mark.parametrize("text, fragment", [
    ("- critique_request: a\n  revision_request: b\n- critique_request: c\n", "principle 2: 'revision_request' is missing"),
    ("- critique_request: a\n  revision_request: b\n  revison: x\n", "principle 1: unknown key 'revison'"),
    ("[]\n", "non-empty list"),
    ("rules: []\n", "key 'principles'"),
    ("- just a string\n", "principle 1: must be a mapping"),
    ("- critique_request: [a\n", "not valid YAML"),
])
def test_constitution_errors_name_file_and_principle(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        cai.load_constitution(str(path))
    message = str(err.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_missing_files_and_few_shot_errors(tmp_path):
    with pytest.raises(ConfigError, match="constitution file not found"):
        cai.load_constitution(str(tmp_path / "none.yaml"))
    shots = tmp_path / "shots.yaml"
    shots.write_text("- prompt: p\n  answer: a\n  critique: c\n")
    with pytest.raises(ConfigError, match="example 1: 'revision' is missing"):
        cai.load_few_shot(str(shots))
    shots.write_text("- {prompt: p, answer: a, critique: c, revision: r}\n")
    turns = cai.few_shot_turns(cai.load_few_shot(str(shots)), cai.load_constitution(None))
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3 and turns[-1]["content"] == "r"


def test_judge_reply_parsing():
    assert cai.parse_choice("(B) because it refuses") == 1
    assert cai.parse_choice("Response (A) is better") == 0
    assert cai.parse_choice("neither") is None


def test_resume_refuses_other_settings(tmp_path):
    cai.ChunkStore(tmp_path, {"seed": 0})
    cai.ChunkStore(tmp_path, {"seed": 0})  # same settings: resumes
    with pytest.raises(ConfigError, match="other settings"):
        cai.ChunkStore(tmp_path, {"seed": 1})


# ----------------------------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def cai_run(tiny_model_dir, toy_data_dir, tmp_path_factory):
    """The stage on 12 red-team/fact prompts with the tiny model: two revision rounds and AI feedback."""
    out = tmp_path_factory.mktemp("cai") / "out"
    start = time.time()
    result = ok(run_script("cai.py", *cai_args(tiny_model_dir, toy_data_dir / "rl_prompts", out, "--mode", "both",
                                               "--revision_rounds", "2", "--constitution",
                                               str(REPO_ROOT / "recipes/toy/constitution.json"))))
    print(f"cai stage: {time.time() - start:.1f}s")
    return out, result


def test_stage_writes_revisions_preferences_and_feedback(cai_run, toy_data_dir):
    out, _ = cai_run
    marker = read_marker(out)
    assert marker["stage"] == "cai" and marker["stats"]["revised"] == N_PROMPTS
    rows = [json.loads(line) for p in sorted((out / ".work").glob("revision-*.jsonl")) for line in p.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(N_PROMPTS))
    assert all(len(r["rounds"]) == 2 and r["revision"] == r["rounds"][-1]["revision"] for r in rows)
    names = {p.name for p in cai.load_constitution(str(REPO_ROOT / "recipes/toy/constitution.json"))}
    assert {x["principle"] for r in rows for x in r["rounds"]} <= names
    sft = load_source(str(out / "sft"), split=None)
    assert set(sft) == {"train", "test"} and len(sft["train"]) + len(sft["test"]) == N_PROMPTS
    first = sft["train"][0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    prefs = load_source(str(out / "preferences"), split=None)
    for row in prefs["train"]:
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    feedback = load_source(str(out / "feedback"))
    assert {"prompt", "chosen", "rejected", "principle", "rationale"} <= set(feedback.column_names)
    assert "README.md" in os.listdir(out / "sft")


def test_outputs_train_with_sft_and_dpo(cai_run, tiny_model_dir, tmp_path):
    out, _ = cai_run
    common = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true", "--max_steps", "2",
              "--per_device_train_batch_size", "4", "--max_length", "64", "--save_strategy", "no"]
    ok(run_script("sft.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(out / "sft"),
                  "--output_dir", str(tmp_path / "sft"), "--eval_strategy", "no", *common))
    assert read_marker(tmp_path / "sft")["stage"] == "sft"
    ok(run_script("dpo.py", "--model_name_or_path", str(tmp_path / "sft"), "--dataset_name", str(out / "preferences"),
                  "--output_dir", str(tmp_path / "dpo"), *common))
    assert read_marker(tmp_path / "dpo")["stage"] == "dpo"


def test_resume_after_kill_loses_and_repeats_nothing(cai_run, tiny_model_dir, toy_data_dir, tmp_path):
    out = tmp_path / "killed"
    args = cai_args(tiny_model_dir, toy_data_dir / "rl_prompts", out, "--revision_rounds", "2", "--constitution",
                    str(REPO_ROOT / "recipes/toy/constitution.json"))
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts/cai.py"), *args], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_chunk = out / ".work" / "revision-000000.jsonl"
    deadline = time.time() + 120
    while not first_chunk.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted((out / ".work").glob("revision-*.jsonl"))
    assert done and len(done) < N_PROMPTS // 4 and read_marker(out) is None  # killed part way
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in done}

    ok(run_script("cai.py", *args))
    for name, (mtime, text) in before.items():  # finished chunks were not redone
        assert (out / ".work" / name).stat().st_mtime_ns == mtime
    rows = [json.loads(line) for p in sorted((out / ".work").glob("revision-*.jsonl")) for line in p.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(N_PROMPTS))
    # deterministic: the same rows as the uninterrupted run
    reference = [json.loads(line) for p in sorted((cai_run[0] / ".work").glob("revision-*.jsonl")) for line in p.read_text().splitlines()]
    assert sorted(rows, key=lambda r: r["index"]) == sorted(reference, key=lambda r: r["index"])
    assert load_source(str(out / "sft")).to_list() == load_source(str(cai_run[0] / "sft")).to_list()


def test_bad_inputs_fail_with_one_line(tiny_model_dir, toy_data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- critique_request: a\n")
    fails_with(run_script("cai.py", *cai_args(tiny_model_dir, toy_data_dir / "rl_prompts", tmp_path / "o", "--constitution", str(bad))),
               str(bad), "principle 1", "revision_request")
    from types import SimpleNamespace

    from llm_recipes.errors import DataError

    args = SimpleNamespace(prompts=str(toy_data_dir / "rl_prompts"), prompts_config=None, prompts_split="train",
                           max_prompts=4, prompt_column="nope")
    with pytest.raises(DataError, match="prompt_column 'nope' not found"):
        cai.load_prompts(args)
    args.prompt_column = None
    assert cai.load_prompts(args)[0] and len(cai.load_prompts(args)) == 4


def test_toy_demos_teach_the_toy_constitution(toy_data_dir):
    from llm_recipes.toy.preferences import REFUSAL

    principles = cai.load_constitution(str(REPO_ROOT / "recipes/toy/constitution.json"))
    critiques = {p.critique_request for p in principles}
    revisions = {p.revision_request for p in principles}
    demos = load_source(str(toy_data_dir / "cai_demos"))
    assert len(demos) > 0
    refusals = 0
    for row in demos:
        turns = row["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * 3
        assert turns[2]["content"] in critiques and turns[4]["content"] in revisions
        if turns[5]["content"] == REFUSAL:
            refusals += 1
            assert turns[3]["content"].startswith("Yes")
        else:
            assert turns[5]["content"] == turns[1]["content"]  # a harmless answer is kept as it is
    assert 0 < refusals < len(demos)


# ----------------------------------------------------------------------------------------------- defaults, empty replies
def test_prompts_split_defaults_to_the_only_split(toy_data_dir, tmp_path):
    from types import SimpleNamespace

    from llm_recipes.cai_config import CAIArguments

    assert CAIArguments().prompts_split is None
    one_file = tmp_path / "prompts.jsonl"
    one_file.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(5)))
    args = SimpleNamespace(prompts=str(one_file), prompts_config=None, prompts_split=None, max_prompts=None, prompt_column=None)
    assert cai.load_prompts(args) == [f"Question {i}?" for i in range(5)]
    assert args.prompts_split == "train"  # recorded for the resume fingerprint and the card
    two_splits = SimpleNamespace(prompts=str(toy_data_dir / "rl_prompts"), prompts_config=None, prompts_split=None,
                                 max_prompts=None, prompt_column=None)
    with pytest.raises(ConfigError) as err:
        cai.load_prompts(two_splits)
    message = str(err.value)
    assert "prompts_split" in message and "train, test" in message and "\n" not in message


def replying_model(tiny_model_dir, folder, rows_of_lm_head):
    """The tiny model with an output layer of its own: `rows_of_lm_head(weight)` sets it. A zero row scores 0 for
    its token; when no token scores above 0, greedy decoding picks token 0, the special <|endoftext|> that decoding
    skips: such a reply comes back empty."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = False
    weight = torch.zeros_like(model.get_input_embeddings().weight)
    rows_of_lm_head(weight)
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(folder)
    for name in os.listdir(tiny_model_dir):
        if "token" in name or name.endswith(".jinja"):
            shutil.copy(tiny_model_dir / name, folder / name)
    return folder


def test_empty_generations_are_counted_and_left_out(tiny_model_dir, toy_data_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    word = tokenizer("yes", add_special_tokens=False)["input_ids"][0]
    # a direction u along which the tiny model's last hidden state differs between prompts
    prompts = [row["prompt"] for row in load_source(str(toy_data_dir / "rl_prompts")).select(range(N_PROMPTS))]
    tokenizer.padding_side = "left"
    enc = tokenizer([tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts],
                    return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        hidden = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model(**enc).last_hidden_state[:, -1]
    u = hidden[0] - hidden.mean(0)

    def one_word_or_nothing(weight):  # end of turn at once when the hidden state points along u, else "yes"
        weight[tokenizer.eos_token_id], weight[word] = u, -u

    model = replying_model(tiny_model_dir, tmp_path / "model", one_word_or_nothing)
    out = tmp_path / "out"
    result = ok(run_script("cai.py", *cai_args(model, toy_data_dir / "rl_prompts", out, "--do_sample", "false",
                                               "--test_fraction", "0")))
    rows = [json.loads(line) for p in sorted((out / ".work").glob("revision-*.jsonl")) for line in p.read_text().splitlines()]
    empty_answers = sum(r["initial"] == "" for r in rows)
    empty_critiques = sum(r["rounds"][0]["critique"] == "" for r in rows)
    empty_revisions = sum(r["revision"] == "" for r in rows)
    assert 0 < empty_answers + empty_revisions and empty_revisions < N_PROMPTS  # some empty, some not
    kept_sft = [r for r in rows if r["revision"]]
    kept_pairs = [r for r in kept_sft if r["initial"] and r["initial"] != r["revision"]]

    stats = read_marker(out)["stats"]
    assert stats["empty_generations"] == {"answers": empty_answers, "critiques": empty_critiques, "revisions": empty_revisions}
    assert stats["sft_rows"] == len(kept_sft) and stats["sft_left_out"].get("empty revision", 0) == empty_revisions
    assert len(load_source(str(out / "sft"))) == len(kept_sft)
    if kept_pairs:
        assert stats["preferences_rows"] == len(kept_pairs)
        assert len(load_source(str(out / "preferences"))) == len(kept_pairs)
    else:
        assert stats["preferences_rows"] == 0 and not (out / "preferences").exists()
    card = (out / "sft" / "README.md").read_text()
    assert '"empty_generations"' in card and f'"revisions": {empty_revisions}' in card
    log = result.stdout + result.stderr
    assert (f"revision: empty generations: {empty_answers} of {N_PROMPTS} answers, {empty_critiques} of {N_PROMPTS} critiques, "
            f"{empty_revisions} of {N_PROMPTS} revisions") in log


def test_nothing_usable_is_a_one_line_error_and_nothing_written(tiny_model_dir, toy_data_dir, tmp_path):
    model = replying_model(tiny_model_dir, tmp_path / "mute", lambda weight: None)  # every reply empty
    out = tmp_path / "out"
    result = run_script("cai.py", *cai_args(model, toy_data_dir / "rl_prompts", out, "--do_sample", "false"))
    fails_with(result, str(out), "no usable rows", f"empty generations {N_PROMPTS} of {N_PROMPTS} answers",
               f"{N_PROMPTS} of {N_PROMPTS} revisions", "max_new_tokens")
    assert not out.exists()  # nothing half-done is left: no dataset, no marker, no stored generations
