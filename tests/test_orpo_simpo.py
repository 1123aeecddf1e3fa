"""ORPO and SimPO stages (reference-free preference optimisation on TRL's experimental ORPOTrainer and CPOTrainer)
run as users run them, on the tiny model and toy preference pairs: the chosen-minus-rejected log-prob margin,
computed here with transformers directly, rises; no reference model is ever in memory; eval figures are shares of
all eval pairs; resume; the wrong data kind is a one-line error."""

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_script
from llm_recipes.hub import read_marker
from stage_results import fails_with, ok

COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]

# Run a stage script with transformers.Trainer.train wrapped: when training starts, count the causal LMs alive in
# the process (PreTrainedModel instances that are not a submodule of another) and write the count to a file. A
# reference model (a copy, or one loaded from the path) is a second one.
MODEL_COUNTER = '''
import gc, runpy, sys
import transformers

count_file, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
train = transformers.Trainer.train


def counting_train(self, *args, **kwargs):
    gc.collect()
    found = [o for o in gc.get_objects() if isinstance(o, transformers.PreTrainedModel)]
    inner = {id(m) for model in found for m in model.modules() if m is not model}
    with open(count_file, "w") as f:
        f.write(str(sum(id(model) not in inner for model in found)))
    return train(self, *args, **kwargs)


transformers.Trainer.train = counting_train
runpy.run_path(script, run_name="__main__")
'''


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def pairs_dir(toy_data_dir, tmp_path_factory):
    """32 training pairs and 20 eval pairs (eval batches of 16: one of 16 and one of 4)."""
    from llm_recipes.data import load_source

    pairs = load_source(str(toy_data_dir / "preferences"), split=None)
    folder = tmp_path_factory.mktemp("pairs")
    write_jsonl(folder / "train.jsonl", pairs["train"].shuffle(seed=0).select(range(32)).to_list())
    write_jsonl(folder / "test.jsonl", pairs["test"].shuffle(seed=0).select(range(20)).to_list())
    return folder


def read_pairs(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def stage_args(model, data, out, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            "--max_steps", "8", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
            "--learning_rate", "2e-3", "--max_length", "96", "--logging_steps", "1", "--save_steps", "4", *COMMON,
            *extra]


def run_counting_models(tmp_path, script, *args):
    """Run `script` and return (process, number of causal LMs in memory when training started)."""
    counter, count_file = tmp_path / "count_models.py", tmp_path / f"{script}.models"
    counter.write_text(MODEL_COUNTER)
    result = run_script(script, *args, launcher=[sys.executable, str(counter), str(count_file)])
    return result, int(count_file.read_text())


def reply_logps(model_dir, pairs):
    """[(chosen, rejected)] per pair, each (summed, mean per-token) log-prob of the reply given the prompt, with
    plain transformers. The text is tokenized as TRL's pair trainers do: the chat template, BOS before the prompt
    and EOS after the reply when the template has not put them there."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for pair in pairs:
        prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
        sides = []
        for side in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)
            assert full.startswith(prompt)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            reply_ids = tokenizer(full, add_special_tokens=False)["input_ids"][len(prompt_ids):]
            if prompt_ids[0] != tokenizer.bos_token_id:
                prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
            if reply_ids[-1] != tokenizer.eos_token_id:
                reply_ids = [*reply_ids, tokenizer.eos_token_id]
            ids = torch.tensor([prompt_ids + reply_ids])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            token_logps = logprobs[torch.arange(ids.shape[1] - 1), ids[0, 1:]][len(prompt_ids) - 1:]
            assert len(token_logps) == len(reply_ids)
            sides.append((token_logps.sum().item(), token_logps.mean().item()))
        out.append(tuple(sides))
    return out


def mean_margin(logps, which):
    """Mean over pairs of chosen minus rejected: which 0 = summed log-probs, 1 = mean per-token log-probs."""
    return sum(chosen[which] - rejected[which] for chosen, rejected in logps) / len(logps)


def test_orpo_raises_chosen_over_rejected_without_a_reference_model(tiny_model_dir, pairs_dir, tmp_path):
    train_pairs, eval_pairs = read_pairs(pairs_dir / "train.jsonl"), read_pairs(pairs_dir / "test.jsonl")
    before = reply_logps(tiny_model_dir, train_pairs)
    out = tmp_path / "orpo"
    result, models_in_memory = run_counting_models(tmp_path, "orpo.py", *stage_args(tiny_model_dir, pairs_dir, out))
    ok(result)
    assert models_in_memory == 1  # the policy alone: no reference model

    after = reply_logps(out, train_pairs)
    assert mean_margin(after, 0) > mean_margin(before, 0) + 1.0, (mean_margin(before, 0), mean_margin(after, 0))
    assert sum(c[0] for c, _ in after) > sum(c[0] for c, _ in before)  # the NLL term: chosen replies more likely

    marker = read_marker(out)
    assert marker["stage"] == "orpo" and marker["metrics"]["beta"] == 0.1
    # eval reward accuracy: the share of all 20 eval pairs whose chosen reply has the higher mean log-prob
    # (ORPO's reward), computed above from the saved model, not TRL's mean of the batch means (16 and 4 pairs)
    scored = reply_logps(out, eval_pairs)
    share = sum(chosen[1] > rejected[1] for chosen, rejected in scored) / len(scored)
    metrics = marker["metrics"]
    assert metrics["eval_rewards/accuracies"] == pytest.approx(share, abs=1e-6)
    assert metrics["eval_rewards/margins"] == pytest.approx(0.1 * mean_margin(scored, 1), abs=1e-4)
    assert metrics["eval_pairs_scored"] == 20
    assert metrics["eval_rewards/accuracies_ci_low"] < share < metrics["eval_rewards/accuracies_ci_high"]
    assert "| eval_pairs_scored | 20 |" in (out / "README.md").read_text()


def test_the_model_count_sees_a_reference_model(tiny_model_dir, pairs_dir, tmp_path):
    """The count above can fail: full-fine-tuning DPO holds a reference model next to the policy."""
    out = tmp_path / "dpo"
    result, models_in_memory = run_counting_models(tmp_path, "dpo.py", *stage_args(tiny_model_dir, pairs_dir, out,
                                                                                    "--max_steps", "1"))
    ok(result)
    assert models_in_memory == 2


def test_simpo_raises_the_length_normalised_margin(tiny_model_dir, pairs_dir, tmp_path):
    train_pairs = read_pairs(pairs_dir / "train.jsonl")
    before = reply_logps(tiny_model_dir, train_pairs)
    out = tmp_path / "simpo"
    result, models_in_memory = run_counting_models(tmp_path, "simpo.py", *stage_args(tiny_model_dir, pairs_dir, out))
    ok(result)
    assert models_in_memory == 1

    after = reply_logps(out, train_pairs)
    assert mean_margin(after, 1) > mean_margin(before, 1) + 0.1, (mean_margin(before, 1), mean_margin(after, 1))
    marker = read_marker(out)
    assert marker["stage"] == "simpo"
    assert {k: marker["metrics"][k] for k in ("loss_type", "cpo_alpha", "beta", "simpo_gamma")} == {
        "loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0, "simpo_gamma": 1.0}
    # pure SimPO (cpo_alpha 0): no NLL term in any step's loss
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert [entry["nll_loss"] for entry in state["log_history"] if "loss" in entry] == [0.0] * 8


@pytest.mark.slow
def test_orpo_resumes(tiny_model_dir, pairs_dir, tmp_path):
    out = tmp_path / "orpo"
    ok(run_script("orpo.py", *stage_args(tiny_model_dir, pairs_dir, out, "--max_steps", "4", "--save_steps", "2")))
    # a longer run continued from the step-2 checkpoint into a new folder trains only steps 3..6
    longer = tmp_path / "orpo_longer"
    result = ok(run_script("orpo.py", *stage_args(tiny_model_dir, pairs_dir, longer, "--max_steps", "6",
                                                  "--save_steps", "2", "--resume_from_checkpoint",
                                                  str(out / "checkpoint-2"))))
    state = json.loads((longer / "checkpoint-6" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4, 5, 6]
    assert result.stdout.count("'loss':") == 4
    assert read_marker(longer)["stage"] == "orpo"


def test_the_wrong_data_kind_is_one_line(tiny_model_dir, toy_data_dir, tmp_path):
    """SFT conversations are not preference pairs: one line naming the dataset, exit 2, nothing written."""
    sft = str(toy_data_dir / "sft")
    for script in ("orpo.py", "simpo.py"):
        bad = tmp_path / f"bad_{script}"
        result = run_script(script, *stage_args(tiny_model_dir, sft, bad))
        fails_with(result, sft, "not a dataset of preference pairs")
        assert "Traceback" not in result.stderr
        assert sum(line.startswith("error: ") for line in result.stderr.splitlines()) == 1
        assert not bad.exists()


@pytest.mark.slow
def test_simpo_with_lora_saves_an_adapter(tiny_model_dir, pairs_dir, tmp_path):
    out = tmp_path / "simpo_lora"
    ok(run_script("simpo.py", *stage_args(tiny_model_dir, pairs_dir, out, "--max_steps", "2", "--use_peft", "true",
                                          "--lora_r", "8")))
    assert (out / "adapter_config.json").exists()
    from llm_recipes.models import load_causal_lm

    load_causal_lm(str(out))
    assert read_marker(out)["stage"] == "simpo"
