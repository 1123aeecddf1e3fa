"""Shared fixtures: a small toy world, a tokenizer trained on it and a tiny random model, built once per
session on local disk (the Hub is never contacted in tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory) -> Path:
    """The toy world's datasets (40 countries) in the Hub format: corpus, sft, heldout_qa."""
    from llm_recipes.toy import ToyWorld
    from llm_recipes.toy.datasets import write_toy_datasets

    out = tmp_path_factory.mktemp("toy_data")
    write_toy_datasets(ToyWorld(seed=0, n_entities=40), out, eval_fraction=0.1)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(toy_data_dir, tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (vocabulary 512) trained on the toy corpus, with the ChatML template."""
    from datasets import load_dataset

    from llm_recipes.tokenizer import train_bpe_tokenizer

    corpus = load_dataset(str(toy_data_dir / "corpus"), split="train")
    tokenizer = train_bpe_tokenizer(corpus["text"], vocab_size=512, model_max_length=256)
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) for that tokenizer, saved with it."""
    from transformers import AutoTokenizer

    from llm_recipes.models import build_model, get_architecture

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_model(get_architecture("tiny"), tokenizer, seed=0)
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out



@pytest.fixture(scope="session")
def tiny_reward_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A reward model (sequence classifier, one label) on the tiny model, its head randomly initialised (seed 0),
    saved with the tokenizer (ChatML template)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_reward_model")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

def run_script(script: str, *args: str, timeout: int = 600, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `scripts/<script>` as a user would (optionally under a launcher), from the repository root."""
    command = [*(launcher or [sys.executable]), str(REPO_ROOT / "scripts" / script), *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
