"""Run a pipeline recipe: stages in order, each its own `accelerate launch` process of its stage script.

A stage whose output folder carries a completion marker made by the same recipe (resolved config and inputs,
see `llm_recipes.integrity`) is skipped, so a re-run after a failure or a kill continues at the first
unfinished stage; a marker made by another recipe is an error naming the changed keys (`force` redoes the
stage). `from_stage`/`until_stage` run a slice. Each stage runs in its own process group: SIGTERM/SIGINT to
the runner reach the whole stage, and a stage dies with its runner.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llm_recipes import REPO_ROOT
from llm_recipes import integrity
from llm_recipes.errors import ConfigError
from llm_recipes.hub import read_marker, write_text_atomic

DEFAULT_ACCELERATE_CONFIG = "accelerate_configs/single.yaml"
STAGE_KEYS = {"name", "script", "config", "output", "accelerate_config", "args", "env"}
PIPELINE_KEYS = {"name", "description", "accelerate_config", "env", "stages", "summary"}


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


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline YAML; every error names the file and the stage."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise ConfigError(f"{path}: a pipeline needs a non-empty 'stages' list")
    if set(spec) - PIPELINE_KEYS:
        raise ConfigError(f"{path}: unknown key '{sorted(set(spec) - PIPELINE_KEYS)[0]}' (allowed: {sorted(PIPELINE_KEYS)})")
    default_accelerate = spec.get("accelerate_config", DEFAULT_ACCELERATE_CONFIG)
    stages, names = [], set()
    for i, entry in enumerate(spec["stages"]):
        where = f"{path}: stages[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping")
        if set(entry) - STAGE_KEYS:
            raise ConfigError(f"{where}: unknown key '{sorted(set(entry) - STAGE_KEYS)[0]}' (allowed: {sorted(STAGE_KEYS)})")
        for key in ("name", "script", "config", "output"):
            if key not in entry:
                raise ConfigError(f"{where}: missing '{key}'")
        if entry["name"] in names:
            raise ConfigError(f"{where}: duplicate stage name '{entry['name']}'")
        names.add(entry["name"])
        stage = Stage(
            name=entry["name"], script=entry["script"], config=entry["config"], output=entry["output"],
            accelerate_config=entry.get("accelerate_config", default_accelerate),
            args=[str(a) for a in entry.get("args", [])], env={k: str(v) for k, v in (entry.get("env") or {}).items()},
        )
        for key in ("script", "config", "accelerate_config"):
            if not (REPO_ROOT / getattr(stage, key)).is_file() and not Path(getattr(stage, key)).is_file():
                raise ConfigError(f"{where} ({stage.name}): {key} '{getattr(stage, key)}' not found")
        stages.append(stage)
    return Pipeline(spec.get("name", path.stem), stages, {k: str(v) for k, v in (spec.get("env") or {}).items()},
                    spec.get("summary"))


def select_stages(pipeline: Pipeline, from_stage: str | None = None, until_stage: str | None = None) -> list[Stage]:
    names = [s.name for s in pipeline.stages]
    for name in (from_stage, until_stage):
        if name is not None and name not in names:
            raise ConfigError(f"pipeline {pipeline.name}: no stage '{name}' (stages: {', '.join(names)})")
    start = names.index(from_stage) if from_stage else 0
    stop = names.index(until_stage) + 1 if until_stage else len(names)
    return pipeline.stages[start:stop]


def run_pipeline(
    path: str | Path, from_stage: str | None = None, until_stage: str | None = None, force: bool = False,
    extra_env: dict[str, str] | None = None,
) -> list[dict]:
    """Run the selected stages from the repository root; returns one record per stage (and saves them)."""
    pipeline = load_pipeline(path)
    stages = select_stages(pipeline, from_stage, until_stage)
    env = {**os.environ, **pipeline.env, **(extra_env or {})}
    records = []
    total_start = time.time()
    print(f"pipeline {pipeline.name}: {len(stages)} stage(s): {' -> '.join(s.name for s in stages)}", flush=True)
    for number, stage in enumerate(stages, start=1):
        output = REPO_ROOT / stage.output
        if integrity.lock_holder(output) is None:  # no stage is writing it: finish a final save cut by a kill
            integrity.finish_publish(output)
        marker = read_marker(output)
        if marker is not None and not force:
            check_finished_stage(stage, marker, {**env, **stage.env})
            print(f"[{number}/{len(stages)}] {stage.name}: output complete in {stage.output} (same recipe), skipped",
                  flush=True)
            records.append({"stage": stage.name, "status": "skipped", "seconds": 0.0, "output": stage.output, "result": marker})
            continue
        if marker is not None:  # --force on a finished stage: start afresh rather than resume its old checkpoints
            holder = integrity.lock_holder(output)
            if holder is not None:
                raise integrity.RunConflict(f"{stage.output}: another run (pid {holder}) is writing this output_dir")
            print(f"[{number}/{len(stages)}] {stage.name}: --force: removing the previous output {stage.output}", flush=True)
            shutil.rmtree(output)
        print(f"[{number}/{len(stages)}] {stage.name}: {' '.join(stage.command()[2:])}", flush=True)
        start = time.time()
        returncode = run_stage_process(stage.command(), env={**env, **stage.env}, cwd=REPO_ROOT)
        seconds = time.time() - start
        if returncode != 0:
            records.append({"stage": stage.name, "status": "failed", "seconds": seconds, "output": stage.output})
            _save_summary(pipeline, records, total_start)
            raise SystemExit(f"pipeline {pipeline.name}: stage '{stage.name}' failed (exit {returncode}); "
                             f"fix it and re-run: finished stages are skipped")
        marker = read_marker(REPO_ROOT / stage.output)
        if marker is None:
            raise SystemExit(f"pipeline {pipeline.name}: stage '{stage.name}' exited 0 but wrote no completion marker "
                             f"in {stage.output} (is 'output' the stage's output_dir?)")
        records.append({"stage": stage.name, "status": "ran", "seconds": seconds, "output": stage.output, "result": marker})
        print(f"[{number}/{len(stages)}] {stage.name}: done in {seconds:.1f}s -> {stage.output}", flush=True)
    _save_summary(pipeline, records, total_start)
    print_summary(pipeline, records, time.time() - total_start)
    return records


def stage_record(stage: Stage, env: dict[str, str]) -> integrity.RunRecord | None:
    """The recipe record the stage would write in its marker: its script's CONFIG_CLASSES parsed from its
    recipe and args, exactly as the stage parses them (None for a script without CONFIG_CLASSES)."""
    from llm_recipes.configs import parse_config

    script = REPO_ROOT / stage.script if (REPO_ROOT / stage.script).is_file() else Path(stage.script)
    spec = importlib.util.spec_from_file_location(f"_llm_recipes_stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # stage scripts run their stage only under __main__
    classes = getattr(module, "CONFIG_CLASSES", None)
    if classes is None:
        return None
    saved_env = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        with contextlib.chdir(REPO_ROOT):
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


def run_stage_process(command: list[str], env: dict[str, str], cwd: Path | str) -> int:
    """Run a stage in its own session (process group) under STAGE_GUARD and wait. SIGTERM/SIGINT sent to the
    runner go to the stage's whole group; the runner then waits for the stage to end and exits 128 + signal.
    If the runner dies without that chance (SIGKILL), the guard stops the stage."""
    guarded = [sys.executable, "-c", STAGE_GUARD, str(os.getpid()), str(STOP_GRACE_S), *command]
    proc = subprocess.Popen(guarded, env=env, cwd=cwd, start_new_session=True)
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


def _save_summary(pipeline: Pipeline, records: list[dict], start: float) -> None:
    if pipeline.summary_path:
        summary = {"pipeline": pipeline.name, "total_seconds": time.time() - start, "stages": records}
        write_text_atomic(REPO_ROOT / pipeline.summary_path, json.dumps(summary, indent=2, default=str) + "\n")


def _headline(result: dict) -> str:
    """The figures a reader wants from a stage's marker, on one line."""
    keys = ("rows", "vocab_size", "bytes_per_token", "parameters", "metrics", "results", "removal_reasons")
    parts = []
    for key in keys:
        if key in result:
            value = result[key]
            if isinstance(value, float):
                value = f"{value:.3g}"
            elif isinstance(value, dict):
                value = json.dumps(value, default=lambda v: round(v, 4) if isinstance(v, float) else str(v))
            parts.append(f"{key}={value}")
    return "; ".join(parts)


def print_summary(pipeline: Pipeline, records: list[dict], total_seconds: float) -> None:
    print(f"\n=== pipeline {pipeline.name}: summary ({total_seconds:.0f}s) ===")
    for r in records:
        print(f"- {r['stage']:<12} {r['status']:<8} {r['seconds']:>7.1f}s  {r['output']}")
        if r.get("result"):
            print(f"  {_headline(r['result'])}")
    if pipeline.summary_path:
        print(f"(saved to {pipeline.summary_path})")
