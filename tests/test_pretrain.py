"""Pretraining: packing without attention across documents, exact resume after a kill, Chinchilla sizing,
clear errors for bad data. Tiny models on the toy corpus, on CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from conftest import REPO_ROOT, run_script

BLOCK = 64


def pretrain_args(toy_data_dir: Path, tokenizer_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(toy_data_dir / "corpus"), "--dataset_test_split", "validation",
        "--tokenizer_name_or_path", str(tokenizer_dir), "--model_size", "tiny", "--block_size", str(BLOCK),
        "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4", "--learning_rate", "3e-3",
        "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
        *extra,
    ]


# ----------------------------------------------------------------------------------------------- packing
def test_pack_blocks_positions_restart_at_documents_and_rows():
    from llm_recipes.pretrain import IGNORE_INDEX, pack_blocks

    out = pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)  # 9 tokens -> 2 rows, 1 dropped
    assert out["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert out["position_ids"] == [[0, 1, 2, 0], [0, 0, 1, 2]]  # doc [4,5] continues into row 2 at position 0
    padded = pack_blocks([[1, 2, 3], [4, 5]], block_size=4, pad_id=0)  # evaluation keeps the remainder
    assert padded["input_ids"] == [[1, 2, 3, 4], [5, 0, 0, 0]]
    assert padded["labels"][1] == [5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert padded["position_ids"][1] == [0, 0, 1, 2]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_document_has_the_same_logits_as_alone(tokenizer_dir, toy_data_dir, attn):
    """A document inside a packed block sees nothing of its neighbours: its logits equal those of the
    document run alone (and, as a control, they differ when the block is run as one causal sequence)."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    from llm_recipes.models import build_model, get_architecture
    from llm_recipes.pretrain import PackedCollator, separator_id, tokenize_and_pack

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_model(get_architecture("tiny"), tokenizer, attn_implementation=attn, seed=0).eval()
    texts = load_dataset(str(toy_data_dir / "corpus"), split="train")["text"][:12]
    blocks = tokenize_and_pack(Dataset.from_dict({"text": texts}), tokenizer, block_size=128)
    batch = PackedCollator()([blocks[0], blocks[1]])
    sep = separator_id(tokenizer)
    # use_cache=False as under Trainer (args.use_cache is False): transformers skips the packed-sequence mask
    # whenever a KV cache exists, and LlamaModel creates one by default (measured: 0.49 max logit difference)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        flat = PackedCollator(flatten=True)([blocks[0], blocks[1]])  # the layout fed to flash-attn varlen
        flattened = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits
        flattened = flattened.view_as(packed)
        plain = model(input_ids=batch["input_ids"], use_cache=False).logits  # no document masking
    checked = 0
    for row in range(2):
        ids, pos = batch["input_ids"][row], batch["position_ids"][row]
        starts = (pos == 0).nonzero().flatten().tolist() + [len(ids)]
        for start, end in zip(starts[:-1], starts[1:]):
            if start == 0 or ids[end - 1] != sep:  # a document whole inside the block, not a cut-off piece
                continue
            with torch.no_grad():
                alone = model(input_ids=ids[start:end].unsqueeze(0)).logits[0]
            assert (packed[row, start:end] - alone).abs().max() < 1e-4
            assert (flattened[row, start:end] - alone).abs().max() < 1e-4
            assert (plain[row, start:end] - alone).abs().max() > 1e-3  # the test can tell leakage apart
            checked += 1
    assert checked >= 2



def test_transformers_flattening_collator_numbers_positions_per_row_not_per_document(tokenizer_dir, toy_data_dir):
    """Why pretraining keeps its own packing: transformers' DataCollatorWithFlattening restarts position_ids at
    each example (row), whatever positions the example carries, so fed the fixed-size blocks its documents attend
    to their neighbours in the block; fed whole documents it makes rows of varying length (no fixed tokens per
    step). When this test fails, the library's collator keeps the blocks' positions: use it."""
    from transformers import AutoTokenizer, DataCollatorWithFlattening

    from llm_recipes.pretrain import PackedCollator, tokenize_and_pack

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = [f"Document {i} says something short." for i in range(12)]
    blocks = tokenize_and_pack(Dataset.from_dict({"text": texts}), tokenizer, block_size=BLOCK)
    rows = [blocks[0], blocks[1]]
    ours = PackedCollator(flatten=True)(rows)
    library = DataCollatorWithFlattening(return_tensors="pt")(rows)
    assert library["input_ids"].tolist() == ours["input_ids"].tolist()
    assert library["position_ids"].tolist() == [list(range(BLOCK)) * 2]  # one document per row
    assert (ours["position_ids"] == 0).sum() > 2  # the blocks hold several documents each


# ----------------------------------------------------------------------------------------------- sizing
def test_chinchilla_sizing_follows_the_rule():
    from llm_recipes.sizing import chinchilla, gpu_hours_to_flops, main

    p = chinchilla(compute_flops=5.76e23)  # Chinchilla itself: 70B parameters, 1.4T tokens
    assert p.parameters == pytest.approx(69.3e9, rel=0.01)
    assert p.tokens == pytest.approx(20 * p.parameters)
    assert 6 * p.parameters * p.tokens == pytest.approx(5.76e23)
    q = chinchilla(tokens=2.5e9)
    assert q.parameters == pytest.approx(125e6) and q.compute_flops == pytest.approx(6 * 125e6 * 2.5e9)
    assert q.nearest_size == "125m"
    flops, line = gpu_hours_to_flops(1000, "h100", mfu=0.4)
    assert flops == pytest.approx(1000 * 3600 * 989e12 * 0.4) and "datasheet" in line
    proposal = main(["--gpu_hours", "1000", "--gpu", "H100"])
    assert proposal.parameters == pytest.approx(math.sqrt(flops / 120))
    assert any("2203.15556" in line for line in proposal.reasoning)


def test_parameter_count_matches_the_built_model(tokenizer_dir):
    from transformers import AutoTokenizer

    from llm_recipes.models import build_model, get_architecture
    from llm_recipes.sizing import count_parameters

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    arch = get_architecture("toy")
    assert count_parameters(arch, len(tokenizer))[0] == build_model(arch, tokenizer).num_parameters()


# ----------------------------------------------------------------------------------------------- bad data
def test_bad_datasets_fail_clearly(tmp_path, tokenizer_dir):
    from llm_recipes.data_config import DataArguments
    from llm_recipes.pretrain_config import PretrainArguments
    from llm_recipes.errors import DataError
    from llm_recipes.pretrain import load_text_splits

    cfg = PretrainArguments(output_dir=str(tmp_path / "out"), use_cpu=True)
    DatasetDict({"train": Dataset.from_dict({"content": ["a b c"]})}).save_to_disk(tmp_path / "nocol")
    DatasetDict({"train": Dataset.from_dict({"text": []})}).save_to_disk(tmp_path / "empty")
    with pytest.raises(DataError, match=r"no text column 'text'.*columns seen: \['content'\]"):
        load_text_splits(DataArguments(dataset_name=str(tmp_path / "nocol")), cfg)
    with pytest.raises(DataError, match="empty"):
        load_text_splits(DataArguments(dataset_name=str(tmp_path / "empty")), cfg)
    cfg.text_column = "content"  # the right column name makes the same data usable
    train, _ = load_text_splits(DataArguments(dataset_name=str(tmp_path / "nocol"), dataset_test_split="none"), cfg)
    assert train.column_names == ["text"]

    result = run_script("pretrain.py", "--dataset_name", str(tmp_path / "nocol"), "--tokenizer_name_or_path",
                        str(tokenizer_dir), "--model_size", "tiny", "--output_dir", str(tmp_path / "out"),
                        "--max_steps", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "no text column 'text'" in result.stderr


# ----------------------------------------------------------------------------------------------- train + resume
KILL_AFTER_SAVE = """
import os, runpy, signal, sys
from llm_recipes import pretrain
step = pretrain.PretrainTrainer.training_step
def training_step(self, *args, **kwargs):
    if self.state.global_step == {kill_at}:  # killed mid-way between two checkpoints
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)
pretrain.PretrainTrainer.training_step = training_step
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def step_losses(output_dir: Path) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


@pytest.mark.slow
def test_pretrain_runs_and_resumes_exactly_after_a_kill(toy_data_dir, tokenizer_dir, tmp_path):
    """An uninterrupted run, and a run SIGKILLed at step 10 (last checkpoint: 8) then restarted: the restarted
    run continues from step 8 with the same data order and the same losses, step for step."""
    common = ["--max_steps", "16", "--save_steps", "4", "--logging_steps", "1", "--lr_scheduler_type",
              "warmup_stable_decay", "--lr_scheduler_kwargs", '{"num_decay_steps": 4}']
    straight = tmp_path / "straight"
    result = run_script("pretrain.py", *pretrain_args(toy_data_dir, tokenizer_dir, straight, *common))
    assert result.returncode == 0, result.stderr[-3000:]
    marker = json.loads((straight / "llm_recipes.json").read_text())
    metrics = marker["metrics"]
    assert metrics["tokens_seen"] == 16 * 2 * BLOCK and metrics["compute_flops"] > 0
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert "validation loss before pretraining" in result.stdout
    assert "tokens_per_sec" in result.stdout and "mfu" in result.stdout
    card = (straight / "README.md").read_text()
    assert "tokens_seen" in card and "compute_flops" in card and "eval_loss_before" in card
    # transformers' own card (Trainer.create_model_card), extended: its hyperparameters and versions are kept
    assert "- learning_rate: 0.003" in card and "- training_steps: 16" in card and "### Framework versions" in card
    assert "fine-tuned version of" not in card  # its opening line, which names no base model here, is replaced

    killed = tmp_path / "killed"
    argv = ["scripts/pretrain.py", *pretrain_args(toy_data_dir, tokenizer_dir, killed, *common)]
    code = KILL_AFTER_SAVE.format(kill_at=10, argv=argv, script=str(REPO_ROOT / "scripts" / "pretrain.py"))
    first = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == -9, first.stderr[-3000:]
    assert not (killed / "llm_recipes.json").exists()
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]

    again = run_script("pretrain.py", *argv[1:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from checkpoint" in again.stdout and "checkpoint-8" in again.stdout
    reference, resumed = step_losses(straight), step_losses(killed)
    assert sorted(resumed) == list(range(1, 17))
    for step in range(9, 17):  # the steps trained after the resume
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step
