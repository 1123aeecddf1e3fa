"""Data loading, format normalisation and weighted mixing: the one place every stage gets its data from.

Sources: a Hub id, a local `save_to_disk` folder, a Hub-layout folder (or a folder of data files), or
json/jsonl/parquet/csv/txt files, each also compressed (.gz, .bz2, .xz, .zst). Plain text is cut into documents
at a boundary: the whole file, blank lines (paragraphs) or lines.
Formats: alpaca, ShareGPT, `messages`, prompt/completion and plain text (SFT); preference pairs (TRL's
explicit or implicit prompt, hh-rlhf "\n\nHuman: ... \n\nAssistant:" text, UltraFeedback-style messages with
scores); RL prompts; unpaired examples (prompt, completion, label: KTO), which preference pairs also give
(each pair: a desirable and an undesirable example). Each is normalised to TRL's column names; a stage asks for
the kind it trains on.
Malformed rows stop the stage with file and row number, or are dropped and counted when asked.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
from datasets import Dataset, DatasetDict
from trl.data_utils import extract_prompt, unpair_preference_dataset

from llm_recipes.data_config import DatasetMixtureArguments
from llm_recipes.errors import ConfigError, DataError, first_line
from llm_recipes.models import looks_local
from llm_recipes.parser import build_options

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # datasets decompresses these by extension
TEXT_SAMPLE_BY = ("paragraph", "line", "document")  # datasets' text builder: blank line, newline, whole file
NO_SPLIT = "none"  # dataset_test_split: none -> no held-out split
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


# ----------------------------------------------------------------------------------------------- loading
def _file_type(path: str) -> tuple[str, str]:
    """(data type, compression) from a file name: 'a.jsonl.gz' -> ('.jsonl', '.gz'), 'a.csv' -> ('.csv', '')."""
    stem, ext = os.path.splitext(path.lower())
    if ext in COMPRESSIONS:
        return os.path.splitext(stem)[1], ext
    return ext, ""


def _open_bytes(path: str):
    """The file's bytes, decompressed as its extension says (fsspec: gzip, bz2, xz, zstd). Buffered, because
    zstandard's reader cannot iterate lines."""
    import fsspec

    return io.BufferedReader(fsspec.open(path, "rb", compression="infer").open())


def _jsonl_bad_lines(path: str) -> list[tuple[int, str]]:
    """Line numbers (1-based) and errors of lines that are not UTF-8 JSON objects; blank lines are allowed.
    Lines are read as bytes and decoded one by one, so an undecodable line is reported by its own number."""
    bad = []
    with _open_bytes(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((number, f"undecodable bytes ({err.reason} at byte {err.start})"))
                continue
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append((number, "not a JSON object"))
            except json.JSONDecodeError as err:
                bad.append((number, f"bad JSON: {err.msg}"))
    return bad


def _load_json_lines(path: str, on_bad_row: str) -> Dataset:
    """Load a JSON-lines file with datasets, reporting or dropping malformed lines by number first."""
    bad = _jsonl_bad_lines(path)
    if bad and on_bad_row == "error":
        number, reason = bad[0]
        raise DataError(f"{path}: line {number}: {reason} ({len(bad)} bad line(s) in the file)")
    with tempfile.TemporaryDirectory() as tmp:
        if bad:
            logger.warning("%s: dropped %d malformed line(s): %s", path, len(bad), ", ".join(str(n) for n, _ in bad[:10]))
            skip = {n for n, _ in bad}
            clean = os.path.join(tmp, "clean.jsonl")  # written uncompressed
            with _open_bytes(path) as fh, open(clean, "wb") as out:
                out.writelines(raw for number, raw in enumerate(fh, start=1) if number not in skip and raw.strip())
            path_to_load = clean
        else:
            path_to_load = path
        try:  # the rows are copied into datasets' cache, so the cleaned copy can go
            return datasets.load_dataset(
                "json", data_files=path_to_load, split="train", cache_dir=_local_cache_dir(path)
            )
        except Exception as err:  # e.g. a field whose type changes between lines
            raise DataError(f"{path}: cannot be read as JSON lines ({type(err).__name__}: {first_line(err)})") from None



def load_source(
    source: str,
    config: str | None = None,
    split: str | None = "train",
    on_bad_row: str = "error",
    streaming: bool = False,
    text_sample_by: str = "paragraph",
) -> Dataset | DatasetDict:
    """Load one dataset from a Hub id, a local folder or a data file; `split=None` returns every split.
    `streaming=True` streams a Hub dataset (an IterableDataset, nothing downloaded up front). Plain text (.txt)
    becomes one `text` row per document, cut at `text_sample_by`: paragraph (blank line), line or document."""
    source = os.path.expanduser(source) if source.startswith("~") else source
    if text_sample_by not in TEXT_SAMPLE_BY:
        raise ConfigError(f"text_sample_by: must be one of {list(TEXT_SAMPLE_BY)}, got {text_sample_by!r}")
    if os.path.isfile(source):
        ext, compression = _file_type(source)
        if ext not in FILE_BUILDERS:
            raise DataError(
                f"{source}: unsupported file type '{ext}{compression}' (use {', '.join(sorted(FILE_BUILDERS))}, "
                f"each also compressed: {', '.join(COMPRESSIONS)})"
            )
        if ext == ".jsonl" or (ext == ".json" and _looks_like_json_lines(source)):
            ds = _load_json_lines(source, on_bad_row)
        else:
            try:
                extra = _csv_options(source) if ext == ".csv" else {}
                if ext == ".txt":
                    extra = {"sample_by": text_sample_by}
                ds = datasets.load_dataset(
                    FILE_BUILDERS[ext], data_files=source, split="train", cache_dir=_local_cache_dir(source), **extra
                )
            except Exception as err:  # datasets wraps parser errors in several types
                raise DataError(f"{source}: cannot be read as {ext[1:]} ({type(err).__name__}: {first_line(err)})") from None
            if ext == ".txt":
                ds = _without_blank_documents(ds, source, text_sample_by)
        if split is None:
            return DatasetDict({"train": ds})
        return ds if split == "train" else _missing_split(source, split, ["train"])
    if os.path.isdir(source):
        saved = any(os.path.exists(os.path.join(source, f)) for f in ("dataset_dict.json", "dataset_info.json"))
        text_folder = not saved and _is_text_folder(source)
        try:
            if saved:
                loaded = datasets.load_from_disk(source)
            else:
                extra = {"sample_by": text_sample_by} if text_folder else {}
                loaded = datasets.load_dataset(source, name=config, cache_dir=_local_cache_dir(source), **extra)
        except Exception as err:  # an empty folder, unreadable files, an unknown config name
            raise DataError(f"{source}: cannot load this folder as a dataset ({type(err).__name__}: {first_line(err)})") from None
        if text_folder:
            loaded = DatasetDict({name: _without_blank_documents(ds, f"{source}[{name}]", text_sample_by)
                                  for name, ds in loaded.items()})
    elif looks_local(source) or _file_type(source)[0] in FILE_BUILDERS:  # a Hub id has no data-file suffix
        raise DataError(f"{source}: no such file or folder")
    elif streaming:
        loaded = datasets.load_dataset(source, name=config, streaming=True)  # a Hub id, streamed
        if split is not None and split not in loaded:
            return _missing_split(source, split, list(loaded))
        return loaded if split is None else loaded[split]
    else:
        try:
            loaded = datasets.load_dataset(source, name=config)  # a Hub id: the only network access here
        except Exception as err:  # offline, no such repo, gated, unknown config
            raise DataError(
                f"{source}: not a local file or folder, and loading it from the Hub failed "
                f"({type(err).__name__}: {first_line(err)})"
            ) from None
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    if split is None:
        return loaded
    if split not in loaded:
        return _missing_split(source, split, list(loaded))
    return loaded[split]


def _is_text_folder(folder: str) -> bool:
    """A folder whose data files are all plain text (datasets then uses its text builder, which takes sample_by)."""
    types = {
        _file_type(name)[0]
        for root, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".") and name.lower() != "readme.md"
    }
    return types == {".txt"}


def _without_blank_documents(ds: Dataset, source: str, sample_by: str) -> Dataset:
    """Drop the empty samples datasets' text builder yields for blank lines (separators, not documents)."""
    kept = ds.filter(lambda row: bool(row["text"].strip()), desc="dropping blank lines")
    logger.info("%s: %d text document(s), one per %s (%d blank separator(s) skipped)", source, len(kept), sample_by,
                len(ds) - len(kept))
    return kept


def _csv_options(path: str) -> dict:
    """Read every CSV column as text, cells as written: pandas would turn an answer "5" into a number and a
    text "NA" into a missing value."""
    options: dict = {"keep_default_na": False}
    try:
        with _open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        return options  # datasets reports the file
    if header and len(set(header)) == len(header):
        options["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    return options


def _local_cache_dir(path: str) -> str:
    """A datasets cache of its own for each version of a local file or folder, keyed by its absolute path and
    the size and mtime of every file in it. datasets keys a local folder's cache by its name and layout only:
    two `corpus` folders shared one entry, and a folder rewritten in place was served stale or failed with
    NonMatchingSplitsSizesError. Processes loading the same unchanged data share one cache (datasets locks it)."""
    import hashlib

    path = os.path.abspath(path)
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names
    )
    digest = hashlib.sha1(path.encode())
    for name in files:
        stat = os.stat(name)
        digest.update(f"{os.path.relpath(name, path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return os.path.join(datasets.config.HF_DATASETS_CACHE, "llm_recipes_local", digest.hexdigest()[:20])


def _looks_like_json_lines(path: str) -> bool:
    """A .json file holding one object per line (a JSON array starts with '[')."""
    with _open_bytes(path) as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"{"


def _missing_split(source: str, split: str, available: list[str]):
    raise DataError(f"{source}: no split '{split}' (available: {', '.join(available)})")


def held_out_split(source: str, requested: str | None, available: list[str]) -> str | None:
    """The split a stage evaluates on, the same rule for every stage: the one named (`none`: no held-out split;
    a named split the data lacks is an error); unset, `validation`, else `test` (the names curation and the Hub
    use), else none."""
    if requested is None or not requested.strip():
        return next((name for name in ("validation", "test") if name in available), None)
    if requested.lower() == NO_SPLIT:
        return None
    if requested not in available:
        raise DataError(
            f"{source}: no split '{requested}' to evaluate on (available: {', '.join(available)}); set "
            f"dataset_test_split to one of them, or to 'none' (dataset_test_split_size holds out a share of train)"
        )
    return requested


def hold_out(ds: Dataset, size: float | int, seed: int, source: str) -> tuple[Dataset, Dataset]:
    """(train, held-out): a seeded random share (< 1) or number of rows (>= 1) of `ds`, for evaluation."""
    try:
        size = int(size) if size >= 1 else float(size)
        parts = ds.train_test_split(test_size=size, seed=seed)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"dataset_test_split_size: {size!r} for {source} ({len(ds)} rows): {first_line(err)}") from None
    logger.info("%s: held out %d of the %d rows of train (dataset_test_split_size %s, seed %d) for evaluation",
                source, len(parts["test"]), len(ds), size, seed)
    return parts["train"], parts["test"]


# ----------------------------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class RowFormat:
    """A dataset format: how to recognise it from columns and how to turn one row into TRL's columns."""

    name: str
    required: tuple[str, ...]
    convert: Callable[[dict[str, Any]], dict[str, Any]]
    kind: str = "sft"  # what a stage trains on: sft, preference (pairs) or prompt (RL prompts)


def _text(value: Any, what: str) -> str:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {type(value).__name__} {str(value)[:40]!r}")
    if value is None or not value.strip():
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


LABELS = {"true": True, "1": True, "false": False, "0": False}  # CSV cells are text


def _from_unpaired(row: dict) -> dict:
    """KTO's unpaired layout: a prompt, one completion (text or messages) and whether it is desirable."""
    label = row["label"]
    if isinstance(label, str):
        label = LABELS.get(label.strip().lower(), label)
    if not isinstance(label, (bool, int)) or label not in (0, 1):
        raise ValueError(f"'label' must be true or false (desirable or not), got {label!r}")
    return {**_from_prompt_completion(row), "label": bool(label)}


def _from_text(row: dict) -> dict:
    return {"text": _text(row["text"], "'text'")}


HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_messages(text: str, what: str) -> list[dict[str, str]]:
    """hh-rlhf text ("\n\nHuman: ... \n\nAssistant: ...") -> messages; an empty last turn is kept empty."""
    parts = HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError(f"'{what}' is not hh-rlhf text (expected '\\n\\nHuman: ... \\n\\nAssistant: ...')")
    return [{"role": HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def _is_hh(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip(" ").startswith("\n\nHuman:") and "\n\nAssistant:" in value


def _strip_prefix(prompt: list[dict], turns: list[dict]) -> list[dict]:
    """UltraFeedback-style rows repeat the prompt inside `chosen`/`rejected`: keep only what follows it."""
    return turns[len(prompt):] if turns[: len(prompt)] == prompt else turns


def _pair(row: dict) -> dict:
    """Any preference row -> {prompt, chosen, rejected}, conversational (messages) or plain text."""
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if _is_hh(chosen) or _is_hh(rejected):
        chosen, rejected = _hh_messages(chosen, "chosen"), _hh_messages(rejected, "rejected")
        if isinstance(prompt, str) and prompt.strip():
            prompt = _hh_messages(prompt, "prompt") if _is_hh(prompt) else [{"role": "user", "content": prompt.strip()}]
    if isinstance(chosen, list) or isinstance(rejected, list):
        chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
        if isinstance(prompt, str) and prompt.strip():
            prompt = [{"role": "user", "content": prompt}]
        if prompt:
            prompt = _messages(prompt, "prompt")
            chosen, rejected = _strip_prefix(prompt, chosen), _strip_prefix(prompt, rejected)
        else:
            if chosen == rejected:
                raise ValueError("'chosen' and 'rejected' are identical")
            split = extract_prompt({"chosen": chosen, "rejected": rejected})  # implicit prompt: the shared turns
            prompt, chosen, rejected = split["prompt"], split["chosen"], split["rejected"]
        if not prompt:
            raise ValueError("no prompt: 'chosen' and 'rejected' share no leading turn and there is no 'prompt'")
        for what, turns in (("chosen", chosen), ("rejected", rejected)):
            if not turns or turns[-1]["role"] != "assistant" or not turns[-1]["content"].strip():
                raise ValueError(f"'{what}' has no assistant reply after the prompt")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    chosen, rejected = _text(chosen, "'chosen'"), _text(rejected, "'rejected'")
    if prompt is None:
        if chosen == rejected:
            raise ValueError("'chosen' and 'rejected' are identical")
        split = extract_prompt({"chosen": chosen, "rejected": rejected})
        prompt, chosen, rejected = split["prompt"], split["chosen"], split["rejected"]
    return {"prompt": _text(prompt, "'prompt'"), "chosen": chosen, "rejected": rejected}


def _from_hh_rlhf(row: dict) -> dict:
    for what in ("chosen", "rejected"):
        if not _is_hh(row[what]):
            raise ValueError(f"'{what}' is not hh-rlhf text (expected '\\n\\nHuman: ... \\n\\nAssistant: ...')")
    return _pair(row)


def _from_ultrafeedback(row: dict) -> dict:
    """UltraFeedback-binarized style: chosen/rejected messages with `score_chosen`/`score_rejected`; the
    higher-scored reply is `chosen` (a pair scored the other way round is swapped, a tie is a bad row)."""
    high, low = row["score_chosen"], row["score_rejected"]
    if not isinstance(high, (int, float)) or not isinstance(low, (int, float)):
        raise ValueError("'score_chosen' and 'score_rejected' must be numbers")
    if high == low:
        raise ValueError(f"tie: score_chosen == score_rejected == {high} (no preference)")
    if high < low:
        row = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
    return _pair(row)


def _from_prompt(row: dict) -> dict:
    """RL prompts: `prompt` (text or messages); every other column passes through (reward functions get them)."""
    prompt = row["prompt"]
    prompt = _messages(prompt, "prompt") if isinstance(prompt, list) else _text(prompt, "'prompt'")
    return {**{k: v for k, v in row.items() if k != "prompt"}, "prompt": prompt}


def _prompt_from_messages(row: dict) -> dict:
    """RL prompts from a conversation dataset: the turns before the last assistant reply."""
    messages = _messages(row["messages"])
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages:
        raise ValueError("'messages' has no turn before the assistant reply")
    return {"prompt": messages}


# Order matters: the first format whose required columns are all present wins.
FORMATS: dict[str, RowFormat] = {
    f.name: f
    for f in (
        RowFormat("messages", ("messages",), _from_messages),
        RowFormat("sharegpt", ("conversations",), _from_sharegpt),
        RowFormat("alpaca", ("instruction", "output"), _from_alpaca),
        RowFormat("prompt_completion", ("prompt", "completion"), _from_prompt_completion),
        RowFormat("text", ("text",), _from_text),
        RowFormat("ultrafeedback", ("chosen", "rejected", "score_chosen", "score_rejected"), _from_ultrafeedback, "preference"),
        RowFormat("preference", ("chosen", "rejected"), _pair, "preference"),
        RowFormat("hh_rlhf", ("chosen", "rejected"), _from_hh_rlhf, "preference"),
        RowFormat("prompt", ("prompt",), _from_prompt, "prompt"),
        RowFormat("prompt_from_messages", ("messages",), _prompt_from_messages, "prompt"),
        RowFormat("unpaired", ("prompt", "completion", "label"), _from_unpaired, "unpaired"),
    )
}
KINDS = {"sft": "conversations or text", "preference": "preference pairs", "prompt": "RL prompts",
         "unpaired": "unpaired examples (prompt, completion, label) or preference pairs"}
# A stage that needs the key's kind also takes the value's, converted: each preference pair gives one desirable
# (chosen) and one undesirable (rejected) example (TRL's unpair_preference_dataset).
CONVERTIBLE = {"unpaired": "preference"}


def detect_format(columns: list[str], source: str = "dataset", kind: str = "sft") -> RowFormat:
    """The first format of `kind` whose required columns are all present."""
    candidates = [f for f in FORMATS.values() if f.kind in (kind, CONVERTIBLE.get(kind))]
    for row_format in candidates:
        if all(c in columns for c in row_format.required):
            return row_format
    raise DataError(
        f"{source}: not a dataset of {KINDS[kind]}; columns seen: {columns}. Expected one of: "
        + "; ".join(f"{f.name} ({', '.join(f.required)})" for f in candidates)
    )


def normalise(
    ds: Dataset, fmt: str = "auto", on_bad_row: str = "error", source: str = "dataset", kind: str = "sft"
) -> Dataset:
    """Convert rows to TRL's columns (`messages`, `prompt`/`completion` or `text`; `prompt`/`chosen`/`rejected`
    for preference pairs; `prompt` for RL prompts; `prompt`/`completion`/`label` for unpaired examples, pairs
    split in two); other columns are dropped, except for RL prompts."""
    row_format = detect_format(ds.column_names, source, kind) if fmt == "auto" else FORMATS[fmt]
    if row_format.kind not in (kind, CONVERTIBLE.get(kind)):
        raise DataError(
            f"{source}: dataset_format '{row_format.name}' holds {KINDS[row_format.kind]}, this stage needs {KINDS[kind]} "
            f"({', '.join(f.name for f in FORMATS.values() if f.kind in (kind, CONVERTIBLE.get(kind)))})"
        )
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
    out = ds.map(convert, with_indices=True, remove_columns=ds.column_names, desc=f"normalising {row_format.name}")
    if row_format.kind == "preference":  # one column order whatever the source's (mixtures compare layouts)
        out = out.select_columns(["prompt", "chosen", "rejected"])
    if kind == "unpaired":
        if row_format.kind == "preference":
            pairs = len(out)
            # one pair at a time: each pair's two examples stay together (a cap on eval rows keeps both sides)
            out = unpair_preference_dataset(out, batch_size=1, desc="splitting pairs into desirable and undesirable examples")
            logger.info("%s: %d preference pairs -> %d desirable (chosen) and %d undesirable (rejected) examples",
                        source, pairs, pairs, pairs)
        out = out.select_columns(["prompt", "completion", "label"])
    return out


# ----------------------------------------------------------------------------------------------- mixtures
def _layout(ds: Dataset) -> str:
    """Columns and what each holds (text or a list of messages): the parts of a mixture must agree on both."""
    return ", ".join(
        f"{name}: {feature.dtype if isinstance(feature, datasets.Value) else 'messages'}" for name, feature in ds.features.items()
    )


def load_mixture(
    mixture: dict | DatasetMixtureArguments, on_bad_row: str = "error", kind: str = "sft", seed: int = 42, text_sample_by: str = "paragraph"
) -> DatasetDict:
    """Weighted mixture: each dataset is shuffled and cut (or repeated) to weight x rows, then all are
    concatenated, shuffled and optionally split into train/test. `seed` is used unless the mixture sets one;
    an entry's `sample_by` cuts its plain text (default `text_sample_by`)."""
    options = build_options(DatasetMixtureArguments, mixture, "dataset_mixture")  # keys, types, weight > 0
    seed = options.seed if options.seed is not None else seed
    parts, layouts = [], {}
    for i, entry in enumerate(options.datasets):
        where = f"dataset_mixture.datasets[{i}]"
        weight = entry.weight
        source = entry.id or entry.path
        ds = load_source(source, entry.config, entry.split, on_bad_row, text_sample_by=entry.sample_by or text_sample_by)
        if entry.columns:
            missing = [c for c in entry.columns if c not in ds.column_names]
            if missing:
                raise DataError(f"{where} ({source}): columns {missing} not in the dataset; columns seen: {ds.column_names}")
            ds = ds.select_columns(entry.columns)
        ds = normalise(ds, entry.format, on_bad_row, source, kind)
        if len(ds) == 0:
            raise DataError(f"{where} ({source}): no rows left to mix")
        ds = ds.shuffle(seed=seed)
        target = round(len(ds) * weight)
        if target == 0:
            raise ConfigError(f"{where}: weight {weight} keeps 0 of the {len(ds)} rows of {source}")
        repeats, rest = divmod(target, len(ds))
        ds = datasets.concatenate_datasets([ds] * repeats + [ds.select(range(rest))])
        logger.info("mixture: %s -> %d rows (weight %.3g)", source, len(ds), weight)
        layouts.setdefault(_layout(ds), source)
        parts.append(ds)
    if len(layouts) > 1:
        raise DataError(
            "dataset_mixture: the datasets normalise to different layouts ("
            + "; ".join(f"{source}: {layout}" for layout, source in layouts.items())
            + "); mix datasets of one kind"
        )
    combined = datasets.concatenate_datasets(parts).shuffle(seed=seed)
    test_size = options.test_split_size
    if test_size:
        try:
            return combined.train_test_split(test_size=test_size, seed=seed)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"dataset_mixture: test_split_size {test_size!r}: {first_line(err)}") from None
    return DatasetDict({"train": combined})


def load_stage_data(data_args, seed: int = 42, kind: str = "sft") -> DatasetDict:
    """The train (and, when there is one, test) split a stage trains on, normalised to TRL's format for the
    `kind` of data the stage needs (sft, preference or prompt). The held-out split follows `held_out_split`;
    without one, `dataset_test_split_size` holds out a seeded share of train."""
    size = getattr(data_args, "dataset_test_split_size", None)
    sample_by = getattr(data_args, "text_sample_by", "paragraph")
    if data_args.dataset_mixture:
        if size:
            raise ConfigError("dataset_test_split_size: a mixture holds out its own share: set "
                              "dataset_mixture.test_split_size instead")
        dsd = load_mixture(data_args.dataset_mixture, data_args.on_bad_row, kind, seed, sample_by)
        source = "dataset_mixture"
    elif data_args.dataset_name:
        source = data_args.dataset_name
        loaded = load_source(source, data_args.dataset_config, None, data_args.on_bad_row, text_sample_by=sample_by)
        train_split = data_args.dataset_train_split
        if train_split not in loaded:
            _missing_split(source, train_split, list(loaded))
        test_split = held_out_split(source, data_args.dataset_test_split, list(loaded))
        dsd = DatasetDict(
            {
                name: normalise(loaded[split], data_args.dataset_format, data_args.on_bad_row, f"{source}[{split}]", kind)
                for name, split in (("train", train_split), ("test", test_split))
                if split is not None
            }
        )
        if "test" not in dsd and size:
            dsd["train"], dsd["test"] = hold_out(dsd["train"], size, seed, f"{source}[{train_split}]")
    else:
        raise ConfigError("no data: set 'dataset_name' or 'dataset_mixture' in the recipe")
    out = DatasetDict({"train": dsd["train"]})
    if "test" in dsd:
        test = dsd["test"]
        if data_args.eval_max_samples:
            test = test.select(range(min(len(test), data_args.eval_max_samples)))
        out["test"] = test
    logger.info("data: %s: %d train rows, %d eval rows", source, len(out["train"]), len(out["test"]) if "test" in out else 0)
    return out


def dataset_sources(data_args) -> list[str]:
    """The ids or paths a stage's data came from (for cards and lineage)."""
    if data_args.dataset_mixture:
        return [e.get("id") or e.get("path") for e in data_args.dataset_mixture.get("datasets", [])]
    return [data_args.dataset_name] if data_args.dataset_name else []
