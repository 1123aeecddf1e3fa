"""Bad input, across stages: one line naming the key, file or row, exit status 2, no traceback, and no output folder.

Each case runs a stage script as a user would (a recipe YAML, sometimes a command-line flag) and must stop before
any model loads, so a case costs about the Python start and imports.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_script

M, T, D, BAD = "{model}", "{tokenizer}", "{data}", "{bad}"  # placeholders, filled in per test

BASE = {
    "sft.py": {"model_name_or_path": M, "dataset_name": f"{D}/sft", "max_steps": 1},
    "dpo.py": {"model_name_or_path": M, "dataset_name": f"{D}/preferences", "max_steps": 1},
    "reward.py": {"model_name_or_path": M, "dataset_name": f"{D}/preferences", "max_steps": 1},
    "ppo.py": {"model_name_or_path": M, "dataset_name": f"{D}/rl_prompts", "reward_model_path": M, "max_steps": 1},
    "grpo.py": {"model_name_or_path": M, "dataset_name": f"{D}/rl_prompts", "reward_model_path": M, "max_steps": 1},
    "pretrain.py": {"tokenizer_name_or_path": T, "dataset_name": f"{D}/corpus", "model_size": "tiny", "max_steps": 1},
    "tokenizer.py": {"dataset_name": f"{D}/corpus", "vocab_size": 300},
    "evaluate.py": {"models": [M]},
    "export.py": {"model_name_or_path": M, "quantize": ["torchao-int8"]},
    "cai.py": {"model_name_or_path": M, "prompts": f"{D}/cai_demos"},
}
TOY_ALIGNMENT = "llm_recipes.toy.alignment_eval:ToyAlignment"
BAD_JINJA = "{% for m in messages %}{{ m['content'] }"

# (case id, script, recipe changes (None removes a key), extra command-line args, fragments of the error line)
CASES = [
    # models: missing, not a model, pickled, truncated, adapters without base or tokenizer
    ("model-missing", "sft.py", {"model_name_or_path": "runs/no/such/model"}, [], ["model_name_or_path", "runs/no/such/model", "no such folder"]),
    ("model-not-set", "sft.py", {"model_name_or_path": None}, [], ["model_name_or_path: not set"]),
    ("model-is-a-dataset", "sft.py", {"model_name_or_path": f"{D}/sft"}, [], ["model_name_or_path", "not a model folder (no config.json)"]),
    ("model-pickled", "reward.py", {"model_name_or_path": f"{BAD}/pickled"}, [], ["model_name_or_path", "only pickled weights (pytorch_model.bin)"]),
    ("model-truncated", "sft.py", {"model_name_or_path": f"{BAD}/truncated"}, [], ["model_name_or_path", "model.safetensors", "truncated or corrupt"]),
    ("model-without-tokenizer", "sft.py", {"model_name_or_path": f"{BAD}/weights_only"}, [], ["model_name_or_path", "no tokenizer in the folder"]),
    ("adapter-without-base", "dpo.py", {"model_name_or_path": f"{BAD}/adapter_no_base"}, [], ["adapter_no_base", "adapter without its base", "base_model_name_or_path"]),
    ("adapter-without-tokenizer", "dpo.py", {"model_name_or_path": f"{BAD}/adapter_no_tokenizer"}, [], ["model_name_or_path", "adapter_no_tokenizer", "no tokenizer"]),
    ("ppo-ref-pickled", "ppo.py", {"ref_model_path": f"{BAD}/pickled"}, [], ["ref_model_path", "only pickled weights"]),
    ("ppo-reward-pickled", "ppo.py", {"reward_model_path": f"{BAD}/pickled_rm"}, [], ["reward_model_path", "only pickled weights"]),
    ("alignment-eval-reward-pickled", "evaluate.py", {"benchmarks": {"toy_alignment": {"type": TOY_ALIGNMENT, "questions": f"{D}/alignment_heldout",
     "reward_model": f"{BAD}/pickled_rm"}}}, [], ["benchmarks.toy_alignment.reward_model", "only pickled weights"]),
    ("alignment-eval-reference-missing", "evaluate.py", {"benchmarks": {"toy_alignment": {"type": TOY_ALIGNMENT, "questions": f"{D}/alignment_heldout",
     "reference_model": "./no/such/sft"}}}, [], ["benchmarks.toy_alignment.reference_model", "no such folder"]),
    ("eval-model-truncated", "evaluate.py", {"models": [f"{BAD}/truncated"]}, [], ["models", "truncated or corrupt"]),
    ("evaluate-model-missing", "evaluate.py", {"models": ["/no/such/model"]}, [], ["models", "/no/such/model", "no such folder"]),
    ("export-model-pickled", "export.py", {"model_name_or_path": f"{BAD}/pickled"}, [], ["model_name_or_path", "only pickled weights"]),
    ("cai-model-not-a-model", "cai.py", {"model_name_or_path": T}, [], ["model_name_or_path", "not a model folder"]),
    # tokenizers
    ("tokenizer-missing", "pretrain.py", {"tokenizer_name_or_path": "./no/such/tokenizer"}, [], ["tokenizer_name_or_path", "no such folder"]),
    ("tokenizer-not-a-tokenizer", "sft.py", {"tokenizer_name_or_path": f"{D}/sft"}, [], ["tokenizer_name_or_path", "no tokenizer in the folder"]),
    ("tokenizer-not-set", "pretrain.py", {"tokenizer_name_or_path": None}, [], ["tokenizer_name_or_path: not set"]),
    # numbers
    ("negative-learning-rate", "sft.py", {"learning_rate": -1.0e-4}, [], ["{recipe}", "learning_rate", "must be > 0", "-0.0001"]),
    ("negative-learning-rate-cli", "dpo.py", {}, ["--learning_rate", "-0.5"], ["command line", "learning_rate", "must be > 0"]),
    ("batch-size-0", "sft.py", {"per_device_train_batch_size": 0}, [], ["{recipe}", "per_device_train_batch_size", "must be > 0"]),
    ("max-length-negative", "sft.py", {"max_length": -5}, [], ["{recipe}", "max_length", "must be > 0", "-5"]),
    ("grad-accumulation-0", "grpo.py", {"gradient_accumulation_steps": 0}, [], ["gradient_accumulation_steps", "must be > 0"]),
    ("epochs-0", "sft.py", {"num_train_epochs": 0, "max_steps": None}, [], ["num_train_epochs", "must be > 0"]),
    ("lora-dropout-1.5", "sft.py", {"lora_dropout": 1.5}, [], ["lora_dropout", "[0, 1)"]),
    ("ppo-temperature-0", "ppo.py", {"temperature": 0}, [], ["temperature", "must be > 0"]),
    ("ppo-ptx-text-without-data", "ppo.py", {"ptx_text_coef": 1.0}, [], ["ptx_text_coef", "set ptx_text_dataset_name"]),
    ("ppo-ptx-text-not-text", "ppo.py", {"ptx_text_coef": 1.0, "ptx_text_dataset_name": f"{D}/rl_prompts"}, [],
     ["ptx_text_dataset_name", "rl_prompts", "needs a 'text' column"]),
    ("ppo-ptx-text-sources-without-column", "ppo.py", {"ptx_text_coef": 1.0, "ptx_text_dataset_name": f"{BAD}/text_only.jsonl",
     "ptx_text_sources": ["encyclopedia"]}, [], ["ptx_text_sources", "text_only.jsonl", "no 'source' column"]),
    ("ppo-ptx-text-sources-none-match", "ppo.py", {"ptx_text_coef": 1.0, "ptx_text_dataset_name": f"{D}/corpus",
     "ptx_text_sources": ["forum"]}, [], ["ptx_text_sources", "no row", "['forum']"]),
    ("dpo-beta-negative", "dpo.py", {"beta": -0.1}, [], ["beta", "must be >= 0"]),
    ("block-size-0", "pretrain.py", {"block_size": 0}, [], ["block_size", "must be > 0"]),
    ("vocab-size-negative", "tokenizer.py", {"vocab_size": -1}, [], ["vocab_size", "must be > 0"]),
    ("cai-revision-rounds-0", "cai.py", {"revision_rounds": 0}, [], ["revision_rounds", "at least 1"]),
    # chat templates
    ("bad-jinja", "sft.py", {"chat_template": BAD_JINJA}, [], ["{recipe}", "chat_template", "not valid Jinja", "line 1"]),
    ("unknown-template-name", "dpo.py", {"chat_template": "chatmlx"}, [], ["chat_template", "'chatmlx' is neither a built-in"]),
    # data
    ("empty-jsonl", "sft.py", {"dataset_name": f"{BAD}/empty.jsonl"}, [], ["dataset_name", "empty.jsonl", "empty file"]),
    ("blank-jsonl", "pretrain.py", {"dataset_name": f"{BAD}/blank.jsonl"}, [], ["dataset_name", "blank.jsonl", "empty file"]),
    ("data-missing", "reward.py", {"dataset_name": "./no/such/pairs.jsonl"}, [], ["dataset_name", "no such file or folder"]),
    ("data-empty-folder", "tokenizer.py", {"dataset_name": f"{BAD}/empty_folder"}, [], ["dataset_name", "empty folder"]),
    ("data-not-set", "sft.py", {"dataset_name": None}, [], ["dataset_name: not set"]),
    ("mixture-path-missing", "sft.py", {"dataset_name": None, "dataset_mixture": {"datasets": [{"path": "./nope.jsonl"}]}}, [],
     ["dataset_mixture.datasets[0].path", "no such file or folder"]),
    ("questions-missing", "evaluate.py", {"benchmarks": {"toy_heldout_qa": {"type": "llm_recipes.toy.evaluate:HeldoutQuestions",
     "questions": "./no/such/questions"}}}, [], ["benchmarks.toy_heldout_qa.questions", "no such file or folder"]),
]


@pytest.fixture(scope="module")
def bad_inputs(tiny_model_dir, tmp_path_factory) -> Path:
    """Broken models, adapters and data files, each made the way it happens to users."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("bad_inputs")
    tokenizer_files = [p for p in tiny_model_dir.iterdir() if p.name.startswith(("tokenizer", "chat_template", "special"))]
    for name, model_cls in (("pickled", AutoModelForCausalLM), ("pickled_rm", AutoModelForSequenceClassification)):
        model_cls.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(out / name)
        torch.save(load_file(out / name / "model.safetensors"), out / name / "pytorch_model.bin")  # an old checkpoint
        (out / name / "model.safetensors").unlink()
        for path in tokenizer_files:
            shutil.copy(path, out / name)
    shutil.copytree(tiny_model_dir, out / "truncated")
    weights = out / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # a download cut short
    (out / "weights_only").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, out / "weights_only")
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    adapter.save_pretrained(out / "adapter_no_tokenizer")  # base: tiny_model_dir, which exists
    adapter.peft_config["default"].base_model_name_or_path = "/home/someone/models/base"  # the training machine's
    adapter.save_pretrained(out / "adapter_no_base")
    for path in tokenizer_files:
        shutil.copy(path, out / "adapter_no_base")
    (out / "empty.jsonl").write_text("")
    (out / "blank.jsonl").write_text("\n  \n\n")
    (out / "empty_folder").mkdir()
    (out / "text_only.jsonl").write_text('{"text": "The capital of Zorvia is Quelmar."}\n')
    return out


def _fill(value, places: dict[str, str]):
    if isinstance(value, str):
        for placeholder, path in places.items():
            value = value.replace(placeholder, path)
        return value
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, places) for k, v in value.items()}
    return value


@pytest.mark.slow
@pytest.mark.parametrize(("script", "changes", "cli", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(script, changes, cli, fragments, tiny_model_dir, tokenizer_dir,
                                                          toy_data_dir, bad_inputs, tmp_path):
    places = {M: str(tiny_model_dir), T: str(tokenizer_dir), D: str(toy_data_dir), BAD: str(bad_inputs)}
    out = tmp_path / "out"
    recipe_values = {**BASE[script], "output_dir": str(out)}
    for key, value in changes.items():
        if value is None:
            recipe_values.pop(key, None)
        else:
            recipe_values[key] = value
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_fill(recipe_values, places), sort_keys=False))
    proc = run_script(script, "--config", str(recipe), *cli, timeout=300)

    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    for fragment in _fill(fragments, {**places, "{recipe}": str(recipe)}):
        assert fragment in last, (fragment, last)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [last]
