"""`llm_recipes.data`: every source kind and row format normalised to TRL's columns, malformed input reported
by file and row (or dropped and counted), weighted mixtures with exact row counts, and a stage's data."""

from __future__ import annotations

import json
import logging

import pytest
from datasets import Dataset, DatasetDict

from llm_recipes.data_config import DataArguments
from llm_recipes.data import load_mixture, load_source, load_stage_data, normalise
from llm_recipes.errors import ConfigError, DataError
from llm_recipes.hub import save_dataset

USER, BOT = "user", "assistant"


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def text_rows(n: int, prefix: str = "doc") -> list[dict]:
    return [{"text": f"{prefix} {i}"} for i in range(n)]


def chat_rows(n: int) -> list[dict]:
    return [{"messages": [msg(USER, f"q{i}"), msg(BOT, f"a{i}")]} for i in range(n)]


# ----------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(
            {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
            {"messages": [msg(USER, "Add 2 and 3."), msg(BOT, "5")]},
            id="alpaca",
        ),
        pytest.param(
            {"instruction": "Translate.", "input": "bonjour", "output": "hello"},
            {"messages": [msg(USER, "Translate.\n\nbonjour"), msg(BOT, "hello")]},
            id="alpaca-with-input",
        ),
        pytest.param(
            {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                               {"from": "gpt", "value": "Hello"}]},
            {"messages": [msg("system", "Be brief."), msg(USER, "Hi"), msg(BOT, "Hello")]},
            id="sharegpt",
        ),
        pytest.param(
            {"messages": [msg(USER, "Hi"), msg(BOT, "Hello")], "source": "x"},
            {"messages": [msg(USER, "Hi"), msg(BOT, "Hello")]},
            id="messages",
        ),
        pytest.param(
            {"prompt": "The sky is", "completion": " blue."},
            {"prompt": "The sky is", "completion": " blue."},
            id="prompt-completion-text",
        ),
        pytest.param(
            {"prompt": [msg(USER, "Sky colour?")], "completion": [msg(BOT, "Blue.")]},
            {"prompt": [msg(USER, "Sky colour?")], "completion": [msg(BOT, "Blue.")]},
            id="prompt-completion-messages",
        ),
        pytest.param({"text": "Plain text.", "id": 3}, {"text": "Plain text."}, id="text"),
    ],
)
def test_formats_normalise_to_trl_columns(row, expected):
    out = normalise(Dataset.from_list([row, row]))
    assert out.column_names == list(expected)  # extra columns dropped
    assert out[0] == expected and len(out) == 2


def test_explicit_format_and_missing_column():
    ds = Dataset.from_list([{"instruction": "i", "output": "o", "text": "t"}])
    assert normalise(ds, "text")[0] == {"text": "t"}
    with pytest.raises(DataError, match=r"format 'sharegpt' needs column\(s\) \['conversations'\]"):
        normalise(ds, "sharegpt", source="mine.jsonl")


def test_unknown_format_lists_columns():
    ds = Dataset.from_list([{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as err:
        normalise(ds, source="qa.jsonl")
    assert "qa.jsonl" in str(err.value) and "['question', 'answer']" in str(err.value)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
             {"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}]}],
            r"bad\.jsonl: row 2: 'conversations\[1\]\.from' is 'robot'",
            id="sharegpt-bad-role",
        ),
        pytest.param(
            [{"instruction": "i", "output": "o"}, {"instruction": "i2", "output": None}],
            r"bad\.jsonl: row 2: empty or missing 'output'",
            id="missing-field",
        ),
        pytest.param([{"text": "ok"}, {"text": "ok"}, {"text": "  "}], r"bad\.jsonl: row 3: empty or missing 'text'",
                     id="empty-text"),
        pytest.param(
            [{"messages": [msg(USER, "q"), {"role": BOT}]}],
            r"row 1: empty or missing 'messages\[1\]\.content'",  # Arrow fills the missing key with None
            id="message-without-content",
        ),
    ],
)
def test_bad_rows_name_source_and_row(rows, expected):
    with pytest.raises(DataError, match=expected):
        normalise(Dataset.from_list(rows), source="bad.jsonl")


def test_drop_bad_rows_counts_them(caplog):
    rows = [{"text": "a"}, {"text": ""}, {"text": "b"}, {"text": None}, {"text": "c"}]
    with caplog.at_level(logging.WARNING, logger="llm_recipes"):
        out = normalise(Dataset.from_list(rows), on_bad_row="drop", source="mixed.jsonl")
    assert list(out["text"]) == ["a", "b", "c"]
    assert "mixed.jsonl: dropped 2 malformed row(s) of 5" in caplog.text


# ----------------------------------------------------------------------------------------------- sources
@pytest.fixture
def rows() -> list[dict]:
    return [{"instruction": f"say {i}", "input": "", "output": f"{i}"} for i in range(6)]


def test_local_files_of_every_kind(tmp_path, rows):
    ds = Dataset.from_list(rows)
    jsonl = write_jsonl(tmp_path / "a.jsonl", rows)
    array = tmp_path / "a.json"
    array.write_text(json.dumps(rows))
    lines_json = tmp_path / "lines.json"
    lines_json.write_text("\n" + (tmp_path / "a.jsonl").read_text())  # JSON lines in a .json file
    ds.to_parquet(str(tmp_path / "a.parquet"))
    ds.to_csv(str(tmp_path / "a.csv"), index=False)
    for path in (jsonl, array, lines_json, tmp_path / "a.parquet", tmp_path / "a.csv"):
        loaded = load_source(str(path))
        assert isinstance(loaded, Dataset) and len(loaded) == 6, path
        assert normalise(loaded)[3]["messages"] == [msg(USER, "say 3"), msg(BOT, "3")], path
    assert list(load_source(jsonl, split=None)) == ["train"]  # every split of a file: just train
    with pytest.raises(DataError, match=r"no split 'test' \(available: train\)"):
        load_source(jsonl, split="test")


def test_folders_save_to_disk_and_hub_layout(tmp_path, rows):
    ds = Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(tmp_path / "dict"))
    save_dataset(DatasetDict({"train": ds, "validation": ds.select(range(3))}), tmp_path / "hub", "t", "d")

    assert len(load_source(str(tmp_path / "one"))) == 6
    assert len(load_source(str(tmp_path / "dict"), split="test")) == 2
    assert set(load_source(str(tmp_path / "dict"), split=None)) == {"train", "test"}
    hub = load_source(str(tmp_path / "hub"), split=None)
    assert {k: len(v) for k, v in hub.items()} == {"train": 6, "validation": 3}
    with pytest.raises(DataError, match=r"no split 'test' \(available: train, validation\)"):
        load_source(str(tmp_path / "hub"), split="test")


@pytest.mark.parametrize("name", ["missing.jsonl", "data/missing.jsonl", "./missing", "/no/such/dir"])
def test_missing_paths(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=f"{name}: no such file or folder"):
        load_source(name)


def test_unreadable_sources(tmp_path):
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(DataError, match=r"notes\.docx: unsupported file type '\.docx'"):
        load_source(str(tmp_path / "notes.docx"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: cannot load this folder"):
        load_source(str(tmp_path / "empty"))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot be read as parquet"):
        load_source(str(tmp_path / "broken.parquet"))
    (tmp_path / "broken.json").write_text('[{"text": "a"}, {"text": ')
    with pytest.raises(DataError, match=r"broken\.json: cannot be read as json"):
        load_source(str(tmp_path / "broken.json"))


# ----------------------------------------------------------------------------------------------- malformed files
def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"\n[1, 2]\n{"text": "c"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3: bad JSON: .*\(2 bad line\(s\) in the file\)"):
        load_source(str(path))


def test_drop_bad_json_lines(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"\n[1, 2]\n{"text": "c"}\n')
    with caplog.at_level(logging.WARNING, logger="llm_recipes"):
        ds = load_source(str(path), on_bad_row="drop")
    assert list(ds["text"]) == ["a", "c"]
    assert "dropped 2 malformed line(s): 2, 3" in caplog.text


def test_undecodable_bytes(tmp_path, caplog):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n{"text": "also fine"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: line 2: undecodable bytes"):
        load_source(str(path))
    with caplog.at_level(logging.WARNING, logger="llm_recipes"):
        assert list(load_source(str(path), on_bad_row="drop")["text"]) == ["fine", "also fine"]
    assert "dropped 1 malformed line(s): 2" in caplog.text
    first = tmp_path / "first.jsonl"  # the very first line undecodable
    first.write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"first\.jsonl: line 1: undecodable bytes"):
        load_source(str(first))
    csv = tmp_path / "latin1.csv"
    csv.write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin1\.csv: cannot be read as csv"):
        load_source(str(csv))


def test_field_changing_type_between_lines(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a"}, {"text": {"nested": 1}}])
    with pytest.raises(DataError, match=r"mixed\.jsonl: row 2: 'text' must be text, got dict"):
        normalise(load_source(path), source=path)


def test_csv_cells_stay_text(tmp_path):
    csv = tmp_path / "qa.csv"
    csv.write_text("instruction,output\nTwo plus three?,5\nSay NA,NA\nEmpty answer,\n")
    ds = load_source(str(csv))
    assert ds[0] == {"instruction": "Two plus three?", "output": "5"} and ds[1]["output"] == "NA"
    with pytest.raises(DataError, match=r"qa\.csv: row 3: empty or missing 'output'"):
        normalise(ds, source=str(csv))


# ----------------------------------------------------------------------------------------------- mixtures
@pytest.fixture
def sources(tmp_path) -> dict[str, str]:
    """Ten text rows as JSON lines, twenty as parquet, eight in a save_to_disk folder."""
    jsonl = write_jsonl(tmp_path / "a.jsonl", text_rows(10, "a"))
    Dataset.from_list(text_rows(20, "b")).to_parquet(str(tmp_path / "b.parquet"))
    Dataset.from_list(text_rows(8, "c")).save_to_disk(str(tmp_path / "c"))
    return {"a": jsonl, "b": str(tmp_path / "b.parquet"), "c": str(tmp_path / "c")}


def counts(ds: Dataset) -> dict[str, int]:
    out: dict[str, int] = {}
    for text in ds["text"]:
        out[text.split()[0]] = out.get(text.split()[0], 0) + 1
    return out


def test_mixture_weights_give_exact_row_counts(sources):
    mixture = {
        "datasets": [
            {"path": sources["a"], "weight": 0.5},  # subsample: 5 of 10
            {"path": sources["b"], "weight": 1.0},  # all 20
            {"path": sources["c"], "weight": 2.5},  # upsample: 8 x 2.5 = 20
        ],
        "seed": 1,
    }
    dsd = load_mixture(mixture)
    assert list(dsd) == ["train"]
    assert counts(dsd["train"]) == {"a": 5, "b": 20, "c": 20}
    c_rows = [t for t in dsd["train"]["text"] if t.startswith("c")]
    assert all(c_rows.count(f"c {i}") in (2, 3) for i in range(8))  # every row twice, half of them thrice
    a_rows = {t for t in dsd["train"]["text"] if t.startswith("a")}
    assert len(a_rows) == 5  # a subsample draws distinct rows


def test_mixture_seed_determinism_and_test_split(sources):
    mixture = {"datasets": [{"path": sources["a"]}, {"path": sources["b"], "weight": 0.5}], "seed": 7,
               "test_split_size": 0.25}
    first, again = load_mixture(mixture), load_mixture(mixture)
    assert list(first["train"]["text"]) == list(again["train"]["text"])
    assert list(first["test"]["text"]) == list(again["test"]["text"])
    assert (len(first["train"]), len(first["test"])) == (15, 5)
    everything = list(first["train"]["text"]) + list(first["test"]["text"])
    assert len(set(everything)) == 20  # no row in both splits
    other = load_mixture({**mixture, "seed": 8})
    assert list(other["train"]["text"]) != list(first["train"]["text"])
    assert len(load_mixture({**mixture, "test_split_size": 4})["test"]) == 4  # a row count works too


def test_mixture_selects_split_and_columns(tmp_path):
    DatasetDict(
        {"train": Dataset.from_list(chat_rows(4)), "test": Dataset.from_list(chat_rows(2))}
    ).save_to_disk(str(tmp_path / "chat"))
    write_jsonl(tmp_path / "both.jsonl", [{"text": f"t{i}", "messages": chat_rows(1)[0]["messages"]} for i in range(3)])
    dsd = load_mixture({"datasets": [
        {"path": str(tmp_path / "chat"), "split": "test"},
        {"path": str(tmp_path / "both.jsonl"), "columns": ["messages"]},  # keep only the conversation
    ]})
    assert len(dsd["train"]) == 5 and dsd["train"].column_names == ["messages"]
    with pytest.raises(DataError, match=r"columns \['answer'\] not in the dataset"):
        load_mixture({"datasets": [{"path": str(tmp_path / "both.jsonl"), "columns": ["answer"]}]})


@pytest.mark.parametrize(
    ("mixture", "error", "expected"),
    [
        ({"datasets": [{"path": "a"}], "shuffle": True}, ConfigError, "dataset_mixture: unknown key 'shuffle'"),
        ({"datasets": [{"path": "a", "wieght": 2}]}, ConfigError, r"datasets\[0\]: unknown key 'wieght'"),
        ({"datasets": [{"split": "train"}]}, ConfigError, r"datasets\[0\]: needs 'id' \(Hub\) or 'path'"),
        ({"datasets": []}, ConfigError, "must list at least one dataset"),
        ({"datasets": [{"path": "a", "weight": 0}]}, ConfigError, "weight must be > 0"),
        ({"datasets": [{"path": "a", "weight": "lots"}]}, ConfigError, "weight must be a number"),
        ({"datasets": [{"path": "a", "weight": 0.01}]}, ConfigError, "keeps 0 of the 10 rows"),
        ({"datasets": [{"path": "a"}], "test_split_size": 50}, ConfigError, "test_split_size 50"),
        ([{"path": "a"}], ConfigError, "must be a mapping"),
    ],
)
def test_mixture_config_errors(sources, mixture, error, expected):
    def resolve(entry):
        return {**entry, "path": sources[entry["path"]]} if isinstance(entry, dict) and "path" in entry else entry

    if isinstance(mixture, dict):
        mixture = {**mixture, "datasets": [resolve(e) for e in mixture["datasets"]]}
    with pytest.raises(error, match=expected):
        load_mixture(mixture)


def test_mixture_of_different_formats_is_an_error(tmp_path, sources):
    chat = write_jsonl(tmp_path / "chat.jsonl", chat_rows(3))
    with pytest.raises(DataError, match="different layouts.*text: string.*messages: messages"):
        load_mixture({"datasets": [{"path": sources["a"]}, {"path": chat}]})
    text_pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "p", "completion": "c"}])
    chat_pc = write_jsonl(tmp_path / "pc_chat.jsonl", [{"prompt": [msg(USER, "p")], "completion": [msg(BOT, "c")]}])
    with pytest.raises(DataError, match="different layouts"):
        load_mixture({"datasets": [{"path": text_pc}, {"path": chat_pc}]})
    # alpaca and ShareGPT both become `messages`: they mix
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "i", "input": "", "output": "o"}])
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "h"},
                                                                            {"from": "gpt", "value": "g"}]}])
    assert len(load_mixture({"datasets": [{"path": alpaca}, {"path": sharegpt}, {"path": chat}]})["train"]) == 5


def test_mixture_drops_bad_rows_when_asked(tmp_path, sources, caplog):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "x 1"}, {"text": ""}, {"text": "x 2"}])
    with pytest.raises(DataError, match=r"bad\.jsonl: row 2"):
        load_mixture({"datasets": [{"path": bad}]})
    with caplog.at_level(logging.WARNING, logger="llm_recipes"):
        dsd = load_mixture({"datasets": [{"path": bad, "weight": 2}, {"path": sources["a"]}]}, on_bad_row="drop")
    assert counts(dsd["train"]) == {"x": 4, "a": 10}
    assert "dropped 1 malformed row(s) of 3" in caplog.text


# ----------------------------------------------------------------------------------------------- a stage's data
def test_stage_data_from_dataset_name(tmp_path):
    save_dataset(DatasetDict({"train": Dataset.from_list(chat_rows(12)), "test": Dataset.from_list(chat_rows(9))}),
                 tmp_path / "chat", "chat", "test set")
    args = DataArguments(dataset_name=str(tmp_path / "chat"), eval_max_samples=4)
    dsd = load_stage_data(args)
    assert {k: len(v) for k, v in dsd.items()} == {"train": 12, "test": 4}
    assert dsd["train"].column_names == ["messages"]
    with pytest.raises(DataError, match=r"no split 'validation' to evaluate on \(available: train, test\)"):
        load_stage_data(DataArguments(dataset_name=str(tmp_path / "chat"), dataset_test_split="validation"))
    assert list(load_stage_data(DataArguments(dataset_name=str(tmp_path / "chat"), dataset_test_split="none"))) == ["train"]
    with pytest.raises(DataError, match=r"no split 'training' \(available: train, test\)"):
        load_stage_data(DataArguments(dataset_name=str(tmp_path / "chat"), dataset_train_split="training"))
    single_file = write_jsonl(tmp_path / "one.jsonl", text_rows(3))  # a data file as dataset_name
    assert len(load_stage_data(DataArguments(dataset_name=single_file))["train"]) == 3


def test_stage_data_from_mixture(sources):
    args = DataArguments(
        dataset_mixture={"datasets": [{"path": sources["a"]}, {"path": sources["c"], "weight": 0.5}],
                         "test_split_size": 0.5},
        dataset_name="ignored-when-a-mixture-is-set",
        eval_max_samples=3,
    )
    dsd = load_stage_data(args, seed=3)
    assert (len(dsd["train"]), len(dsd["test"])) == (7, 3)
    assert list(load_stage_data(args, seed=3)["train"]["text"]) == list(dsd["train"]["text"])
    assert list(load_stage_data(args, seed=4)["train"]["text"]) != list(dsd["train"]["text"])  # the training seed is used


def test_stage_data_needs_a_source():
    with pytest.raises(ConfigError, match="set 'dataset_name' or 'dataset_mixture'"):
        load_stage_data(DataArguments())


# ----------------------------------------------------------------------------------------------- plain text, compression
BOOK_TEXT = "Chapter one.\n\nIt was cold.\nThe clocks struck.\n\n\nChapter two.\n"


@pytest.mark.parametrize(("sample_by", "expected"), [
    ("paragraph", ["Chapter one.", "It was cold.\nThe clocks struck.", "Chapter two."]),
    ("line", ["Chapter one.", "It was cold.", "The clocks struck.", "Chapter two."]),
    ("document", [BOOK_TEXT]),
])
def test_txt_file_with_a_document_boundary(tmp_path, sample_by, expected):
    path = tmp_path / "book.txt"
    path.write_text(BOOK_TEXT)
    ds = load_source(str(path), text_sample_by=sample_by)
    assert [t.strip() for t in ds["text"]] == [t.strip() for t in expected]  # blank separators are not documents


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst", ".xz"])
def test_compressed_files_of_every_kind(tmp_path, rows, suffix):
    import bz2
    import gzip
    import lzma

    import zstandard

    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
                ".zst": zstandard.ZstdCompressor().compress}[suffix]
    plain = tmp_path / "plain"
    plain.mkdir()
    ds = Dataset.from_list(rows)
    write_jsonl(plain / "a.jsonl", rows)
    (plain / "a.json").write_text(json.dumps(rows))
    ds.to_csv(str(plain / "a.csv"), index=False)
    (plain / "a.txt").write_text("one\n\ntwo\n\nthree\n")
    for name in ("a.jsonl", "a.json", "a.csv", "a.txt"):
        packed = tmp_path / (name + suffix)
        packed.write_bytes(compress((plain / name).read_bytes()))
        loaded = load_source(str(packed))
        assert len(loaded) == (3 if name == "a.txt" else 6), packed
        if name != "a.txt":
            assert normalise(loaded)[3]["messages"] == [msg(USER, "say 3"), msg(BOT, "3")], packed


def test_bad_line_in_a_compressed_file_names_the_line(tmp_path, caplog):
    import gzip

    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n'))
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz: line 2: bad JSON"):
        load_source(str(path))
    with caplog.at_level(logging.WARNING, logger="llm_recipes"):
        assert list(load_source(str(path), on_bad_row="drop")["text"]) == ["a", "c"]
    assert "dropped 1 malformed line(s): 2" in caplog.text


def test_unsupported_compressed_type_is_named(tmp_path):
    import gzip

    (tmp_path / "notes.docx.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(DataError, match=r"notes\.docx\.gz: unsupported file type '\.docx\.gz'"):
        load_source(str(tmp_path / "notes.docx.gz"))


def test_folder_of_txt_books(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("A one.\n\nA two.\n")
    (books / "b.txt").write_text("B one.\n\nB two.\n\nB three.\n")
    assert len(load_source(str(books), text_sample_by="document")) == 2
    assert len(load_source(str(books), text_sample_by="paragraph")) == 5


# ----------------------------------------------------------------------------------------------- the held-out split
def two_splits(tmp_path, held_out: str):
    save_dataset(DatasetDict({"train": Dataset.from_list(text_rows(20)), held_out: Dataset.from_list(text_rows(5, "h"))}),
                 tmp_path / held_out, "t", "d")
    return str(tmp_path / held_out)


@pytest.mark.parametrize("held_out", ["validation", "test"])
def test_default_held_out_split_is_found_by_every_stage(tmp_path, held_out):
    """One rule for every stage: unset, the held-out split is `validation`, else `test`."""
    from llm_recipes.pretrain_config import PretrainArguments
    from llm_recipes.tokenizer_config import TokenizerArguments
    from llm_recipes.pretrain import load_text_splits

    folder = two_splits(tmp_path, held_out)
    assert len(load_stage_data(DataArguments(dataset_name=folder))["test"]) == 5
    _, test = load_text_splits(DataArguments(dataset_name=folder), PretrainArguments(output_dir=str(tmp_path / "o")))
    assert test is not None and len(test) == 5
    assert TokenizerArguments().dataset_test_split == DataArguments().dataset_test_split


def test_named_held_out_split_that_is_missing_is_an_error(tmp_path):
    from llm_recipes.pretrain_config import PretrainArguments
    from llm_recipes.pretrain import load_text_splits

    folder = two_splits(tmp_path, "validation")
    expected = r"no split 'test' to evaluate on \(available: train, validation\)"
    with pytest.raises(DataError, match=expected):
        load_stage_data(DataArguments(dataset_name=folder, dataset_test_split="test"))
    with pytest.raises(DataError, match=expected):
        load_text_splits(DataArguments(dataset_name=folder, dataset_test_split="test"),
                         PretrainArguments(output_dir=str(tmp_path / "o")))
    assert list(load_stage_data(DataArguments(dataset_name=folder, dataset_test_split="none"))) == ["train"]


def test_tokenizer_named_held_out_split_that_is_missing_is_an_error(tmp_path):
    import importlib.util

    from conftest import REPO_ROOT
    from llm_recipes.tokenizer_config import TokenizerArguments

    spec = importlib.util.spec_from_file_location("tokenizer_script", REPO_ROOT / "scripts" / "tokenizer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = two_splits(tmp_path, "validation")
    with pytest.raises(DataError, match=r"no split 'test' to evaluate on \(available: train, validation\)"):
        script.main(TokenizerArguments(dataset_name=folder, dataset_test_split="test", output_dir=str(tmp_path / "t")))
    assert not (tmp_path / "t").exists()


def test_pretraining_evaluation_without_held_out_data_is_an_error(tmp_path, caplog):
    from llm_recipes.pretrain_config import PretrainArguments
    from llm_recipes.pretrain import load_text_splits

    only_train = write_jsonl(tmp_path / "docs.jsonl", text_rows(20))
    cfg = PretrainArguments(output_dir=str(tmp_path / "o"))  # eval_before_training: true by default
    with pytest.raises(DataError, match=r"docs\.jsonl: no held-out split to evaluate on \(available: train\)"):
        load_text_splits(DataArguments(dataset_name=only_train), cfg)
    with caplog.at_level(logging.INFO, logger="llm_recipes"):
        train, test = load_text_splits(DataArguments(dataset_name=only_train, dataset_test_split_size=0.25), cfg)
    assert (len(train), len(test)) == (15, 5) and not set(train["text"]) & set(test["text"])
    assert "held out 5 of the 20 rows of train" in caplog.text
    cfg.eval_before_training = False  # no evaluation asked for: training alone is fine
    train, test = load_text_splits(DataArguments(dataset_name=only_train), cfg)
    assert len(train) == 20 and test is None


def test_held_out_share_is_seeded_and_logged(tmp_path, caplog):
    only_train = write_jsonl(tmp_path / "docs.jsonl", text_rows(20))
    args = DataArguments(dataset_name=only_train, dataset_test_split_size=0.2)
    with caplog.at_level(logging.INFO, logger="llm_recipes"):
        first, again, other = load_stage_data(args, seed=1), load_stage_data(args, seed=1), load_stage_data(args, seed=2)
    assert list(first["test"]["text"]) == list(again["test"]["text"]) != list(other["test"]["text"])
    assert (len(first["train"]), len(first["test"])) == (16, 4)
    assert "held out 4 of the 20 rows of train (dataset_test_split_size 0.2, seed 1)" in caplog.text


def test_mixture_entry_cuts_plain_text_and_keeps_its_own_held_out_share(tmp_path, sources):
    (tmp_path / "poem.txt").write_text("line one\nline two\n\nline three\n")
    dsd = load_mixture({"datasets": [{"path": str(tmp_path / "poem.txt"), "sample_by": "line"},
                                     {"path": str(tmp_path / "poem.txt")}, {"path": sources["a"]}]})
    assert len(dsd["train"]) == 3 + 2 + 10  # three lines, two paragraphs, ten JSON rows
    args = DataArguments(dataset_mixture={"datasets": [{"path": sources["a"]}]}, dataset_test_split_size=0.2)
    with pytest.raises(ConfigError, match="dataset_mixture.test_split_size"):
        load_stage_data(args)
