"""Runs never lose or fake work: a finished stage is skipped (same recipe) or refused (another recipe), a run
finished but not saved completes its save without training, one run per output folder, the final folder
appears whole or not at all, the pipeline runner's stage dies with it, PPO logs no update twice, and a
corrupted checkpoint is a one-line error naming the file.

Each test runs the stage scripts as a user would (tiny model, toy data, a few steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from test_sft import output_of, read_json, sft_command, sft_env, write_recipe

FINAL_FILES = ("llm_recipes.json", "model.safetensors", "config.json", "generation_config.json", "README.md",
               "tokenizer.json", "tokenizer_config.json", "training_args.bin", "train_results.json", "all_results.json",
               "chat_template.jinja", "special_tokens_map.json")


@pytest.fixture
def env(tmp_path_factory):
    return sft_env(tmp_path_factory.getbasetemp())


def run(command: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The stage's error: exit 2, no traceback, one line starting with 'error:'."""
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-4000:]
    return errors[0]


def remove_final_files(out: Path) -> None:
    """What a kill after the last checkpoint and before the final save leaves: checkpoints, no model, no marker."""
    for name in FINAL_FILES:
        (out / name).unlink(missing_ok=True)


def sft_recipe(tmp_path: Path, tiny_model_dir: Path, toy_data_dir: Path, name: str = "run", **overrides) -> Path:
    settings = dict(max_steps=4, per_device_train_batch_size=4, save_strategy="steps", save_steps=2)
    settings.update(overrides)
    return write_recipe(tmp_path, name, tiny_model_dir, toy_data_dir, **settings)


def loss_lines(proc: subprocess.CompletedProcess) -> int:
    return proc.stdout.count("'loss':")


# ----------------------------------------------------------------------------------------------- skip / refuse
@pytest.mark.slow
def test_rerun_of_a_finished_stage_is_skipped_and_a_changed_recipe_is_refused(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir)
    out = output_of(recipe)
    first = ok(run(sft_command(recipe), env))
    assert loss_lines(first) == 4
    marker_text, weights = (out / "llm_recipes.json").read_text(), (out / "model.safetensors").read_bytes()
    marker = json.loads(marker_text)
    assert marker["config"]["learning_rate"] == 1.0e-3 and marker["config"]["max_steps"] == 4
    assert "output_dir" not in marker["config"] and "report_to" not in marker["config"]
    assert len(marker["config_hash"]) == 64

    again = ok(run(sft_command(recipe), env))  # same recipe: nothing trained, nothing rewritten
    assert loss_lines(again) == 0 and "skipped" in again.stdout
    assert (out / "llm_recipes.json").read_text() == marker_text
    assert (out / "model.safetensors").read_bytes() == weights

    changed = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir, max_steps=6, learning_rate=5.0e-4)
    line = one_line_error(run(sft_command(changed), env))
    assert "learning_rate" in line and "max_steps" in line and "--force" in line, line
    assert "save_steps" not in line
    assert (out / "llm_recipes.json").read_text() == marker_text

    forced = ok(run([*sft_command(changed), "--force"], env))
    assert loss_lines(forced) == 6
    redone = read_json(out / "llm_recipes.json")
    assert redone["config"]["max_steps"] == 6 and redone["config"]["learning_rate"] == 5.0e-4


@pytest.mark.slow
def test_finished_training_without_its_save_completes_the_save_without_a_step(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir)
    out = output_of(recipe)
    ok(run(sft_command(recipe), env))
    remove_final_files(out)
    state = read_json(out / "checkpoint-4" / "trainer_state.json")
    logged = [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]
    assert [s for s, _ in logged] == [1, 2, 3, 4]
    expected_loss = sum(loss for _, loss in logged) / 4  # logging_steps 1: the mean of the four step losses

    second = ok(run(sft_command(recipe), env))
    assert loss_lines(second) == 0, second.stdout[-3000:]
    assert not (out / "checkpoint-5").exists()
    marker = read_json(out / "llm_recipes.json")
    assert marker["metrics"]["train_loss"] == pytest.approx(expected_loss, abs=1e-4)
    assert marker["metrics"]["epoch"] == pytest.approx(state["epoch"])
    from safetensors.torch import load_file

    final, last = load_file(out / "model.safetensors"), load_file(out / "checkpoint-4" / "model.safetensors")
    assert final.keys() == last.keys() and all((final[k] == last[k]).all() for k in final)


@pytest.mark.slow
def test_checkpoints_of_another_recipe_are_not_continued(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir, max_steps=6)
    out = output_of(recipe)
    ok(run(sft_command(recipe), env))
    remove_final_files(out)  # as if killed after checkpoint-6: the checkpoints of recipe A remain
    other = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir, max_steps=6, learning_rate=2.0e-3)
    line = one_line_error(run(sft_command(other), env))
    assert "learning_rate" in line and "checkpoint" in line, line
    assert not (out / "llm_recipes.json").exists()


# ----------------------------------------------------------------------------------------------- lock
@pytest.mark.slow
def test_a_second_run_in_the_same_output_dir_fails_at_once_naming_the_holder(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir, max_steps=100000, save_strategy="no")
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(sft_command(recipe), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "'loss':" not in (tmp_path / "first.log").read_text():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        started = time.monotonic()
        line = one_line_error(run(sft_command(recipe), env, timeout=120))
        assert f"pid {first.pid}" in line and str(output_of(recipe)) in line, line
        assert time.monotonic() - started < 120
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait(timeout=60)
        log.close()


# ----------------------------------------------------------------------------------------------- atomic output
KILL_AT_FIRST_MODEL_FILE = """
import os, runpy, sys, threading, time
from pathlib import Path

out = Path(os.environ["WATCH_OUTPUT"])

def watch():  # exit at once, as a kill would, when a final model file appears next to or in output_dir
    while True:
        for folder in [out, *out.parent.glob(".*"), *out.parent.glob(".*/*")]:
            if (folder / "model.safetensors").exists():
                os._exit(9)
        time.sleep(0.001)

threading.Thread(target=watch, daemon=True).start()
sys.argv = [os.environ["STAGE_SCRIPT"], *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_kill_during_the_final_save_leaves_no_final_files(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir, save_strategy="no")
    out = output_of(recipe)
    driver = tmp_path / "kill_at_save.py"
    driver.write_text(KILL_AT_FIRST_MODEL_FILE)
    env = {**env, "WATCH_OUTPUT": str(out), "STAGE_SCRIPT": str(REPO_ROOT / "scripts" / "sft.py")}
    killed = run([sys.executable, str(driver), "--config", str(recipe)], env)
    assert killed.returncode == 9, killed.stdout[-3000:] + killed.stderr[-3000:]
    # a reader sees no model: not a model without a marker, not a half-written one
    assert not (out / "model.safetensors").exists() and not (out / "llm_recipes.json").exists()
    ok(run(sft_command(recipe), env))
    assert read_json(out / "llm_recipes.json")["stage"] == "sft" and (out / "model.safetensors").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".run.") and p.is_dir()], list(out.parent.iterdir())


# ----------------------------------------------------------------------------------------------- corrupted checkpoint
@pytest.mark.slow
def test_a_corrupted_checkpoint_rng_file_is_a_one_line_error(tmp_path, env, tiny_model_dir, toy_data_dir):
    recipe = sft_recipe(tmp_path, tiny_model_dir, toy_data_dir)
    out = output_of(recipe)
    ok(run(sft_command(recipe), env))
    remove_final_files(out)
    import shutil

    shutil.rmtree(out / "checkpoint-4")  # resume from checkpoint-2, whose RNG file is cut short
    rng = out / "checkpoint-2" / "rng_state.pth"
    rng.write_bytes(rng.read_bytes()[:100])
    line = one_line_error(run(sft_command(recipe), env))
    assert str(rng) in line, line


# ----------------------------------------------------------------------------------------------- PPO
def ppo_command(tmp_path: Path, tiny_model_dir: Path, toy_data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "scripts" / "ppo.py"),
            "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(toy_data_dir / "rl_prompts"),
            "--output_dir", str(tmp_path / "ppo"), "--reward_funcs", "ppo_rewards.reply_length",
            "--per_device_train_batch_size", "4", "--num_mini_batches", "2", "--num_ppo_epochs", "1",
            "--response_length", "4", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
            "--num_sample_generations", "0", "--dtype", "float32", "--seed", "0", "--report_to", "none", *extra]


REWARDS = """
def reply_length(prompts, completions, **_):
    return [float(len(c if isinstance(c, str) else c[-1]["content"])) for c in completions]
"""


@pytest.mark.slow
def test_ppo_resume_logs_each_update_once_and_refuses_a_corrupted_checkpoint(tmp_path, env, tiny_model_dir, toy_data_dir):
    (tmp_path / "ppo_rewards.py").write_text(REWARDS)
    env = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])}
    command = ppo_command(tmp_path, tiny_model_dir, toy_data_dir)
    out = tmp_path / "ppo"
    ok(run(command, env))
    log = out / "ppo_log.jsonl"
    assert [json.loads(x)["update"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]
    # killed after update 4, before the save: the run resumes from checkpoint-2 and redoes updates 3 and 4
    for name in ("llm_recipes.json", "model.safetensors", "README.md"):
        (out / name).unlink(missing_ok=True)
    ok(run(command, env))
    assert [json.loads(x)["update"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert read_json(out / "llm_recipes.json")["metrics"]["updates"] == 4

    for name in ("llm_recipes.json", "model.safetensors", "README.md"):
        (out / name).unlink(missing_ok=True)
    rng = out / "checkpoint-2" / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:64])
    line = one_line_error(run(command, env))
    assert str(rng) in line, line


# ----------------------------------------------------------------------------------------------- pipeline runner
def write_pipeline(tmp_path: Path, stages: list[dict]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "test", "env": {"OMP_NUM_THREADS": "1"}, "stages": stages}))
    return path


@pytest.mark.slow
def test_pipeline_refuses_a_changed_recipe_of_a_finished_stage(tmp_path):
    from llm_recipes.errors import RecipeError
    from llm_recipes.pipeline import run_pipeline

    out, config = tmp_path / "data", tmp_path / "toy_data.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(out), "n_entities": 6, "seed": 1}))
    path = write_pipeline(tmp_path, [{"name": "data", "script": "scripts/toy_data.py", "config": str(config),
                                      "output": str(out)}])
    assert [r["status"] for r in run_pipeline(path)] == ["ran"]
    assert [r["status"] for r in run_pipeline(path)] == ["skipped"]
    config.write_text(yaml.safe_dump({"output_dir": str(out), "n_entities": 6, "seed": 2}))
    with pytest.raises(RecipeError, match=r"data.*'seed'.*--force"):
        run_pipeline(path)
    assert [r["status"] for r in run_pipeline(path, force=True)] == ["ran"]


SLEEPING_STAGE = """
import os, sys, time
from pathlib import Path
Path(sys.argv[sys.argv.index("--config") + 1]).with_suffix(".pid").write_text(str(os.getpid()))
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_the_stage_dies_with_the_pipeline_runner(tmp_path, kill):
    script, config = tmp_path / "sleeper.py", tmp_path / "sleeper.yaml"
    script.write_text(SLEEPING_STAGE)
    config.write_text("{}\n")
    path = write_pipeline(tmp_path, [{"name": "sleep", "script": str(script), "config": str(config),
                                      "output": str(tmp_path / "out")}])
    runner = subprocess.Popen([sys.executable, "-m", "llm_recipes.cli", "run", str(path)], cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = config.with_suffix(".pid")
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    stage = int(pid_file.read_text())
    runner.send_signal(kill)
    runner.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(stage) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not alive(stage), f"stage {stage} outlived its runner"
    finally:
        if alive(stage):
            os.kill(stage, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- the record, in-process
def test_the_recipe_record_ignores_what_does_not_change_the_result(tmp_path, tiny_model_dir, toy_data_dir):
    from trl import SFTConfig

    from llm_recipes.data_config import DataArguments
    from llm_recipes.model_config import ModelArguments
    from llm_recipes.parser import parse_config
    from llm_recipes.integrity import record_of

    recipe = write_recipe(tmp_path, "a", tiny_model_dir, toy_data_dir)

    def record(*flags: str):
        return record_of(parse_config((DataArguments, SFTConfig, ModelArguments), ["--config", str(recipe), *flags]))

    base = record()
    same = record("--output_dir", str(tmp_path / "elsewhere"), "--report_to", "tensorboard", "--logging_steps", "7",
                  "--save_steps", "3", "--hub_token", "hf_not_in_the_record", "--dataset_num_proc", "2")
    assert same.hash == base.hash and "hf_not_in_the_record" not in json.dumps(same.as_dict())
    changed = record("--learning_rate", "0.01", "--max_steps", "9")
    assert changed.changes_from(base.as_dict()) == ["learning_rate", "max_steps"]
    # the data is fingerprinted: the same path with other contents is a change
    assert "dataset_name" in base.inputs and "model_name_or_path" in base.inputs


def test_publish_shows_the_final_folder_whole_and_a_cut_save_is_discarded(tmp_path):
    from llm_recipes.integrity import finish_publish, publish, staging_dir

    out = tmp_path / "stage"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (out / "train_results.json").write_text("{}")
    staged = staging_dir(out)
    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"weights")
    finish_publish(out)  # no marker in the staging folder: a cut save, removed; output_dir untouched
    assert not staged.parent.exists() and sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "train_results.json"]

    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"weights")
    (staged / "llm_recipes.json").write_text("{}")
    publish(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "llm_recipes.json", "model.safetensors",
                                                      "train_results.json"]
    assert not staged.parent.exists()


def test_resume_takes_the_newest_checkpoint_saved_to_the_end(tmp_path):
    """transformers' get_last_checkpoint takes the newest `checkpoint-N` whatever it holds; the stage skips one
    whose file written last (trainer_state.json) a kill left cut or missing, and takes the one before."""
    from transformers.trainer_utils import get_last_checkpoint

    from llm_recipes.integrity import last_complete_checkpoint
    from llm_recipes.training import last_complete_checkpoint as trainer_checkpoint

    out = tmp_path / "out"
    assert last_complete_checkpoint(out, "trainer_state.json") is None  # no output folder yet
    for step in (2, 4, 10):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (out / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": ')  # cut while saving
    (out / "checkpoint-12").mkdir()  # cut before the file was opened
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-12")
    assert trainer_checkpoint(str(out)) == str(out / "checkpoint-4")  # 4 < 10 by number, not by name
    (out / "checkpoint-12" / "trainer_state.json").write_text("{}")
    assert trainer_checkpoint(str(out)) == str(out / "checkpoint-12")
