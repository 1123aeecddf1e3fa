"""scripts/sft.py as a user runs it: a recipe YAML, the tiny model, the toy SFT data, a few steps each.

Full fine-tuning, LoRA, QLoRA (4-bit on CPU), packing, assistant-only loss, evaluation, the model card and
marker, resume after a SIGKILL, and a real 2-process (gloo) run under `accelerate launch`.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT

SECRET = "hf_secret_test"
_RUNS: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}


# ----------------------------------------------------------------------------------------------- helpers
def sft_env(base_tmp: Path) -> dict[str, str]:
    """The environment of a stage run: offline, one thread, a token that must never reach the outputs, and a
    datasets cache of the session's own (the shared ~/.cache mixes up local folders that share a name)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_TOKEN=SECRET,
        HF_DATASETS_CACHE=str(base_tmp / "hf_datasets_cache"),
    )
    return env


def write_recipe(folder: Path, name: str, model_dir: Path, data_dir: Path, **overrides) -> Path:
    """A small SFT recipe (tiny model, toy data, a few steps) written where a user would keep it."""
    recipe = {
        "model_name_or_path": str(model_dir),
        "dtype": "float32",
        "dataset_name": str(data_dir / "sft"),
        "output_dir": str(folder / name),
        "max_length": 96,
        "assistant_only_loss": True,
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "learning_rate": 1.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "seed": 0,
    }
    recipe.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(f"# test recipe: {name}\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path


def sft_command(recipe: Path, launcher: list[str] | None = None) -> list[str]:
    return [*(launcher or [sys.executable]), str(REPO_ROOT / "scripts" / "sft.py"), "--config", str(recipe)]


def run_sft(recipe: Path, env: dict, launcher: list[str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(sft_command(recipe, launcher), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"sft.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def output_of(recipe: Path) -> Path:
    return Path(yaml.safe_load(recipe.read_text())["output_dir"])


def full_sft_run(tmp_path_factory, tiny_model_dir: Path, toy_data_dir: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Full fine-tuning long enough (200 steps, a few seconds) for the tiny model to learn the answer format
    and to end its turn with <|im_end|>; with an eval split. Run once per session, shared with
    test_chat_templates."""
    if "full" not in _RUNS:
        folder = tmp_path_factory.mktemp("sft_full")
        recipe = write_recipe(
            folder, "full", tiny_model_dir, toy_data_dir,
            max_steps=200, per_device_train_batch_size=16, learning_rate=3.0e-3, warmup_steps=5,
            lr_scheduler_type="cosine", logging_steps=10, eval_strategy="steps", eval_steps=100,
            per_device_eval_batch_size=16, eval_max_samples=32,
        )
        _RUNS["full"] = (recipe, run_sft(recipe, sft_env(tmp_path_factory.getbasetemp())))
    recipe, proc = _RUNS["full"]
    return recipe, output_of(recipe), proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir, toy_data_dir):
    return full_sft_run(tmp_path_factory, tiny_model_dir, toy_data_dir)


@pytest.fixture
def env(tmp_path_factory):
    return sft_env(tmp_path_factory.getbasetemp())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_no_secret(folder: Path) -> None:
    leaks = [p for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the token appears in {leaks}"


# ----------------------------------------------------------------------------------------------- full
def test_full_fine_tuning_card_marker_and_no_token(full_run, tiny_model_dir, toy_data_dir):
    from safetensors.torch import load_file

    recipe, out, proc = full_run
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists() and not list(out.glob("pytorch_model*.bin"))
    trained, base = load_file(out / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert set(trained) == set(base)
    assert any(not torch.equal(trained[k], base[k]) for k in base)  # every weight was trainable

    marker = read_json(out / "llm_recipes.json")
    assert marker["stage"] == "sft" and marker["base_model"] == str(tiny_model_dir)
    assert marker["datasets"] == [str(toy_data_dir / "sft")]
    metrics = marker["metrics"]
    assert metrics["train_loss"] < 4.0  # from ~6.2 = ln(512) at initialisation
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] < 3.0
    assert read_json(out / "eval_results.json")["eval_loss"] == pytest.approx(metrics["eval_loss"])

    card = (out / "README.md").read_text()
    assert str(tiny_model_dir) in card and str(toy_data_dir / "sft") in card
    assert recipe.read_text().strip() in card  # the recipe itself, verbatim
    assert re.search(r"\| train_loss \| [0-9.]+ \|", card) and re.search(r"\| eval_loss \| [0-9.]+ \|", card)
    assert f"{metrics['eval_loss']:.4g}" in card
    assert "world size 1" in proc.stdout
    assert_no_secret(out)


def test_eval_strategy_without_an_eval_split_is_a_one_line_error(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = write_recipe(tmp_path, "noeval", tiny_model_dir, toy_data_dir, eval_strategy="steps", dataset_test_split="validation")
    proc = subprocess.run(sft_command(recipe), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {toy_data_dir / 'sft'}: no split 'validation' to evaluate on (available: train, test); set "
        "dataset_test_split to one of them, or to 'none' (dataset_test_split_size holds out a share of train)"
    )
    assert "Traceback" not in proc.stderr and not output_of(recipe).exists()


# ----------------------------------------------------------------------------------------------- LoRA / QLoRA
def check_adapter(out: Path, base_dir: Path, r: int = 16) -> None:
    from peft import AutoPeftModelForCausalLM, PeftConfig

    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter = read_json(out / "adapter_config.json")
    assert adapter["base_model_name_or_path"] == str(base_dir)  # the base a later stage must load
    assert adapter["peft_type"] == "LORA" and adapter["r"] == r
    targets = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert PeftConfig.from_pretrained(out).base_model_name_or_path == str(base_dir)
    model = AutoPeftModelForCausalLM.from_pretrained(out)  # the folder alone is enough to load the model
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(ids).logits).all()
    marker = read_json(out / "llm_recipes.json")
    assert marker["base_model"] == str(base_dir) and math.isfinite(marker["metrics"]["train_loss"])


def test_lora(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = write_recipe(tmp_path, "lora", tiny_model_dir, toy_data_dir, use_peft=True, lora_r=8, lora_alpha=16)
    run_sft(recipe, env)
    check_adapter(output_of(recipe), tiny_model_dir, r=8)
    assert_no_secret(output_of(recipe))


def test_qlora_4bit_on_cpu(tmp_path, env, tiny_model_dir, toy_data_dir):
    """4-bit QLoRA trains on CPU with the CPU defaults: dtype float32 (bnb's compute dtype follows it) and bf16
    mixed precision off. (dtype bfloat16 also trains here; unlike TRL's RewardTrainer, SFT needs no bf16=True.)"""
    recipe = write_recipe(tmp_path, "qlora", tiny_model_dir, toy_data_dir, use_peft=True, load_in_4bit=True, max_steps=4)
    proc = run_sft(recipe, env)
    assert "dtype torch.float32" in proc.stdout
    check_adapter(output_of(recipe), tiny_model_dir)


# ----------------------------------------------------------------------------------------------- packing
def test_packing_run_is_finite(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = write_recipe(tmp_path, "packed", tiny_model_dir, toy_data_dir, packing=True, max_length=256, per_device_train_batch_size=2)
    run_sft(recipe, env)
    loss = read_json(output_of(recipe) / "train_results.json")["train_loss"]
    assert math.isfinite(loss) and 0 < loss < 10


def sft_trainer(tiny_model_dir, toy_data_dir, **config):
    """An in-process SFTTrainer on 16 toy conversations (to look at what its collator feeds the model)."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    files = {"train": str(toy_data_dir / "sft" / "data" / "train-00000-of-00001.parquet")}
    dataset = load_dataset("parquet", data_files=files, split="train").select(range(16))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = SFTConfig(
        output_dir=str(toy_data_dir.parent / "unused"), use_cpu=True, report_to="none", per_device_train_batch_size=4,
        max_length=256, **config,
    )
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer), tokenizer, model


def test_packing_is_padding_free_without_cross_document_attention(tiny_model_dir, toy_data_dir):
    trainer, tokenizer, model = sft_trainer(tiny_model_dir, toy_data_dir, packing=True, assistant_only_loss=True)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, positions = batch["input_ids"], batch["position_ids"]
    assert ids.shape[0] == 1 and "attention_mask" not in batch  # one row, no padding
    assert (ids != tokenizer.pad_token_id).all()
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    assert len(starts) >= 4 and starts[0] == 0  # several documents, positions restart at each
    bounds = [*starts, ids.shape[1]]
    for s, e in zip(bounds, bounds[1:]):
        assert positions[0, s:e].tolist() == list(range(e - s))
        assert tokenizer.decode(ids[0, s:e]).startswith("<|im_start|>user")

    model.eval()
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        for s, e in zip(bounds, bounds[1:]):
            alone = model(input_ids=ids[:, s:e]).logits[0]
            assert torch.allclose(packed[s:e], alone, atol=1e-4), "a packed document attends to its neighbours"


# ----------------------------------------------------------------------------------------------- assistant-only
def test_assistant_only_loss_masks_everything_but_the_answers(tiny_model_dir, toy_data_dir):
    trainer, tokenizer, _ = sft_trainer(tiny_model_dir, toy_data_dir, assistant_only_loss=True)
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        ids, labels = ids[mask.bool()], labels[mask.bool()]
        trained = tokenizer.decode(ids[labels != -100])
        masked = tokenizer.decode(ids[labels == -100])
        assert re.fullmatch(r"[^<>]+\.<\|im_end\|>", trained), trained  # one answer, ending its turn
        # the prompt, and the newline the template puts after <|im_end|>, are not trained
        assert masked.startswith("<|im_start|>user\n") and masked.endswith("<|im_end|>\n<|im_start|>assistant\n\n")
        assert "<|im_start|>" not in trained and "user" not in trained
        assert (labels[labels != -100] == ids[labels != -100]).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding is never trained

    everything, _, _ = sft_trainer(tiny_model_dir, toy_data_dir, assistant_only_loss=False)
    all_batch = next(iter(everything.get_train_dataloader()))
    assert (all_batch["labels"] != -100).sum() > (batch["labels"] != -100).sum()


# ----------------------------------------------------------------------------------------------- resume
def complete_checkpoints(out: Path) -> list[int]:
    """Steps of the checkpoints whose trainer_state.json (written last) is whole; the file exists from the
    moment it is opened, so a kill can leave it empty or cut."""
    steps = []
    for state in out.glob("checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text())
        except ValueError:
            continue
        steps.append(int(state.parent.name.split("-")[1]))
    return sorted(steps)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, env, tiny_model_dir, toy_data_dir):
    max_steps, save_steps = 60, 5
    recipe = write_recipe(
        tmp_path, "resumed", tiny_model_dir, toy_data_dir, max_steps=max_steps, save_strategy="steps",
        save_steps=save_steps, per_device_train_batch_size=4,
    )
    out = output_of(recipe)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(sft_command(recipe), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while not complete_checkpoints(out):
            assert first.poll() is None, "the run ended before its first checkpoint:\n" + (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=60)
        log.close()
    assert first.returncode == -signal.SIGKILL
    assert not (out / "llm_recipes.json").exists()  # a killed run never looks finished

    n = complete_checkpoints(out)[-1]
    assert n < max_steps
    # as if the kill had also cut the next checkpoint short: trainer_state.json is written last and half
    partial = out / f"checkpoint-{n + save_steps}"
    partial.mkdir(exist_ok=True)
    (partial / "trainer_state.json").write_text('{"global_step": ')

    second = run_sft(recipe, env)
    lines = [line for line in second.stdout.splitlines() if "llm_recipes" in line]
    assert f"resuming from checkpoint {out / f'checkpoint-{n}'}" in second.stdout, lines
    assert f"checkpoint-{n + save_steps} is incomplete" in second.stdout
    # the second run trains only the remaining steps: one loss line per logged step, the first after step n
    assert second.stdout.count("'loss':") == max_steps - n
    final = read_json(out / f"checkpoint-{max_steps}" / "trainer_state.json")
    assert final["global_step"] == max_steps
    steps = [entry["step"] for entry in final["log_history"] if "loss" in entry]
    assert steps == list(range(1, max_steps + 1))  # run 1 up to n (from the checkpoint), then n+1.. (run 2)
    assert read_json(out / f"checkpoint-{n + save_steps}" / "trainer_state.json")["global_step"] == n + save_steps
    assert read_json(out / "llm_recipes.json")["stage"] == "sft"


# ----------------------------------------------------------------------------------------------- 2 processes
@pytest.mark.slow
def test_two_process_cpu_run(tmp_path, env, tiny_model_dir, toy_data_dir):
    steps, batch = 6, 4
    recipe = write_recipe(tmp_path, "ddp", tiny_model_dir, toy_data_dir, max_steps=steps, per_device_train_batch_size=batch)
    launcher = ["accelerate", "launch", "--config_file", str(REPO_ROOT / "accelerate_configs" / "cpu_2proc.yaml")]
    proc = run_sft(recipe, env, launcher=launcher)
    assert "world size 2 (distributed), process rank 0" in proc.stdout, proc.stdout[-3000:]
    out = output_of(recipe)
    # one model, saved once: no per-rank copies
    assert [p.name for p in out.glob("*.safetensors")] == ["model.safetensors"]
    assert read_json(out / "llm_recipes.json")["stage"] == "sft"
    # the global batch is 2 x 4: the epoch covered is twice that of one process with the same steps
    n_train = read_json(out / "train_results.json")
    from datasets import load_dataset

    rows = load_dataset(
        "parquet", data_files=str(toy_data_dir / "sft" / "data" / "train-00000-of-00001.parquet"), split="train"
    ).num_rows
    assert n_train["epoch"] == pytest.approx(steps * batch * 2 / rows, rel=0.05)
    assert "Traceback" not in proc.stderr and "SIGABRT" not in proc.stderr
