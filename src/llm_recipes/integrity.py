"""Run integrity: what a stage records about its recipe, one run per output folder, and an output folder that
is complete or absent.

- The marker (`llm_recipes.json`) records the resolved config (every dataclass field after parsing, less the
  keys that do not change the result: `IGNORED_KEYS`), a fingerprint of the local inputs it names, and a
  hash of both. A finished stage with the same record is skipped, never retrained; with another record it is
  an error naming the changed keys (`--force` redoes it). The same record is kept beside the checkpoints
  (`llm_recipes_run.json`), so a run never continues the checkpoints of another recipe.
- An exclusive lock (`fcntl.flock` on `.<output_dir name>.lock` beside output_dir, held by the main process
  for the stage's life) makes a second run in the same output_dir fail at once, naming the holder's pid.
- The final output is staged: model, tokenizer, card and marker (last) are written to `.<name>.staging/<name>`
  beside output_dir; then the rest of output_dir (checkpoints, logs) is moved into it, and it is renamed onto
  the emptied output_dir. A reader of output_dir sees the final files all at once with the marker, or none of
  them; a kill half-way is finished by the next run (`finish_publish`).
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import hashlib
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from llm_recipes.errors import DataError, RecipeError

logger = logging.getLogger("llm_recipes")

MARKER = "llm_recipes.json"
RUN_RECORD = "llm_recipes_run.json"  # the recipe of the checkpoints in output_dir
FORCE_FLAG = "--force"

# Keys that do not change what a stage produces: where it goes, how it is logged or pushed, how many workers
# prepare the data, how often it checkpoints, whether to resume or start again, the process's own rank
# (`local_rank` differs between the processes of one run), and secrets.
IGNORED_KEYS = {
    "output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter",
    "log_level", "log_level_replica", "log_on_each_node", "report_to", "run_name", "project", "trackio_space_id",
    "disable_tqdm", "push_to_hub", "resume_from_checkpoint", "overwrite_output_dir", "save_strategy", "save_steps",
    "save_total_limit", "save_only_model", "save_on_each_node", "save_safetensors", "dataset_num_proc", "num_proc",
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_persistent_workers", "dataloader_pin_memory",
    "num_sample_generations", "token", "api_key", "password", "secret", "local_rank", "skip_memory_metrics",
}
IGNORED_PREFIXES = ("hub_", "logging_", "push_to_hub", "trackio_")
IGNORED_SUFFIXES = ("_token", "_api_key", "_password", "_secret", "_num_proc")
SECRET_LIKE_KEEP = {"pad_token", "eos_token", "bos_token", "unk_token", "stop_token", "max_new_tokens"}


class RunConflict(RecipeError):
    """The output folder is in use by another run, or holds the work of another recipe."""


# ----------------------------------------------------------------------------------------------- resolved config
def _ignored(key: str) -> bool:
    from llm_recipes.redaction import is_secret_name

    if key in SECRET_LIKE_KEEP:
        return False
    return (key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)
            or is_secret_name(key))


def _plain(value: Any) -> Any:
    """A JSON-stable form of a field value (enums by value, paths and other objects as text)."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def resolved_config(parsed: tuple | list) -> dict[str, Any]:
    """Every field of the parsed dataclasses that can change the result, by name."""
    config: dict[str, Any] = {}
    for instance in parsed:
        if not dataclasses.is_dataclass(instance):
            continue
        for f in dataclasses.fields(instance):
            if f.name.startswith("_") or _ignored(f.name):
                continue
            key = f.name if f.name not in config else f"{type(instance).__name__}.{f.name}"
            config[key] = _plain(getattr(instance, f.name, None))
    return config


def _path_fingerprint(path: Path) -> str:
    """A finished stage's folder by its marker's content (copies compare equal); other files by size and
    modification time, as `datasets` fingerprints local data files (hashing gigabytes would cost minutes)."""
    if path.is_dir() and (path / MARKER).is_file():
        return "marker:" + hashlib.sha256((path / MARKER).read_bytes()).hexdigest()[:16]
    if path.is_file():
        stat = path.stat()
        return f"file:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("checkpoint-", ".")))
        for name in sorted(files):
            stat = (Path(root) / name).stat()
            digest.update(f"{os.path.relpath(os.path.join(root, name), path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return "tree:" + digest.hexdigest()[:16]


def input_fingerprints(config: dict[str, Any]) -> dict[str, str]:
    """A fingerprint of every local file or folder the config names (models, datasets, tokenizers), by key;
    Hub ids are named by the config itself."""
    found: dict[str, str] = {}

    def visit(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(f"{key}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                visit(f"{key}[{i}]", v)
        elif isinstance(value, str) and (os.sep in value or "." in value) and os.path.exists(value):
            found[key] = _path_fingerprint(Path(value))

    for key, value in config.items():
        visit(key, value)
    return found


@dataclasses.dataclass
class RunRecord:
    """What a run is: its resolved config and its inputs' fingerprints."""

    config: dict[str, Any]
    inputs: dict[str, str]

    @property
    def hash(self) -> str:
        text = json.dumps({"config": self.config, "inputs": self.inputs}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {"config_hash": self.hash, "config": self.config, "inputs": self.inputs}

    def changes_from(self, recorded: dict) -> list[str]:
        """The keys whose value differs from a recorded run (a marker or a run record)."""
        old_config, old_inputs = recorded.get("config") or {}, recorded.get("inputs") or {}
        changed = [k for k in sorted(set(old_config) | set(self.config)) if old_config.get(k, "<unset>") != self.config.get(k, "<unset>")]
        changed += [f"{k} (contents)" for k in sorted(set(old_inputs) | set(self.inputs))
                    if old_inputs.get(k) != self.inputs.get(k) and k.split(".")[0].split("[")[0] not in changed]
        return changed


def record_of(parsed: tuple | list) -> RunRecord:
    from llm_recipes.redaction import redact

    config = resolved_config(parsed)
    # redacted as the marker will be (secret-named entries nested in mappings), so the two compare equal
    return RunRecord(redact(config), input_fingerprints(config))


def describe_changes(changed: list[str], recorded: dict, config: dict[str, Any] | None = None) -> str:
    """`'lr' (0.001 -> 0.0005), 'max_steps' (4 -> 6)`: the changed keys with both values where they are short."""
    old, new = recorded.get("config") or {}, config or {}
    parts = []
    for key in changed[:8]:
        values = (old.get(key, "<unset>"), new.get(key, "<unset>"))
        short = all(not isinstance(v, (dict, list)) and len(repr(v)) <= 40 for v in values)
        parts.append(f"'{key}' ({values[0]!r} -> {values[1]!r})" if short and key in new else f"'{key}'")
    return ", ".join(parts) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")


# ----------------------------------------------------------------------------------------------- the current run
_current: dict[str, Any] = {"record": None, "force": False}


def register(parsed: tuple | list, force: bool = False) -> None:
    """Remember the parsed config of this process's stage (called by `parser.run_cli`)."""
    _current["record"] = record_of(parsed)
    _current["force"] = force


def current_record() -> RunRecord | None:
    return _current["record"]


def forced() -> bool:
    return bool(_current["force"])


# ----------------------------------------------------------------------------------------------- lock
_held_locks: dict[str, int] = {}


def lock_path(output_dir: str | Path) -> Path:
    """Beside output_dir, not in it: output_dir is replaced by a rename when the stage finishes."""
    output_dir = Path(output_dir).absolute()
    return output_dir.parent / f".{output_dir.name}.lock"


def acquire_lock(output_dir: str | Path) -> None:
    """Hold an exclusive lock on output_dir for the life of this process; fail at once if another holds it.
    The kernel releases it when the process ends, however it ends."""
    path = lock_path(output_dir)
    if str(path) in _held_locks:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunConflict(f"{output_dir}: another run (pid {holder}) is writing this output_dir; wait for it to "
                          f"end or choose another output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held_locks[str(path)] = fd


def lock_holder(output_dir: str | Path) -> str | None:
    """The pid holding output_dir's lock, or None when it is free (checked without keeping the lock)."""
    path = lock_path(output_dir)
    if str(path) in _held_locks or not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- staged output
def staging_dir(output_dir: str | Path) -> Path:
    """`.<name>.staging/<name>` beside output_dir: the same filesystem (renames are atomic) and the same folder
    name (the card's title)."""
    output_dir = Path(output_dir).absolute()
    return output_dir.parent / f".{output_dir.name}.staging" / output_dir.name


def publish(output_dir: str | Path) -> None:
    """Make the staged final folder output_dir: move what output_dir holds (checkpoints, logs) into the staged
    folder, then rename it onto the emptied output_dir. Only for a staged folder with its marker."""
    output_dir = Path(output_dir).absolute()
    staged = staging_dir(output_dir)
    if not (staged / MARKER).is_file():
        raise RuntimeError(f"{staged}: no marker; the final save did not finish")
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            target = staged / entry.name
            if target.exists() or target.is_symlink():  # the staged file is the final one
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            else:
                os.rename(entry, target)
    os.replace(staged, output_dir)  # rename(2) replaces an empty directory
    staged.parent.rmdir()


def finish_publish(output_dir: str | Path) -> None:
    """After a kill: a staged folder with its marker is published; one without is a cut-off save, removed
    (nothing had been moved into it yet)."""
    staged = staging_dir(output_dir)
    if (staged / MARKER).is_file():
        logger.info("finishing the interrupted final save of %s", output_dir)
        publish(output_dir)
    elif staged.parent.is_dir():
        logger.info("removing the unfinished final save %s", staged)
        shutil.rmtree(staged.parent)


def clear_staging(output_dir: str | Path) -> str:
    """An empty staging folder for the final save (a leftover of a killed save removed); its path."""
    staged = staging_dir(output_dir)
    if staged.parent.is_dir():
        shutil.rmtree(staged.parent)
    staged.mkdir(parents=True)
    return str(staged)


# ----------------------------------------------------------------------------------------------- stage start
def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise DataError(f"{path}: not valid JSON (cut off by a kill?); remove it or rerun with --force") from None


def check_output_dir(output_dir: str | Path, record: RunRecord, *, force: bool, main_process: bool) -> bool:
    """Decide what this run does with output_dir; True when it holds this recipe's finished output (skip).

    A finished output of another recipe, or checkpoints of another recipe, is a RunConflict naming the
    changed keys; with `force` the main process removes output_dir instead and the run starts afresh."""
    output_dir = Path(output_dir)
    if main_process:
        finish_publish(output_dir)
    marker = read_json(output_dir / MARKER)
    run_record = read_json(output_dir / RUN_RECORD)
    if force and (marker is not None or run_record is not None or output_dir.is_dir()):
        if main_process and output_dir.is_dir():
            logger.info("--force: removing the previous output %s", output_dir)
            shutil.rmtree(output_dir)
        return False
    if marker is not None:
        if "config_hash" not in marker:
            logger.warning("%s: finished, but its marker has no recipe record (an older version wrote it); skipped "
                           "without checking the recipe (--force redoes it)", output_dir)
            return True
        changed = record.changes_from(marker)
        if not changed:
            return True
        raise RunConflict(f"{output_dir}: finished with another recipe; changed: "
                          f"{describe_changes(changed, marker, record.config)}. Use another output_dir, or rerun "
                          f"with --force to redo it")
    if run_record is not None:
        changed = record.changes_from(run_record)
        if changed:
            raise RunConflict(f"{output_dir}: holds checkpoints of another recipe; changed: "
                              f"{describe_changes(changed, run_record, record.config)}. Use another output_dir, "
                              f"or rerun with --force to start afresh")
    return False


def write_run_record(output_dir: str | Path, record: RunRecord) -> None:
    from llm_recipes.hub import write_text_atomic

    write_text_atomic(Path(output_dir) / RUN_RECORD, json.dumps(record.as_dict(), indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------------- checkpoints
FULL_CHECK_BYTES = 64 << 20


def _saved_to_the_end(checkpoint: str, written_last: str) -> bool:
    try:
        json.loads(Path(checkpoint, written_last).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def complete_checkpoints(output_dir: str | Path, written_last: str) -> list[str]:
    """The `checkpoint-N` folders of output_dir in step order (transformers' `sort_checkpoints`) whose file
    `written_last` (the one the trainer writes last: Trainer's trainer_state.json) is whole."""
    from transformers.trainer_utils import sort_checkpoints  # here: the pipeline runner imports this module, not torch

    if not os.path.isdir(output_dir):
        return []
    return [path for path in sort_checkpoints(str(output_dir)) if _saved_to_the_end(path, written_last)]


def last_complete_checkpoint(output_dir: str | Path, written_last: str) -> str | None:
    """transformers' `get_last_checkpoint`, less a newest folder that a kill cut off while saving (it takes the
    newest `checkpoint-N` whatever it holds): then the newest complete one before it. Nothing is moved or deleted:
    every process of a distributed run calls this at once, and the folder is rewritten when training reaches
    that step again."""
    from transformers.trainer_utils import get_last_checkpoint

    if not os.path.isdir(output_dir):
        return None
    newest = get_last_checkpoint(str(output_dir))
    if newest is None or _saved_to_the_end(newest, written_last):
        return newest
    logger.warning("checkpoint %s is incomplete (killed while saving?); skipped", newest)
    earlier = complete_checkpoints(output_dir, written_last)
    return earlier[-1] if earlier else None


def check_checkpoint_files(folder: str | Path) -> None:
    """Every file of a checkpoint is whole, else a one-line DataError naming it: torch's zip archives
    (.pt/.pth/.bin/.pkl, CRC-checked), safetensors (header and data length), JSON. Trainer and accelerate
    load some of these inside a bare try (accelerate: RNG states, silently skipped) or with a traceback."""
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = path.suffix
        problem = None
        try:
            if suffix in (".pt", ".pth", ".bin", ".pkl"):
                if zipfile.is_zipfile(path):
                    with zipfile.ZipFile(path) as archive:  # reads the index at the end: a cut file fails here
                        # CRCs of small files only (RNG, scheduler): reading optimizer states of GBs twice costs minutes
                        bad = archive.testzip() if path.stat().st_size < FULL_CHECK_BYTES else None
                    problem = f"damaged member {bad}" if bad else None
                elif path.stat().st_size == 0:
                    problem = "empty"
                else:
                    problem = "not a complete torch archive"
            elif suffix == ".safetensors":
                with open(path, "rb") as fh:
                    header_len = int.from_bytes(fh.read(8), "little")
                    header = json.loads(fh.read(header_len))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                if path.stat().st_size < 8 + header_len + end:
                    problem = "truncated"
            elif suffix == ".json":
                json.loads(path.read_text())
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            problem = f"unreadable ({type(err).__name__})"
        if problem:
            raise DataError(f"{path}: checkpoint file is corrupted ({problem}); delete {folder} to resume from an "
                            f"earlier checkpoint, or rerun with --force to start afresh")


def begin_training_stage(output_dir: str, *, main_process: bool, fallback_parsed: tuple = ()) -> bool:
    """Lock output_dir (main process), finish an interrupted final save, and decide: True when the stage's
    output is already complete with this recipe."""
    if current_record() is None:  # the stage's main() called without run_cli (tests): its training config
        _current["record"] = record_of(fallback_parsed)
    if main_process:
        acquire_lock(output_dir)
    return check_output_dir(output_dir, current_record(), force=forced(), main_process=main_process)


def record_run(output_dir: str | Path) -> None:
    """Keep this run's recipe beside the checkpoints it is about to write (main process, when training starts:
    a stage that stops on bad input before then leaves no file behind)."""
    record = current_record()
    if record is not None:
        write_run_record(output_dir, record)


__all__ = ["RunConflict", "RunRecord", "acquire_lock", "begin_training_stage", "check_checkpoint_files",
           "check_output_dir", "complete_checkpoints", "current_record", "finish_publish", "last_complete_checkpoint",
           "lock_holder", "publish", "record_of", "register", "resolved_config", "staging_dir"]
