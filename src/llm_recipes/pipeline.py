"""Run a pipeline recipe: stages in order, each its own `accelerate launch` process of its stage script.

A stage whose output folder carries a completion marker made by the same recipe (resolved config and inputs,
see `llm_recipes.integrity`) is skipped, so a re-run after a failure or a kill continues at the first
unfinished stage; a marker made by another recipe is an error naming the changed keys (`force` redoes the
stage). `from_stage`/`until_stage` run a slice. Each stage runs in its own process group: SIGTERM/SIGINT to
the runner reach the whole stage, and a stage dies with its runner. A stage's own output (library logs, progress
bars) goes to `<run folder>/logs/<stage>.log`; the terminal gets one line per stage and a table at the end.

Paths: outputs and other relative paths are relative to the caller's directory (nothing changes directory);
a pipeline's script, config and accelerate_config are taken from the caller's directory when there, else from
the files shipped with the package (`PROJECT_ROOT`); an input path in a stage recipe that exists beside the
recipe is taken from there (`resolve_recipe_paths`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from llm_recipes import PROJECT_ROOT, integrity
from llm_recipes.errors import ConfigError
from llm_recipes.hub import read_marker, write_text_atomic
from llm_recipes.parser import build_options
from llm_recipes.stages import DEFAULT_ACCELERATE_CONFIG

LOG_TAIL_LINES = 25  # of a failed stage's log, printed with the log's path


@dataclass
class Stage:
    name: str
    script: str
    config: str
    output: str
    accelerate_config: str = DEFAULT_ACCELERATE_CONFIG
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        """`accelerate launch --config_file X scripts/<stage>.py --config recipe.yaml [args]`, with this Python."""
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", self.accelerate_config,
                self.script, "--config", self.config, *self.args]


@dataclass
class Pipeline:
    name: str
    stages: list[Stage]
    env: dict[str, str]
    summary_path: str | None = None


@dataclass
class PipelineArguments:
    """A pipeline YAML as written (built by `llm_recipes.parser.build_options`); `load_pipeline` makes it a Pipeline."""

    stages: list[dict] = field(metadata={"help": "The stages in order: {name, script, config, output, "
                                         "accelerate_config, args, env}."})
    name: str | None = field(default=None, metadata={"help": "Pipeline name (default: the file's stem)."})
    description: str | None = field(default=None, metadata={"help": "What the pipeline does."})
    accelerate_config: str = field(default=DEFAULT_ACCELERATE_CONFIG, metadata={"help": "Default launcher config."})
    env: dict[str, str] = field(default_factory=dict, metadata={"help": "Environment of every stage."})
    summary: str | None = field(default=None, metadata={"help": "Where the run summary (JSON) is written."})


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline YAML; every error names the file and the stage."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise ConfigError(f"{path}: a pipeline needs a non-empty 'stages' list")
    spec = build_options(PipelineArguments, spec, str(path))  # unknown keys and types, named with the file
    stages, names = [], set()
    for i, entry in enumerate(spec.stages):
        where = f"{path}: stages[{i}]"
        if isinstance(entry, dict):  # the pipeline's accelerate_config unless the stage names its own
            entry = {"accelerate_config": spec.accelerate_config, **entry}
        stage = build_options(Stage, entry, where)  # unknown or missing keys; args and env values as strings
        if stage.name in names:
            raise ConfigError(f"{where}: duplicate stage name '{stage.name}'")
        names.add(stage.name)
        for key in ("script", "config", "accelerate_config"):
            if not (PROJECT_ROOT / getattr(stage, key)).is_file() and not Path(getattr(stage, key)).is_file():
                raise ConfigError(f"{where} ({stage.name}): {key} '{getattr(stage, key)}' not found")
        stages.append(stage)
    return Pipeline(spec.name or path.stem, stages, spec.env, spec.summary)


def select_stages(pipeline: Pipeline, from_stage: str | None = None, until_stage: str | None = None) -> list[Stage]:
    names = [s.name for s in pipeline.stages]
    for name in (from_stage, until_stage):
        if name is not None and name not in names:
            raise ConfigError(f"pipeline {pipeline.name}: no stage '{name}' (stages: {', '.join(names)})")
    start = names.index(from_stage) if from_stage else 0
    stop = names.index(until_stage) + 1 if until_stage else len(names)
    return pipeline.stages[start:stop]


def locate(value: str, *folders: Path | str) -> str:
    """A relative path as given when it exists from the caller's directory, else the first folder in which it
    exists, else as given (an output, or an error the stage reports). Absolute paths stay as they are."""
    if os.path.isabs(value) or os.path.exists(value):
        return value
    for folder in folders:
        candidate = Path(folder) / value
        if candidate.exists():
            return str(candidate)
    return value


# Keys whose values a stage writes, never reads: never taken from beside the recipe, even where such a path exists.
OUTPUT_KEYS = {"output_dir", "logging_dir", "hub_model_id", "hub_dataset_id", "run_name"}


def looks_like_a_path(value: str) -> bool:
    """A relative path with a folder or a file extension (`data/x.jsonl`, `constitution.json`): a bare word is a
    setting (`loss_type: [sigmoid, sft]`), even where a folder of that name sits beside the recipe."""
    return (bool(value) and not os.path.isabs(value) and "://" not in value and "\n" not in value
            and ("/" in value or bool(Path(value).suffix)))


def resolve_recipe_paths(config: Any, recipe_path: str | Path) -> Any:
    """A recipe's values with each relative input path that exists beside the recipe (e.g. `constitution:
    constitution.json`) made absolute there; every other value, outputs and Hub ids included, as it is (relative
    to the caller's directory). Nested mappings and lists are followed (benchmark `data_files`, sources)."""
    folder = Path(recipe_path).resolve().parent

    def resolve(value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, key) for v in value]
        if (isinstance(value, str) and key not in OUTPUT_KEYS and looks_like_a_path(value)
                and (folder / value).exists()):
            return str(folder / value)
        return value

    return {k: resolve(v, k) for k, v in config.items()} if isinstance(config, dict) else config


def located(stage: Stage) -> Stage:
    """The stage with its script, recipe and accelerate config found: in the caller's directory, else among the
    files shipped with the package."""
    return replace(stage, script=locate(stage.script, PROJECT_ROOT), config=locate(stage.config, PROJECT_ROOT),
                   accelerate_config=locate(stage.accelerate_config, PROJECT_ROOT))


def with_seed(stage: Stage, seed: int | None) -> Stage:
    """The stage with `--seed` appended when its script's config classes have a `seed` field."""
    from llm_recipes.stages import load_script

    if seed is None:
        return stage
    classes = getattr(load_script(stage.script), "CONFIG_CLASSES", ())
    if not any("seed" in {f.name for f in fields(c)} for c in classes):
        return stage
    return replace(stage, args=[*stage.args, "--seed", str(seed)])


def log_folder(pipeline: Pipeline) -> Path:
    """`<run folder>/logs`: beside the summary file, else in the folder that holds every stage's output."""
    if pipeline.summary_path:
        return Path(pipeline.summary_path).parent / "logs"
    return Path(os.path.commonpath([os.path.abspath(s.output) for s in pipeline.stages])) / "logs"


def run_pipeline(
    path: str | Path, from_stage: str | None = None, until_stage: str | None = None, force: bool = False,
    extra_env: dict[str, str] | None = None, verbose: bool = False, seed: int | None = None, redo_changed: bool = False,
) -> list[dict]:
    """Run the selected stages from the caller's directory; returns one record per stage (and saves them).
    Each stage's output goes to its log file (`verbose`: to the terminal instead). `seed`: `--seed` for every
    stage whose recipe has one (the toy world's data, sampling, initialisation, shuffling). A stage finished with
    another recipe is an error, or with `redo_changed` (outputs derived from a caller's recipe) redone, with the
    stages after it."""
    pipeline = load_pipeline(path)
    stages = [with_seed(located(s), seed) for s in select_stages(pipeline, from_stage, until_stage)]
    env = {**os.environ, **pipeline.env, **(extra_env or {})}
    logs = log_folder(pipeline)
    records = []
    total_start = time.time()
    print(f"pipeline {pipeline.name}: {len(stages)} stage(s): {' -> '.join(s.name for s in stages)}", flush=True)
    if not verbose:
        print(f"each stage's own output goes to {os.path.relpath(logs)}/<stage>.log", flush=True)
    width = max(len(s.name) for s in stages)
    earlier = _earlier_seconds(pipeline)
    for number, stage in enumerate(stages, start=1):
        prefix = f"[{number:>{len(str(len(stages)))}}/{len(stages)}] {stage.name:<{width}}"
        output = Path(stage.output)
        if integrity.lock_holder(output) is None:  # no stage is writing it: finish a final save cut by a kill
            integrity.finish_publish(output)
        marker = read_marker(output)
        if marker is not None and not force:
            try:
                check_finished_stage(stage, marker, {**env, **stage.env})
            except ConfigError as err:
                if not redo_changed:
                    raise
                print(f"{prefix}  {str(err).split('. Rerun with --force')[0]}: redoing it and the stages after it", flush=True)
                force = True
        if marker is not None and not force:
            print(f"{prefix}  skipped (finished with the same recipe: {stage.output})", flush=True)
            record = {"stage": stage.name, "status": "skipped", "seconds": 0.0, "output": stage.output, "result": marker}
            if (stage.name, marker.get("finished")) in earlier:  # the run that made this output took so long
                record["seconds_when_ran"] = earlier[stage.name, marker.get("finished")]
            records.append(record)
            continue
        if marker is not None:  # --force on a finished stage: start afresh rather than resume its old checkpoints
            holder = integrity.lock_holder(output)
            if holder is not None:
                raise integrity.RunConflict(f"{stage.output}: another run (pid {holder}) is writing this output_dir")
            print(f"{prefix}  --force: removing the previous output {stage.output}", flush=True)
            shutil.rmtree(output)
        log = None if verbose else logs / f"{stage.name}.log"
        if verbose:
            print(f"{prefix}  {' '.join(stage.command()[2:])}", flush=True)
        else:
            print(f"{prefix}  running ...", end="", flush=True)
        start = time.time()
        returncode = run_stage_process(stage.command(), env={**env, **stage.env}, log=log)
        seconds = time.time() - start
        if returncode != 0:
            print(f" FAILED after {seconds:.1f}s" if not verbose else f"{prefix}  FAILED after {seconds:.1f}s", flush=True)
            records.append({"stage": stage.name, "status": "failed", "seconds": seconds, "output": stage.output})
            _save_summary(pipeline, records, total_start)
            if log is not None:
                print(_log_tail(log), file=sys.stderr, flush=True)
            raise SystemExit(f"pipeline {pipeline.name}: stage '{stage.name}' failed (exit {returncode})"
                             + (f"; its log: {log}" if log else "") + "; fix it and re-run: finished stages are skipped")
        marker = read_marker(output)
        if marker is None:
            raise SystemExit(f"pipeline {pipeline.name}: stage '{stage.name}' exited 0 but wrote no completion marker "
                             f"in {stage.output} (is 'output' the stage's output_dir?)")
        records.append({"stage": stage.name, "status": "ran", "seconds": seconds, "output": stage.output, "result": marker})
        done = f"done in {seconds:.1f}s -> {stage.output}"
        print(f" {done}" if not verbose else f"{prefix}  {done}", flush=True)
    _save_summary(pipeline, records, total_start)
    print_summary(pipeline, records, time.time() - total_start)
    return records


def _log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    tail = [line.rsplit("\r", 1)[-1] for line in lines[-LOG_TAIL_LINES:]]  # a progress bar's last state only
    return f"--- last {len(tail)} lines of {log} ---\n" + "\n".join(tail) + f"\n--- (whole log: {log}) ---"


def stage_record(stage: Stage, env: dict[str, str]) -> integrity.RunRecord | None:
    """The recipe record the stage would write in its marker: its script's CONFIG_CLASSES parsed from its
    recipe and args, exactly as the stage parses them (None for a script without CONFIG_CLASSES)."""
    from llm_recipes.parser import parse_config
    from llm_recipes.stages import load_script

    stage = located(stage)
    classes = getattr(load_script(stage.script), "CONFIG_CLASSES", None)
    if classes is None:
        return None
    saved_env = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return integrity.record_of(parse_config(classes, ["--config", stage.config, *stage.args]))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def check_finished_stage(stage: Stage, marker: dict, env: dict[str, str]) -> None:
    """A finished stage is skipped only when its marker records the recipe the pipeline now asks for."""
    if "config_hash" not in marker:
        print(f"  {stage.name}: its marker has no recipe record (an older version wrote it); the recipe is not "
              f"checked (--force redoes the stage)", flush=True)
        return
    record = stage_record(stage, env)
    changed = record.changes_from(marker) if record is not None else []
    if changed:
        raise ConfigError(f"stage '{stage.name}': {stage.output} was finished with another recipe; changed: "
                          f"{integrity.describe_changes(changed, marker, record.config)}. Rerun with --force to redo it (and the "
                          f"stages after it)")


# The stage's first process, the leader of its process group: stdlib only (it starts at once). It asks Linux for
# SIGTERM when the runner dies (prctl PR_SET_PDEATHSIG, however the runner dies), and on SIGTERM or SIGINT
# signals its whole group (the launcher, every rank, their workers), gives them STOP_GRACE_S to end, then kills
# what is left: nothing of a stage outlives its runner. PDEATHSIG on the launcher alone would leave its children.
STAGE_GUARD = """
import ctypes, os, signal, subprocess, sys, time
runner, grace, command = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
deadline = []
def stop(signum, _frame=None):
    if not deadline:
        deadline.append(time.monotonic() + grace)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.killpg(0, signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
child = subprocess.Popen(command)
if os.getppid() != runner:
    stop(signal.SIGTERM)
while True:
    try:
        code = child.wait(timeout=1.0)
        break
    except subprocess.TimeoutExpired:
        if deadline and time.monotonic() > deadline[0]:
            os.killpg(0, signal.SIGKILL)
if deadline:
    os.killpg(0, signal.SIGKILL)
sys.exit(code if code >= 0 else 128 - code)
"""
STOP_GRACE_S = 30


def run_stage_process(command: list[str], env: dict[str, str], log: Path | None = None) -> int:
    """Run a stage in its own session (process group) under STAGE_GUARD, in the caller's directory, and wait.
    Its stdout and stderr go to `log` (a new file) when given. SIGTERM/SIGINT sent to the runner go to the
    stage's whole group; the runner then waits for the stage to end and exits 128 + signal. If the runner dies
    without that chance (SIGKILL), the guard stops the stage."""
    guarded = [sys.executable, "-c", STAGE_GUARD, str(os.getpid()), str(STOP_GRACE_S), *command]
    with contextlib.ExitStack() as files:
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = files.enter_context(open(log, "w"))
        proc = subprocess.Popen(guarded, env=env, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT if out else None)
    stopping: list[int] = []

    def forward(signum, _frame):
        stopping.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        returncode = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        raise SystemExit(128 + stopping[0])  # the runner was asked to stop: so it does, once its stage has ended
    return returncode


def _earlier_seconds(pipeline: Pipeline) -> dict[tuple[str, str], float]:
    """(stage, its marker's `finished`) -> the seconds the stage took when it ran, from the pipeline's last summary
    (a skipped stage keeps its time there, so a re-run does not lose it)."""
    path = Path(pipeline.summary_path) if pipeline.summary_path else None
    try:
        records = json.loads(path.read_text())["stages"] if path and path.is_file() else []
    except (ValueError, KeyError, TypeError):  # a summary of another version or a torn file: no earlier times
        return {}
    out = {}
    for r in records:
        seconds = r.get("seconds") if r.get("status") == "ran" else r.get("seconds_when_ran")
        finished = (r.get("result") or {}).get("finished") if isinstance(r.get("result"), dict) else None
        if seconds is not None and finished:
            out[r["stage"], finished] = seconds
    return out


def _save_summary(pipeline: Pipeline, records: list[dict], start: float) -> None:
    if pipeline.summary_path:
        summary = {"pipeline": pipeline.name, "total_seconds": time.time() - start, "stages": records}
        write_text_atomic(Path(pipeline.summary_path), json.dumps(summary, indent=2, default=str) + "\n")


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# Per stage (the `stage` of its marker), the figure a newcomer looks at first: (label, metric keys).
KEY_FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pretrain": ("validation perplexity", ("eval_perplexity_before", "eval_perplexity_after")),
    "sft": ("eval loss", ("eval_loss",)),
    "reward": ("pairwise accuracy", ("eval_accuracy",)),
    "dpo": ("reward accuracy", ("eval_rewards/accuracies",)),
    "orpo": ("reward accuracy", ("eval_rewards/accuracies",)),
    "simpo": ("reward accuracy", ("eval_rewards/accuracies",)),
    "kto": ("eval loss", ("eval_loss",)),
    "distill": ("parameters, teacher -> student", ("teacher_parameters", "student_parameters")),
    "ppo": ("reward, KL (last updates)", ("final_scores", "final_kl")),
}


def key_figure(result: dict) -> str:
    """The figure that matters in a stage's completion marker, on one short line ('' when the marker has none)."""
    stage, metrics = result.get("stage"), result.get("metrics") or {}
    if stage in KEY_FIGURES:
        label, keys = KEY_FIGURES[stage]
        values = [_number(metrics[k]) for k in keys if k in metrics]
        if values:
            return f"{label} {' -> '.join(values) if stage in ('pretrain', 'distill') else ', '.join(values)}"
    if stage == "toy_data" and isinstance(result.get("rows"), dict):
        return f"{sum(v for v in result['rows'].values() if isinstance(v, int))} rows in {len(result['rows'])} datasets"
    if stage == "curate" and isinstance(result.get("totals"), dict):
        totals = result["totals"]
        return f"kept {totals.get('kept')} of {totals.get('input')} documents"
    if stage == "tokenizer" and "bytes_per_token" in result:
        return f"vocab {result.get('vocab_size')}, {_number(result['bytes_per_token'])} bytes/token"
    if stage == "cai" and isinstance(result.get("stats"), dict):
        stats = result["stats"]
        return ", ".join(f"{k} {stats[k]}" for k in ("prompts", "revised", "sft_rows") if k in stats)
    if stage == "sft" and "train_loss" in metrics:  # an SFT run without held-out data
        return f"train loss {_number(metrics['train_loss'])}"
    if stage == "evaluate":
        return _evaluate_figure(result) or f"{len(result.get('models') or [])} models compared: report.html"
    if stage == "toy_users":
        return (f"{metrics.get('requests')} requests, {metrics.get('thumbs_up')} up / {metrics.get('thumbs_down')} down, "
                f"{metrics.get('choices')} choices")
    if stage == "update" and isinstance(result.get("gates"), list):
        moved = sorted(result["gates"], key=lambda g: -abs(g.get("delta") or 0))[:2]  # the gates that moved most
        return ", ".join(f"{g['metric'].split('/')[-1]} {_number(g['served'])} -> {_number(g['new'])}" for g in moved)
    if stage == "export":
        return ", ".join(f"{k.removesuffix('_perplexity')} ppl {_number(v)}" for k, v in metrics.items()
                         if k.endswith("_perplexity"))
    return _headline(result)


# The benchmark metric an evaluate stage's table line shows, the first of these any benchmark reports.
HEADLINE_METRICS = ("refusal_rate", "exact_match", "acc_norm", "acc", "pass@1", "word_perplexity")


def _evaluate_figure(result: dict) -> str:
    """`metric: model value, ...` for the first headline metric an evaluate marker's benchmarks report."""
    per_model = result.get("benchmarks") or {}
    for metric in HEADLINE_METRICS:
        values = []
        for model, benchmarks in per_model.items():
            found = [value for figures in (benchmarks.values() if isinstance(benchmarks, dict) else [])
                     if isinstance(figures, dict) for key, value in figures.items()
                     if key.split(",")[0] == metric and isinstance(value, (int, float))]
            if found:  # the first benchmark's figure: one per model
                values.append(f"{os.path.basename(str(model).rstrip('/'))} {_number(found[0])}")
        if values:
            line = f"{metric}: {', '.join(values)}"
            return line if len(line) <= 70 else line[:67] + "..."
    return ""


def _headline(result: dict) -> str:
    """The figures a stage's marker carries, on one line (for stages without a key figure), cut at 70 characters."""
    keys = ("rows", "vocab_size", "bytes_per_token", "parameters", "metrics", "results")
    parts = []
    for key in keys:
        if key in result:
            value = result[key]
            if isinstance(value, float):
                value = f"{value:.3g}"
            elif isinstance(value, dict):
                value = json.dumps(value, default=lambda v: round(v, 4) if isinstance(v, float) else str(v))
            parts.append(f"{key}={value}")
    line = "; ".join(parts)
    return line if len(line) <= 70 else line[:67] + "..."


def summary_table(records: list[dict]) -> str:
    """stage | status | time | the figure that matters | output, as aligned plain-text columns."""
    rows = [("stage", "status", "time", "result", "output")]
    rows += [(r["stage"], r["status"], f"{r['seconds']:.0f}s", key_figure(r.get("result") or {}), r["output"])
             for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(cell.ljust(w) if i != 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))),
                        row[4]]) for row in rows]
    lines.insert(1, "  ".join(["-" * w for w in widths] + ["-" * 6]))
    return "\n".join(lines)


def print_summary(pipeline: Pipeline, records: list[dict], total_seconds: float) -> None:
    print(f"\npipeline {pipeline.name}: {sum(r['status'] == 'ran' for r in records)} stage(s) ran, "
          f"{sum(r['status'] == 'skipped' for r in records)} skipped, {total_seconds:.0f}s in all\n")
    print(summary_table(records))
    if pipeline.summary_path:
        print(f"\n(saved to {pipeline.summary_path}; each stage's log: {log_folder(pipeline)}/<stage>.log)")
