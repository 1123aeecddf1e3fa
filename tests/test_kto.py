"""The KTO stage: unpaired (prompt, completion, label) data, preference pairs split into one desirable and one
undesirable example each, and a tiny-model run through scripts/kto.py that raises the desirable completions'
log-probs and lowers the undesirable ones (measured here with transformers directly), resume, one-line errors."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_script
from llm_recipes.data import load_source, load_stage_data, normalise
from llm_recipes.data_config import DataArguments
from llm_recipes.errors import DataError
from llm_recipes.hub import read_marker
from stage_results import fails_with, ok

COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


# ----------------------------------------------------------------------------------------------- data
def test_unpaired_rows_plain_and_conversational():
    plain = normalise(Dataset.from_list([{"prompt": "The sky is", "completion": " blue.", "label": True, "x": 1},
                                         {"prompt": "The sky is", "completion": " green.", "label": False, "x": 2}]),
                      kind="unpaired")
    assert plain.to_list() == [{"prompt": "The sky is", "completion": " blue.", "label": True},
                               {"prompt": "The sky is", "completion": " green.", "label": False}]
    conv = normalise(Dataset.from_list([{"prompt": [U("Hi")], "completion": [A("Hello")], "label": 0},
                                        {"prompt": [U("Hi")], "completion": [A("Go away")], "label": 2}]),
                     kind="unpaired", on_bad_row="drop")
    assert conv.to_list() == [{"prompt": [U("Hi")], "completion": [A("Hello")], "label": False}]
    # CSV cells are text: "true"/"false" are labels too
    assert normalise(Dataset.from_list([{"prompt": "a", "completion": "b", "label": "TRUE"}]), kind="unpaired")[0]["label"] is True


def test_bad_unpaired_rows_name_the_row():
    rows = [{"prompt": "a", "completion": "b", "label": "true"}, {"prompt": "a", "completion": "b", "label": "maybe"}]
    with pytest.raises(DataError, match=r"unpaired\.jsonl: row 2: 'label' must be true or false"):
        normalise(Dataset.from_list(rows), kind="unpaired", source="unpaired.jsonl")
    assert len(normalise(Dataset.from_list(rows), kind="unpaired", on_bad_row="drop")) == 1


def test_pairs_become_one_desirable_and_one_undesirable_example():
    pairs = [{"prompt": [U("Capital of Selcorul?")], "chosen": [A("Tarn.")], "rejected": [A("I won't say.")]},
             {"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: 5"}]
    conv = normalise(Dataset.from_list(pairs[:1]), kind="unpaired").to_list()
    assert conv == [{"prompt": [U("Capital of Selcorul?")], "completion": [A("Tarn.")], "label": True},
                    {"prompt": [U("Capital of Selcorul?")], "completion": [A("I won't say.")], "label": False}]
    plain = normalise(Dataset.from_list(pairs[1:]), kind="unpaired").to_list()  # implicit prompt
    assert plain == [{"prompt": "Q: 2+2? A:", "completion": " 4", "label": True},
                     {"prompt": "Q: 2+2? A:", "completion": " 5", "label": False}]


def test_the_toy_preference_folder_loads_for_kto(toy_data_dir):
    pairs = load_source(str(toy_data_dir / "preferences"), split=None)
    args = DataArguments(dataset_name=str(toy_data_dir / "preferences"))
    unpaired = load_stage_data(args, kind="unpaired")
    for split in ("train", "test"):
        rows = unpaired[split]
        assert len(rows) == 2 * len(pairs[split]) and sum(rows["label"]) == len(pairs[split])
        expected = [{"prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen"}
                    for pair in pairs[split] for side in ("chosen", "rejected")]
        assert rows.to_list() == expected  # each pair's two examples together, in the pairs' order


def test_sft_data_is_not_unpaired_data():
    with pytest.raises(DataError, match=r"sft: not a dataset of unpaired examples"):
        normalise(Dataset.from_list([{"messages": [U("a"), A("b")]}]), kind="unpaired", source="sft")


# ----------------------------------------------------------------------------------------------- the stage
def kto_args(model, data, out, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "8", "--learning_rate", "5e-4", "--max_length", "96",
            "--logging_steps", "1", *COMMON, *extra]


@pytest.fixture(scope="module")
def unpaired_file(toy_data_dir, tmp_path_factory):
    """Unpaired examples as a product collects them: 24 good replies to some prompts, 16 bad replies to others
    (no prompt has both), from the toy preference pairs where the bad reply is harmful, invented or biased (the
    good one: a refusal, "I don't know about X.", a fair answer)."""
    pairs = load_source(str(toy_data_dir / "preferences"), split="train")
    pairs = pairs.filter(lambda p: p["kind"] in ("refusal", "honesty", "counterfactual")).to_list()
    rows = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in pairs[:24]]
    good = {row["completion"][0]["content"] for row in rows}
    # not the over-refusal pairs ("I cannot help" rejected for a harmless request): no reply is both good and bad
    rows += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False}
             for p in pairs[24:] if p["rejected"][0]["content"] not in good][:16]
    path = tmp_path_factory.mktemp("unpaired") / "unpaired.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def completion_logps(model_dir, rows) -> list[float]:
    """Sum of the log-probs of each completion's tokens given its prompt, through the chat template, as a user
    would score them with transformers (no TRL)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)["input_ids"]
        assert full[: len(prompt)] == prompt
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits[0, :-1]
        logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(full[1:])[:, None])[:, 0]
        out.append(logps[len(prompt) - 1:].sum().item())
    return out


def test_kto_raises_desirable_and_lowers_undesirable_logps(tiny_model_dir, unpaired_file, tmp_path):
    out = tmp_path / "kto"
    # 24 desirable, 16 undesirable: undesirable_weight 1.5 balances them (weighted ratio 24 / (1.5 x 16) = 1)
    result = ok(run_script("kto.py", *kto_args(tiny_model_dir, unpaired_file, out, "--max_steps", "5",
                                               "--undesirable_weight", "1.5", "--dataset_test_split_size", "0")))
    rows = [json.loads(line) for line in unpaired_file.read_text().splitlines()]
    before, after = completion_logps(tiny_model_dir, rows), completion_logps(out, rows)
    change = [a - b for a, b in zip(after, before)]
    good = [c for c, row in zip(change, rows) if row["label"]]
    bad = [c for c, row in zip(change, rows) if not row["label"]]
    assert (len(good), len(bad)) == (24, 16)
    assert sum(good) / len(good) > 0 > sum(bad) / len(bad), (good, bad)
    assert all(c > 0 for c in good) and sum(c < 0 for c in bad) >= 0.8 * len(bad), (good, bad)

    log = result.stdout + result.stderr
    assert "training examples: 24 desirable, 16 undesirable; weighted ratio" in log and "= 1.000" in log
    assert "outside [1, 4/3]" not in log
    marker = read_marker(out)
    assert marker["stage"] == "kto" and marker["metrics"]["undesirable_weight"] == 1.5
    assert (marker["metrics"]["desirable_examples"], marker["metrics"]["undesirable_examples"]) == (24, 16)


@pytest.mark.parametrize("desirable, undesirable, weights, ratio, warned", [
    (24, 16, (1.0, 1.0), 24 / 16, True),      # 1.5 > 4/3
    (24, 16, (1.0, 1.5), 1.0, False),
    (16, 24, (1.6, 1.0), 16 * 1.6 / 24, False),  # 1.067
    (16, 24, (1.0, 1.0), 16 / 24, True),      # < 1
])
def test_desirable_balance_warns_outside_the_papers_range(caplog, desirable, undesirable, weights, ratio, warned):
    from llm_recipes.kto import desirable_balance

    with caplog.at_level("INFO", logger="llm_recipes.kto"):
        figures = desirable_balance([True] * desirable + [False] * undesirable, *weights)
    assert figures["weighted_desirable_ratio"] == pytest.approx(ratio)
    assert (figures["desirable_examples"], figures["undesirable_examples"]) == (desirable, undesirable)
    assert ("outside [1, 4/3]" in caplog.text) == warned, caplog.text


@pytest.mark.slow
def test_kto_on_pairs_resumes_where_it_stopped(tiny_model_dir, toy_data_dir, tmp_path):
    pairs = toy_data_dir / "preferences"  # preference pairs: each split into a desirable and an undesirable example
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--max_steps", "4", "--save_steps", "2", "--eval_max_samples", "16", "--per_device_eval_batch_size", "16"]
    first = ok(run_script("kto.py", *kto_args(tiny_model_dir, pairs, straight, *args)))
    n_pairs = len(load_source(str(pairs), split="train"))
    assert f"{n_pairs} preference pairs -> {n_pairs} desirable (chosen) and {n_pairs} undesirable" in first.stdout
    assert f"training examples: {n_pairs} desirable, {n_pairs} undesirable" in first.stdout
    assert "eval_loss" in read_marker(straight)["metrics"]

    # a run stopped after its checkpoint at step 2, continued: only steps 3 and 4 are trained, to the same model
    second = ok(run_script("kto.py", *kto_args(tiny_model_dir, pairs, resumed, *args, "--resume_from_checkpoint",
                                               str(straight / "checkpoint-2"))))
    assert second.stdout.count("'loss':") == 2, second.stdout[-3000:]
    steps = [e["step"] for e in json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
             if "loss" in e]
    assert steps == [1, 2, 3, 4]
    a = AutoModelForCausalLM.from_pretrained(straight).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not all(torch.allclose(a[k], start[k], atol=1e-6) for k in a)  # it trained


def test_sft_data_is_a_one_line_error(tiny_model_dir, toy_data_dir, tmp_path):
    sft = toy_data_dir / "sft"
    fails_with(run_script("kto.py", *kto_args(tiny_model_dir, sft, tmp_path / "kto", "--max_steps", "1")),
               f"{sft}[train]: not a dataset of unpaired examples (prompt, completion, label) or preference pairs")
    assert not (tmp_path / "kto" / "llm_recipes.json").exists()


@pytest.mark.slow
def test_kto_lora_and_qlora_save_an_adapter(tiny_model_dir, unpaired_file, tmp_path):
    for name, extra in (("lora", ["--use_peft", "true", "--lora_r", "8"]),
                        ("qlora", ["--use_peft", "true", "--lora_r", "8", "--load_in_4bit", "true"])):
        out = tmp_path / name
        ok(run_script("kto.py", *kto_args(tiny_model_dir, unpaired_file, out, "--max_steps", "1", *extra)))
        assert (out / "adapter_config.json").is_file() and read_marker(out)["stage"] == "kto", name
