"""Tokenizer stage: byte-level BPE training on the toy corpus, reload in the Hub format, held-out bytes per
token, streaming, and clear errors for bad data."""

from __future__ import annotations

import importlib.util
import json

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from conftest import REPO_ROOT, run_script
from llm_recipes.evaluation.scoring import load_rows
from llm_recipes.tokenizer_config import TokenizerArguments
from llm_recipes.errors import DataError


def tokenizer_script():
    """scripts/tokenizer.py as a module, to run its main() in this process (a subprocess costs ~10 s)."""
    spec = importlib.util.spec_from_file_location("tokenizer_script", REPO_ROOT / "scripts" / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_save_and_reload(toy_data_dir, tmp_path):
    out = tmp_path / "tok"
    result = run_script("tokenizer.py", "--dataset_name", str(toy_data_dir / "corpus"), "--vocab_size", "400",
                        "--extra_special_tokens", "<|tool|>", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    marker = json.loads((out / "llm_recipes.json").read_text())
    n_validation = len(load_rows(str(toy_data_dir / "corpus"), split="validation"))
    assert marker["vocab_size"] == 400 and marker["heldout_texts"] == n_validation  # the corpus' validation split
    assert 2.0 < marker["bytes_per_token"] < 8.0
    assert f"bytes/token on {n_validation} held-out texts" in result.stdout
    assert "vocab_size" in (out / "README.md").read_text()

    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 400
    for special in ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<|tool|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    text = "Zorqua's capital: Ülmar — 1024 people ☃"  # unseen bytes still encode (byte-level, no <unk>)
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_streaming_and_held_out_from_train(toy_data_dir, tmp_path, caplog):
    """Without a held-out split, texts are kept out of training for the report; streaming gives the same."""
    script, outs = tokenizer_script(), {}
    for streaming in (False, True):
        out = tmp_path / f"tok_{streaming}"
        script.main(TokenizerArguments(dataset_name=str(toy_data_dir / "corpus"), vocab_size=300,
                                       dataset_test_split="none", streaming=streaming, output_dir=str(out)))
        outs[streaming] = json.loads((out / "llm_recipes.json").read_text())
    n_train = len(load_rows(str(toy_data_dir / "corpus"), split="train"))
    n_heldout = min(TokenizerArguments().heldout_texts, n_train // 10)  # at most a tenth of train is kept out
    assert outs[False]["train_texts"] == n_train - n_heldout and outs[False]["heldout_texts"] == n_heldout
    assert outs[True]["train_texts"] == outs[False]["train_texts"]
    assert outs[True]["bytes_per_token"] == pytest.approx(outs[False]["bytes_per_token"])


def test_bad_datasets_fail_clearly(tmp_path):
    script = tokenizer_script()
    DatasetDict({"train": Dataset.from_dict({"content": ["some text"]})}).save_to_disk(tmp_path / "nocol")
    DatasetDict({"train": Dataset.from_dict({"text": []})}).save_to_disk(tmp_path / "empty")
    with pytest.raises(DataError, match=r"no text column 'text'.*columns seen: \['content'\]"):
        script.main(TokenizerArguments(dataset_name=str(tmp_path / "nocol"), output_dir=str(tmp_path / "out")))
    with pytest.raises(DataError, match="empty"):
        script.main(TokenizerArguments(dataset_name=str(tmp_path / "empty"), output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    # from the command line: one line naming the folder and the column, exit status 2
    result = run_script("tokenizer.py", "--dataset_name", str(tmp_path / "nocol"), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and str(tmp_path / "nocol") in message and "'content'" in message
