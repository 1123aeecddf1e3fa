"""Public dataset formats in their published shapes (tests/public_formats.py), each read by the loader a stage
uses and, once per stage, end to end through the stage script: the rows it reports against the rows written."""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from pathlib import Path

import pytest

from conftest import run_script
from llm_recipes.data_config import DataArguments
from llm_recipes.data import load_stage_data
from llm_recipes.errors import DataError
from public_formats import BOOK, HH_ROWS, WRITERS, book_documents, write_alpaca, write_book, write_hh_rlhf

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
S = lambda text: {"role": "system", "content": text}  # noqa: E731
COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]


def folder_for(tmp_path: Path, name: str) -> Path:
    return tmp_path / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_format_loads_with_the_rows_written(name, tmp_path, caplog):
    sample = WRITERS[name](folder_for(tmp_path, name))
    kind = "preference" if sample.kind == "preference" else "sft"
    args = DataArguments(dataset_name=str(sample.path), **sample.options)
    with caplog.at_level(logging.INFO, logger="llm_recipes"):
        dsd = load_stage_data(args, kind=kind)
    assert len(dsd["train"]) == sample.usable
    assert len(dsd.get("test", [])) == sample.eval_rows
    expected_columns = {"preference": ["prompt", "chosen", "rejected"], "text": ["text"], "sft": ["messages"]}
    assert dsd["train"].column_names == expected_columns[sample.kind]
    if sample.rows > sample.usable:  # the dropped rows are counted, not silently lost
        assert f"dropped {sample.rows - sample.usable} malformed row(s) of {sample.rows}" in caplog.text
    assert f"{sample.usable} train rows" in caplog.text


def test_alpaca_rows_become_conversations(tmp_path):
    dsd = load_stage_data(DataArguments(dataset_name=str(write_alpaca(tmp_path).path)))
    assert dsd["train"][0]["messages"] == [U("Give three tips for staying healthy."),
                                           A("1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep enough.")]
    assert dsd["train"][1]["messages"][0] == U("Translate the sentence into French.\n\nThe cat sleeps.")


def test_sharegpt_and_openai_keep_the_system_turn(tmp_path):
    sharegpt = load_stage_data(DataArguments(dataset_name=str(WRITERS["sharegpt"](tmp_path).path)))["train"]
    assert sharegpt[0]["messages"] == [S("You are a helpful assistant."), U("What is 2 + 2?"), A("2 + 2 = 4.")]
    openai = load_stage_data(DataArguments(dataset_name=str(WRITERS["openai_messages.jsonl.zst"](tmp_path).path)))
    assert openai["train"][0]["messages"][0] == S("Marv is a sarcastic chatbot.")


def test_hh_rlhf_empty_final_reply_is_a_bad_row_by_number(tmp_path):
    sample = write_hh_rlhf(tmp_path)
    first_bad = next(i for i, row in enumerate(HH_ROWS, start=1)
                     if row["chosen"].endswith("Assistant:") or row["rejected"].endswith("Assistant:"))
    with pytest.raises(DataError, match=rf"train\.jsonl\.gz\[train\]: row {first_bad}: "):
        load_stage_data(DataArguments(dataset_name=str(sample.path)), kind="preference")
    pairs = load_stage_data(DataArguments(dataset_name=str(sample.path), on_bad_row="drop"), kind="preference")["train"]
    assert pairs[1]["prompt"] == [U("Hi"), A("Hello! How can I help?"), U("How do I boil an egg?")]
    assert pairs[1]["chosen"] == [A("Put it in boiling water for 8 minutes.")]
    assert all(turns[-1]["content"] for key in ("chosen", "rejected") for turns in pairs[key])  # none empty


def test_ultrafeedback_hub_layout_splits(tmp_path):
    sample = WRITERS["ultrafeedback_binarized"](tmp_path)
    dsd = load_stage_data(DataArguments(dataset_name=str(sample.path), **sample.options), kind="preference")
    assert dsd["test"][0] == {"prompt": [U("What colour is the sky on a clear day?")], "chosen": [A("Blue.")],
                              "rejected": [A("Green.")]}
    with pytest.raises(DataError, match=r"no split 'test' to evaluate on \(available: train_prefs, test_prefs\)"):
        load_stage_data(DataArguments(dataset_name=str(sample.path), dataset_train_split="train_prefs",
                                      dataset_test_split="test"), kind="preference")


@pytest.mark.parametrize("sample_by", ["paragraph", "line", "document"])
def test_plain_text_boundaries(tmp_path, sample_by):
    sample = write_book(tmp_path, ".gz", sample_by)
    train = load_stage_data(DataArguments(dataset_name=str(sample.path), text_sample_by=sample_by))["train"]
    assert [t.strip() for t in train["text"]] == [d.strip() for d in book_documents(BOOK, sample_by)]


# ----------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_sft_script_on_alpaca_json_with_a_held_out_share(tiny_model_dir, tmp_path):
    sample = write_alpaca(tmp_path)
    out = tmp_path / "sft"
    result = run_script("sft.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(sample.path),
                        "--dataset_test_split_size", "2", "--eval_strategy", "steps", "--eval_steps", "1",
                        "--max_steps", "1", "--per_device_train_batch_size", "2", "--max_length", "64",
                        "--output_dir", str(out), *COMMON)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{sample.rows - 2} train rows, 2 eval rows" in result.stdout
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] > 0


@pytest.mark.slow
def test_dpo_script_on_hh_rlhf_jsonl_gz(tiny_model_dir, tmp_path):
    sample = write_hh_rlhf(tmp_path)
    result = run_script("dpo.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(sample.path),
                        "--on_bad_row", "drop", "--max_steps", "1", "--per_device_train_batch_size", "2",
                        "--max_length", "96", "--output_dir", str(tmp_path / "dpo"), *COMMON)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"dropped {sample.rows - sample.usable} malformed row(s) of {sample.rows}" in output
    assert f"{sample.usable} train rows" in output
    failed = run_script("dpo.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(sample.path),
                        "--output_dir", str(tmp_path / "dpo_strict"), *COMMON)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "row 3" in failed.stderr and not (tmp_path / "dpo_strict").exists()


def tokenizer_script():
    """scripts/tokenizer.py as a module, to run its main() in this process (a subprocess costs ~10 s)."""
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("tokenizer_script", REPO_ROOT / "scripts" / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tokenizer_stage_on_a_txt_book(tmp_path):
    from llm_recipes.tokenizer_config import TokenizerArguments

    sample = write_book(tmp_path, "", "paragraph", copies=20)
    paragraphs = len([p for p in sample.path.read_text().split("\n\n") if p.strip()])
    out = tmp_path / "tok"
    tokenizer_script().main(TokenizerArguments(dataset_name=str(sample.path), text_sample_by="paragraph",
                                               vocab_size=300, output_dir=str(out)))
    marker = json.loads((out / "llm_recipes.json").read_text())
    held_out = min(500, paragraphs // 10)  # heldout_texts (500), at most a tenth of the texts
    assert (marker["train_texts"], marker["heldout_texts"]) == (paragraphs - held_out, held_out)


@pytest.mark.slow
def test_pretrain_script_on_a_txt_book_with_a_held_out_share(tokenizer_dir, tmp_path):
    sample = write_book(tmp_path, ".gz", "paragraph", copies=20)
    paragraphs = len([p for p in gzip.decompress(sample.path.read_bytes()).decode().split("\n\n") if p.strip()])
    out = tmp_path / "pretrain"
    result = run_script("pretrain.py", "--dataset_name", str(sample.path), "--text_sample_by", "paragraph",
                        "--dataset_test_split_size", "0.1", "--tokenizer_name_or_path", str(tokenizer_dir),
                        "--model_size", "tiny", "--block_size", "32", "--max_steps", "2",
                        "--per_device_train_batch_size", "2", "--output_dir", str(out), "--report_to", "none",
                        "--disable_tqdm", "true")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    held_out = math.ceil(paragraphs * 0.1)  # datasets rounds the test share up
    assert f"{paragraphs - held_out} train documents, {held_out} eval documents" in result.stdout
    metrics = json.loads((out / "llm_recipes.json").read_text())["metrics"]
    assert metrics["eval_loss_before"] > 0 and metrics["eval_loss_after"] > 0


# ----------------------------------------------------------------------------------------------- the user page
DOC = Path(__file__).resolve().parents[1] / "docs" / "bring_your_own_data.md"


def documented_commands() -> list[list[str]]:
    import shlex

    return [shlex.split(line)[2:] for line in DOC.read_text().splitlines()  # the data sections' commands
            if line.startswith("accelerate launch scripts/") and "--dataset_name data/" in line]


def test_every_documented_command_parses_and_reads_its_data(tmp_path):
    """Each `accelerate launch ... --dataset_name data/...` line of docs/bring_your_own_data.md, pointed at the samples:
    the recipe and flags parse, and the stage's loader reads the rows the sample holds."""
    import importlib.util

    from conftest import REPO_ROOT
    from llm_recipes.parser import parse_config
    from llm_recipes.pretrain import load_text_splits

    data_dir = tmp_path / "data"
    samples = {}
    for writer in WRITERS.values():
        sample = writer(data_dir)
        samples[str(sample.path.relative_to(tmp_path))] = sample
    for compression in ("", ".gz"):  # a longer book: a 5% share of it is at least one paragraph
        sample = write_book(data_dir, compression, copies=20)
        samples[str(sample.path.relative_to(tmp_path))] = sample
    commands = documented_commands()
    assert len(commands) >= 9
    read = []
    for command in commands:
        script, args = command[0], command[1:]
        where = args.index("--dataset_name") + 1
        sample = samples[args[where]]
        args[where] = str(tmp_path / args[where])
        spec = importlib.util.spec_from_file_location(Path(script).stem, REPO_ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        parsed = parse_config(module.CONFIG_CLASSES, args)
        if sample.kind == "text":  # the documents at the boundary the command sets
            text = (gzip.decompress if sample.path.suffix == ".gz" else lambda b: b)(sample.path.read_bytes()).decode()
            documents = len(book_documents(text, parsed[0].text_sample_by))
        if script.endswith("tokenizer.py"):
            rows, heldout = module.split_texts(parsed[0])
            held_out = min(parsed[0].heldout_texts, documents // 10)
            assert (len(list(rows)), len(heldout)) == (documents - held_out, held_out), command
        elif script.endswith("pretrain.py"):
            data_args, cfg = parsed
            train, test = load_text_splits(data_args, cfg)
            held_out = math.ceil(documents * data_args.dataset_test_split_size)  # datasets rounds the test share up
            assert (len(train), len(test)) == (documents - held_out, held_out), command
        else:
            kind = "sft" if script.endswith("sft.py") else "preference"
            dsd = load_stage_data(parsed[0], kind=kind)
            assert len(dsd["train"]) == sample.usable, command
            assert len(dsd.get("test", [])) == min(sample.eval_rows, parsed[0].eval_max_samples or sample.eval_rows)
        read.append(args[where])
    assert len(read) == len(commands)  # every command was checked against its sample
