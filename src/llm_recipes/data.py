"""Data loading, format normalisation and weighted mixing: the one place every stage gets its data from.

Sources: a Hub id, a local `save_to_disk` folder, a Hub-layout folder, or json/jsonl/parquet/csv files.
Formats: alpaca, ShareGPT, `messages`, prompt/completion and plain text, normalised to TRL's column names.
Malformed rows stop the stage with file and row number, or are dropped and counted when asked.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from llm_recipes.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# datasets' cache can hand back an old copy of a local file rewritten in place (same path, same second):
# local data is re-read every time; it is small next to the training it feeds.
LOCAL_MODE = datasets.DownloadMode.FORCE_REDOWNLOAD
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


# ----------------------------------------------------------------------------------------------- loading
def _jsonl_bad_lines(path: str) -> list[tuple[int, str]]:
    """Line numbers (1-based) and errors of lines that are not JSON objects; blank lines are allowed."""
    bad = []
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    if not isinstance(json.loads(line), dict):
                        bad.append((number, "not a JSON object"))
                except json.JSONDecodeError as err:
                    bad.append((number, f"bad JSON: {err.msg}"))
        except UnicodeDecodeError as err:
            bad.append((number + 1, f"undecodable bytes ({err.reason})"))
    return bad


def _load_json_lines(path: str, on_bad_row: str) -> Dataset:
    """Load a JSON-lines file with datasets, reporting or dropping malformed lines by number first."""
    bad = _jsonl_bad_lines(path)
    if bad and on_bad_row == "error":
        number, reason = bad[0]
        raise DataError(f"{path}: line {number}: {reason} ({len(bad)} bad line(s) in the file)")
    if bad:
        logger.warning("%s: dropped %d malformed line(s): %s", path, len(bad), ", ".join(str(n) for n, _ in bad[:10]))
        skip = {n for n, _ in bad}
        clean = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")
        with open(path, encoding="utf-8", errors="replace") as fh, clean:
            for number, line in enumerate(fh, start=1):
                if number not in skip and line.strip():
                    clean.write(line)
        path = clean.name
    return datasets.load_dataset("json", data_files=path, split="train", download_mode=LOCAL_MODE)


def load_source(
    source: str,
    config: str | None = None,
    split: str | None = "train",
    on_bad_row: str = "error",
) -> Dataset | DatasetDict:
    """Load one dataset from a Hub id, a local folder or a data file; `split=None` returns every split."""
    if os.path.isfile(source):
        ext = os.path.splitext(source)[1].lower()
        if ext not in FILE_BUILDERS:
            raise DataError(f"{source}: unsupported file type '{ext}' (use {', '.join(sorted(FILE_BUILDERS))})")
        if ext == ".jsonl" or (ext == ".json" and _looks_like_json_lines(source)):
            ds = _load_json_lines(source, on_bad_row)
        else:
            try:
                ds = datasets.load_dataset(FILE_BUILDERS[ext], data_files=source, split="train", download_mode=LOCAL_MODE)
            except Exception as err:  # datasets wraps parser errors in several types
                raise DataError(f"{source}: cannot be read as {ext[1:]} ({type(err).__name__}: {err})") from None
        return ds if split in (None, "train") else _missing_split(source, split, ["train"])
    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, "dataset_dict.json")) or os.path.exists(
            os.path.join(source, "dataset_info.json")
        ):
            loaded = datasets.load_from_disk(source)
        else:
            loaded = datasets.load_dataset(source, name=config, download_mode=LOCAL_MODE)
    elif source.startswith((".", "/")) or source.count("/") > 1:
        raise DataError(f"{source}: no such file or folder")
    else:
        loaded = datasets.load_dataset(source, name=config)  # a Hub id: the only network access here
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    if split is None:
        return loaded
    if split not in loaded:
        return _missing_split(source, split, list(loaded))
    return loaded[split]


def _looks_like_json_lines(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(1).strip()
    return head == b"{"


def _missing_split(source: str, split: str, available: list[str]):
    raise DataError(f"{source}: no split '{split}' (available: {', '.join(available)})")


# ----------------------------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class RowFormat:
    """A dataset format: how to recognise it from columns and how to turn one row into TRL's columns."""

    name: str
    required: tuple[str, ...]
    convert: Callable[[dict[str, Any]], dict[str, Any]]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"empty or missing {what}")
    return value


def _messages(messages: Any, what: str = "messages") -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"empty or missing '{what}'")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"'{what}[{i}]' needs 'role' and 'content'")
        out.append({"role": str(message["role"]), "content": _text(message["content"], f"'{what}[{i}].content'")})
    return out


def _from_messages(row: dict) -> dict:
    return {"messages": _messages(row["messages"])}


def _from_sharegpt(row: dict) -> dict:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise ValueError("empty or missing 'conversations'")
    messages = []
    for i, turn in enumerate(turns):
        speaker = turn.get("from") if isinstance(turn, dict) else None
        if speaker not in SHAREGPT_ROLES:
            raise ValueError(f"'conversations[{i}].from' is {speaker!r}, expected one of {sorted(SHAREGPT_ROLES)}")
        messages.append(
            {"role": SHAREGPT_ROLES[speaker], "content": _text(turn.get("value"), f"'conversations[{i}].value'")}
        )
    return {"messages": messages}


def _from_alpaca(row: dict) -> dict:
    instruction = _text(row["instruction"], "'instruction'")
    extra = row.get("input") or ""
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row["output"], "'output'")}]}


def _from_prompt_completion(row: dict) -> dict:
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):
        return {"prompt": _messages(prompt, "prompt"), "completion": _messages(completion, "completion")}
    return {"prompt": _text(prompt, "'prompt'"), "completion": _text(completion, "'completion'")}


def _from_text(row: dict) -> dict:
    return {"text": _text(row["text"], "'text'")}


# Order matters: the first format whose required columns are all present wins.
FORMATS: dict[str, RowFormat] = {
    f.name: f
    for f in (
        RowFormat("messages", ("messages",), _from_messages),
        RowFormat("sharegpt", ("conversations",), _from_sharegpt),
        RowFormat("alpaca", ("instruction", "output"), _from_alpaca),
        RowFormat("prompt_completion", ("prompt", "completion"), _from_prompt_completion),
        RowFormat("text", ("text",), _from_text),
    )
}


def detect_format(columns: list[str], source: str = "dataset") -> RowFormat:
    for row_format in FORMATS.values():
        if all(c in columns for c in row_format.required):
            return row_format
    raise DataError(
        f"{source}: unknown data format; columns seen: {columns}. Expected one of: "
        + "; ".join(f"{f.name} ({', '.join(f.required)})" for f in FORMATS.values())
    )


def normalise(ds: Dataset, fmt: str = "auto", on_bad_row: str = "error", source: str = "dataset") -> Dataset:
    """Convert rows to TRL's columns (`messages`, `prompt`/`completion` or `text`); other columns are dropped."""
    row_format = detect_format(ds.column_names, source) if fmt == "auto" else FORMATS[fmt]
    missing = [c for c in row_format.required if c not in ds.column_names]
    if missing:
        raise DataError(f"{source}: format '{row_format.name}' needs column(s) {missing}; columns seen: {ds.column_names}")

    def convert(row: dict, index: int) -> dict:
        try:
            return row_format.convert(row)
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            raise DataError(f"{source}: row {index + 1}: {err}") from None

    if on_bad_row == "drop":
        def is_good(row: dict) -> bool:
            try:
                row_format.convert(row)
                return True
            except (ValueError, TypeError, AttributeError, KeyError):
                return False

        kept = ds.filter(is_good, desc="checking rows")
        if len(kept) < len(ds):
            logger.warning("%s: dropped %d malformed row(s) of %d", source, len(ds) - len(kept), len(ds))
        ds = kept
    return ds.map(convert, with_indices=True, remove_columns=ds.column_names, desc=f"normalising {row_format.name}")


# ----------------------------------------------------------------------------------------------- mixtures
MIXTURE_KEYS = {"datasets", "seed", "test_split_size"}
ENTRY_KEYS = {"id", "path", "config", "split", "columns", "weight", "format"}


def load_mixture(mixture: dict, on_bad_row: str = "error") -> DatasetDict:
    """Weighted mixture: each dataset is shuffled and cut (or repeated) to weight x rows, then all are
    concatenated, shuffled and optionally split into train/test."""
    unknown = set(mixture) - MIXTURE_KEYS
    if unknown:
        raise ConfigError(f"dataset_mixture: unknown key '{sorted(unknown)[0]}' (allowed: {sorted(MIXTURE_KEYS)})")
    entries = mixture.get("datasets") or []
    if not entries:
        raise ConfigError("dataset_mixture: 'datasets' must list at least one dataset")
    seed = int(mixture.get("seed", 42))
    parts, kinds = [], set()
    for i, entry in enumerate(entries):
        where = f"dataset_mixture.datasets[{i}]"
        if not isinstance(entry, dict) or not (set(entry) & {"id", "path"}):
            raise ConfigError(f"{where}: needs 'id' (Hub) or 'path' (local)")
        if set(entry) - ENTRY_KEYS:
            raise ConfigError(f"{where}: unknown key '{sorted(set(entry) - ENTRY_KEYS)[0]}' (allowed: {sorted(ENTRY_KEYS)})")
        source = entry.get("id") or entry["path"]
        ds = load_source(source, entry.get("config"), entry.get("split", "train"), on_bad_row)
        if entry.get("columns"):
            ds = ds.select_columns(entry["columns"])
        ds = normalise(ds, entry.get("format", "auto"), on_bad_row, source)
        weight = float(entry.get("weight", 1.0))
        if weight <= 0:
            raise ConfigError(f"{where}: weight must be > 0, got {weight}")
        ds = ds.shuffle(seed=seed)
        target = round(len(ds) * weight)
        repeats, rest = divmod(target, len(ds))
        ds = datasets.concatenate_datasets([ds] * repeats + [ds.select(range(rest))])
        logger.info("mixture: %s -> %d rows (weight %.3g)", source, len(ds), weight)
        kinds.add(tuple(sorted(ds.column_names)))
        parts.append(ds)
    if len(kinds) > 1:
        raise DataError(f"dataset_mixture: datasets normalise to different formats {sorted(kinds)}; mix one kind")
    combined = datasets.concatenate_datasets(parts).shuffle(seed=seed)
    test_size = mixture.get("test_split_size")
    if test_size:
        return combined.train_test_split(test_size=test_size, seed=seed)
    return DatasetDict({"train": combined})


def load_stage_data(data_args, seed: int = 42) -> DatasetDict:
    """The train (and, when there is one, test) split a stage trains on, normalised to TRL's format."""
    if data_args.dataset_mixture:
        dsd = load_mixture(data_args.dataset_mixture, data_args.on_bad_row)
        train_split, test_split = "train", "test"
    elif data_args.dataset_name:
        loaded = load_source(data_args.dataset_name, data_args.dataset_config, None, data_args.on_bad_row)
        train_split, test_split = data_args.dataset_train_split, data_args.dataset_test_split
        if train_split not in loaded:
            _missing_split(data_args.dataset_name, train_split, list(loaded))
        dsd = DatasetDict(
            {
                split: normalise(loaded[split], data_args.dataset_format, data_args.on_bad_row, f"{data_args.dataset_name}[{split}]")
                for split in (train_split, test_split)
                if split in loaded
            }
        )
    else:
        raise ConfigError("no data: set 'dataset_name' or 'dataset_mixture' in the recipe")
    out = DatasetDict({"train": dsd[train_split]})
    if test_split in dsd:
        test = dsd[test_split]
        if data_args.eval_max_samples:
            test = test.select(range(min(len(test), data_args.eval_max_samples)))
        out["test"] = test
    return out


def dataset_sources(data_args) -> list[str]:
    """The ids or paths a stage's data came from (for cards and lineage)."""
    if data_args.dataset_mixture:
        return [e.get("id") or e.get("path") for e in data_args.dataset_mixture.get("datasets", [])]
    return [data_args.dataset_name] if data_args.dataset_name else []
