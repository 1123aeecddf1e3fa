"""Tiny samples of public dataset formats, each in the exact shape its publisher ships, for tests and benchmarks.

Every `write_*` function writes one sample under `folder` and returns a `Sample`: what to pass as
`dataset_name` (plus the stage options the format needs), how many rows were written, and how many a stage
can use. The usable counts come from the rows as written here (which rows are broken on purpose, how a text
splits at blank lines), never from `llm_recipes.data`, so they can check what the loader reports.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import zstandard


@dataclass
class Sample:
    """One written sample: `path` is the file or folder a user passes as `dataset_name`."""

    name: str
    path: Path
    kind: str  # what a stage reads it as: sft, preference or text
    rows: int  # rows (documents, for text) in the train split as written
    usable: int  # train rows a stage keeps (malformed ones dropped with on_bad_row: drop)
    eval_rows: int = 0  # rows of the held-out split, when the sample has one
    options: dict = field(default_factory=dict)  # DataArguments fields the sample needs (splits, on_bad_row, ...)


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _write(path: Path, payload: bytes) -> Path:
    """Write `payload`, compressed as the file name says (.gz, .bz2, .zst)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    elif path.suffix == ".bz2":
        payload = bz2.compress(payload)
    elif path.suffix == ".zst":
        payload = zstandard.ZstdCompressor().compress(payload)
    path.write_bytes(payload)
    return path


# ----------------------------------------------------------------------------------------------- SFT
ALPACA_ROWS = [  # tatsu-lab/stanford_alpaca alpaca_data.json: a JSON array; `input` is "" when unused
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep enough."},
    {"instruction": "Translate the sentence into French.", "input": "The cat sleeps.", "output": "Le chat dort."},
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
    {"instruction": "Add the two numbers.", "input": "17 and 25", "output": "42"},
    {"instruction": "Name a primary colour.", "input": "", "output": "Blue."},
    {"instruction": "Summarise the text in one sentence.", "input": "The meeting moved from Monday to Friday "
     "because the room was booked.", "output": "The meeting moved to Friday as the room was taken."},
]


def write_alpaca(folder: Path, compression: str = "") -> Sample:
    """alpaca_data.json (a JSON array), optionally compressed (`.gz`)."""
    path = _write(Path(folder) / f"alpaca_data.json{compression}", json.dumps(ALPACA_ROWS, indent=4).encode())
    return Sample(f"alpaca{compression}", path, "sft", len(ALPACA_ROWS), len(ALPACA_ROWS))


def write_alpaca_csv_bz2(folder: Path) -> Sample:
    """The alpaca rows as a bzip2-compressed CSV (instruction,input,output header, quoted multi-line cells)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["instruction", "input", "output"])
    writer.writeheader()
    writer.writerows(ALPACA_ROWS)
    path = _write(Path(folder) / "alpaca.csv.bz2", buffer.getvalue().encode())
    return Sample("alpaca.csv.bz2", path, "sft", len(ALPACA_ROWS), len(ALPACA_ROWS))


SHAREGPT_ROWS = [  # ShareGPT / SlimOrca: {"id", "conversations": [{"from": system|human|gpt, "value"}]}
    {"id": "a1", "conversations": [
        {"from": "system", "value": "You are a helpful assistant."},
        {"from": "human", "value": "What is 2 + 2?"},
        {"from": "gpt", "value": "2 + 2 = 4."}]},
    {"id": "a2", "conversations": [
        {"from": "human", "value": "Name a planet."},
        {"from": "gpt", "value": "Mars."},
        {"from": "human", "value": "Another one?"},
        {"from": "gpt", "value": "Jupiter."}]},
    {"id": "a3", "conversations": [
        {"from": "system", "value": "Answer in one word."},
        {"from": "human", "value": "Opposite of hot?"},
        {"from": "gpt", "value": "Cold."}]},
    {"id": "a4", "conversations": [
        {"from": "human", "value": "Spell 'cat' backwards."},
        {"from": "gpt", "value": "tac"}]},
]


def write_sharegpt(folder: Path) -> Sample:
    """ShareGPT as a JSON array file (the ShareGPT_V3 / SlimOrca layout), a system turn in some rows."""
    path = _write(Path(folder) / "sharegpt.json", json.dumps(SHAREGPT_ROWS, indent=2).encode())
    return Sample("sharegpt", path, "sft", len(SHAREGPT_ROWS), len(SHAREGPT_ROWS))


OPENAI_ROWS = [  # OpenAI chat fine-tuning JSONL: {"messages": [{"role": system|user|assistant, "content"}]}
    {"messages": [{"role": "system", "content": "Marv is a sarcastic chatbot."},
                  {"role": "user", "content": "What's the capital of France?"},
                  {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."}]},
    {"messages": [{"role": "system", "content": "Marv is a sarcastic chatbot."},
                  {"role": "user", "content": "Who wrote 'Romeo and Juliet'?"},
                  {"role": "assistant", "content": "Oh, just some guy named William Shakespeare."}]},
    {"messages": [{"role": "system", "content": "Marv is a sarcastic chatbot."},
                  {"role": "user", "content": "How far is the Moon from Earth?"},
                  {"role": "assistant", "content": "Around 384,400 kilometers. Give or take."}]},
]


def write_openai_messages(folder: Path, compression: str = "") -> Sample:
    """OpenAI `messages` JSON lines with a system turn, optionally compressed (`.zst`)."""
    path = _write(Path(folder) / f"openai_chat.jsonl{compression}", _jsonl(OPENAI_ROWS))
    return Sample(f"openai_messages{compression}", path, "sft", len(OPENAI_ROWS), len(OPENAI_ROWS))


def write_parquet_folder(folder: Path) -> Sample:
    """A folder of parquet shards without a card: data/train-0000{0,1}-of-00002.parquet + validation."""
    from datasets import Dataset

    root = Path(folder) / "parquet_chat"
    (root / "data").mkdir(parents=True, exist_ok=True)
    Dataset.from_list(OPENAI_ROWS[:2]).to_parquet(str(root / "data" / "train-00000-of-00002.parquet"))
    Dataset.from_list(OPENAI_ROWS[2:]).to_parquet(str(root / "data" / "train-00001-of-00002.parquet"))
    Dataset.from_list(OPENAI_ROWS[:1]).to_parquet(str(root / "data" / "validation-00000-of-00001.parquet"))
    return Sample("parquet_folder", root, "sft", len(OPENAI_ROWS), len(OPENAI_ROWS), eval_rows=1)


# ----------------------------------------------------------------------------------------------- preference
def _hh(*turns: str) -> str:
    """hh-rlhf text: "\n\nHuman: ...\n\nAssistant: ..." (an empty reply is written as a bare "\n\nAssistant:")."""
    out = ""
    for i, turn in enumerate(turns):
        speaker = "Human" if i % 2 == 0 else "Assistant"
        out += f"\n\n{speaker}:" + (f" {turn}" if turn else "")
    return out


HH_ROWS = [  # Anthropic/hh-rlhf train.jsonl.gz: {"chosen", "rejected"}, the shared dialogue repeated in both
    {"chosen": _hh("What is a good name for a cat?", "Whiskers is a classic."),
     "rejected": _hh("What is a good name for a cat?", "Cats do not need names.")},
    {"chosen": _hh("Hi", "Hello! How can I help?", "How do I boil an egg?", "Put it in boiling water for 8 minutes."),
     "rejected": _hh("Hi", "Hello! How can I help?", "How do I boil an egg?", "Why would you want an egg?")},
    {"chosen": _hh("Can you help me pick a lock?", "I can't help with that."),
     "rejected": _hh("Can you help me pick a lock?", "")},  # empty final reply: a malformed pair
    {"chosen": _hh("Tell me a joke.", "Why did the chicken cross the road? To get to the other side."),
     "rejected": _hh("Tell me a joke.", "No.")},
    {"chosen": _hh("What's 5 times 6?", ""),  # empty final reply in `chosen`
     "rejected": _hh("What's 5 times 6?", "It is 35.")},
    {"chosen": _hh("Recommend a book.", "Try 'Dune' by Frank Herbert.", "Why?", "It is a classic of science fiction."),
     "rejected": _hh("Recommend a book.", "Try 'Dune' by Frank Herbert.", "Why?", "Just because.")},
]


def hh_usable(rows: list[dict]) -> int:
    """Pairs whose chosen and rejected both end with a non-empty assistant reply."""
    return sum(1 for row in rows if all(not row[k].endswith("\n\nAssistant:") for k in ("chosen", "rejected")))


def write_hh_rlhf(folder: Path) -> Sample:
    """hh-rlhf's `train.jsonl.gz` (multi-turn, two pairs with an empty final reply: dropped with on_bad_row: drop)."""
    path = _write(Path(folder) / "hh-rlhf" / "train.jsonl.gz", _jsonl(HH_ROWS))
    return Sample("hh_rlhf.jsonl.gz", path, "preference", len(HH_ROWS), hh_usable(HH_ROWS),
                  options={"on_bad_row": "drop"})


def _uf_row(i: int, question: str, good: str, bad: str, high: float, low: float) -> dict:
    user = {"role": "user", "content": question}
    chosen = [user, {"role": "assistant", "content": good}]
    return {"prompt": question, "prompt_id": f"{i:064x}", "chosen": chosen,
            "rejected": [user, {"role": "assistant", "content": bad}], "messages": chosen,
            "score_chosen": high, "score_rejected": low}


UF_TRAIN = [  # HuggingFaceH4/ultrafeedback_binarized, split train_prefs
    _uf_row(1, "Write a haiku about rain.", "Soft rain on the roof / ...", "Rain is wet.", 8.5, 4.0),
    _uf_row(2, "What is the boiling point of water?", "100 degrees Celsius at sea level.", "50 degrees.", 9.0, 2.0),
    _uf_row(3, "Name a mammal that flies.", "The bat.", "The penguin.", 10.0, 1.0),
    _uf_row(4, "Translate 'thank you' into Spanish.", "Gracias.", "Merci.", 7.0, 3.5),
]
UF_TEST = [_uf_row(5, "What colour is the sky on a clear day?", "Blue.", "Green.", 9.5, 2.5)]  # test_prefs

UF_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs-*
  - split: test_prefs
    path: data/test_prefs-*
dataset_info:
  features:
  - name: prompt
    dtype: string
  - name: prompt_id
    dtype: string
  - name: chosen
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: rejected
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: messages
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: score_chosen
    dtype: float64
  - name: score_rejected
    dtype: float64
---
# UltraFeedback binarized (a tiny sample in the published layout)
"""


def write_ultrafeedback(folder: Path) -> Sample:
    """ultrafeedback_binarized's Hub layout: data/{train,test}_prefs-00000-of-00001.parquet + README configs."""
    from datasets import Dataset

    root = Path(folder) / "ultrafeedback_binarized"
    (root / "data").mkdir(parents=True, exist_ok=True)
    Dataset.from_list(UF_TRAIN).to_parquet(str(root / "data" / "train_prefs-00000-of-00001.parquet"))
    Dataset.from_list(UF_TEST).to_parquet(str(root / "data" / "test_prefs-00000-of-00001.parquet"))
    (root / "README.md").write_text(UF_CARD, encoding="utf-8")
    return Sample("ultrafeedback_binarized", root, "preference", len(UF_TRAIN), len(UF_TRAIN), eval_rows=len(UF_TEST),
                  options={"dataset_train_split": "train_prefs", "dataset_test_split": "test_prefs"})


TRL_ROWS = [  # trl-lib preference datasets: explicit prompt, conversational
    {"prompt": [{"role": "user", "content": "What color is the sky?"}],
     "chosen": [{"role": "assistant", "content": "It is blue."}],
     "rejected": [{"role": "assistant", "content": "It is green."}]},
    {"prompt": [{"role": "user", "content": "Where is the sun during the day?"}],
     "chosen": [{"role": "assistant", "content": "In the sky."}],
     "rejected": [{"role": "assistant", "content": "In the sea."}]},
    {"prompt": [{"role": "user", "content": "How many legs does a spider have?"}],
     "chosen": [{"role": "assistant", "content": "Eight."}],
     "rejected": [{"role": "assistant", "content": "Six."}]},
]


def write_trl_preference(folder: Path) -> Sample:
    """TRL's prompt/chosen/rejected (explicit prompt, conversational) as JSON lines."""
    path = _write(Path(folder) / "trl_pairs.jsonl", _jsonl(TRL_ROWS))
    return Sample("trl_prompt_chosen_rejected", path, "preference", len(TRL_ROWS), len(TRL_ROWS))


# ----------------------------------------------------------------------------------------------- plain text
BOOK = (
    "CHAPTER I.\n\n"
    "It was a bright cold day in April, and the clocks were striking thirteen.\n"
    "The hallway smelt of boiled cabbage and old rag mats.\n\n"
    "At one end of it a coloured poster, too large for indoor display, had been tacked to the wall.\n\n"
    "CHAPTER II.\n\n"
    "Outside, even through the shut window-pane, the world looked cold.\n"
    "Down in the street little eddies of wind were whirling dust and torn paper into spirals.\n"
)


def book_documents(text: str, sample_by: str) -> list[str]:
    """The documents of `text` for a boundary: the whole file, blank-line paragraphs, or lines (non-blank)."""
    if sample_by == "document":
        parts = [text]
    elif sample_by == "paragraph":
        parts = text.split("\n\n")
    else:
        parts = text.split("\n")
    return [part for part in parts if part.strip()]


def write_book(folder: Path, compression: str = "", sample_by: str = "paragraph", copies: int = 1) -> Sample:
    """A plain-text book (`book.txt`, or `.txt.gz`; `copies` chapters' worth), read with a document boundary."""
    text = "\n\n".join([BOOK] * copies)
    path = _write(Path(folder) / f"book.txt{compression}", text.encode("utf-8"))
    n = len(book_documents(text, sample_by))
    return Sample(f"book.txt{compression}:{sample_by}", path, "text", n, n, options={"text_sample_by": sample_by})


# name -> writer, for parametrised tests and the benchmark
WRITERS: dict[str, Callable[[Path], Sample]] = {
    "alpaca": write_alpaca,
    "alpaca.json.gz": partial(write_alpaca, compression=".gz"),
    "alpaca.csv.bz2": write_alpaca_csv_bz2,
    "sharegpt": write_sharegpt,
    "openai_messages": write_openai_messages,
    "openai_messages.jsonl.zst": partial(write_openai_messages, compression=".zst"),
    "parquet_folder": write_parquet_folder,
    "hh_rlhf.jsonl.gz": write_hh_rlhf,
    "ultrafeedback_binarized": write_ultrafeedback,
    "trl_prompt_chosen_rejected": write_trl_preference,
    "book.txt:paragraph": partial(write_book, sample_by="paragraph"),
    "book.txt:line": partial(write_book, sample_by="line"),
    "book.txt:document": partial(write_book, sample_by="document"),
    "book.txt.gz:paragraph": partial(write_book, compression=".gz", sample_by="paragraph"),
}
