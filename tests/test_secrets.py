"""Secrets stay in the process: never in a model card, a marker, a log line or the pickled training arguments, and
nothing pushed to the Hub holds one (a real SFT run pushed to the local Hub stand-in, every file grepped)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from llm_recipes.hub import mark_complete, read_marker, write_model_card
from llm_recipes.redaction import REDACTED, is_secret_name, redact_text, scrub_logs

ENV_TOKEN = "hf_" + "E" * 34  # the shape of a Hub token
CLI_TOKEN = "hf_" + "C" * 34
PASSWORD = "pw-db-secret-4711"
API_KEY = "wandb-key-0123456789"


def recipe_with_secrets(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "env:\n"
        f"  HF_TOKEN: {ENV_TOKEN}\n"
        f"  MY_DB_PASSWORD: '{PASSWORD}'\n"
        f"  WANDB_API_KEY: {API_KEY}\n"
        "  OMP_NUM_THREADS: 1\n"
        f"hub_token: {CLI_TOKEN}  # never do this\n" + body
    )
    return path


def assert_no_secret(name: str, data: bytes) -> None:
    for secret in (ENV_TOKEN, CLI_TOKEN, PASSWORD, API_KEY):
        assert secret.encode() not in data, f"{name} holds the secret {secret!r}"


@pytest.mark.parametrize("name", ["hub_token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "openai_api_key",
                                  "AWS_SECRET_ACCESS_KEY", "db_password", "client_secret", "key", "push_to_hub_token"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_new_tokens", "tokens_seen", "flops_per_token", "tokenizer_name_or_path",
                                  "pad_token", "eos_token", "stop_token", "extra_special_tokens", "text_key",
                                  "keep_work_dir", "hub_model_id", "tokens_per_sec", "monkey"])
def test_names_that_hold_no_secret(name):
    assert not is_secret_name(name)


def test_card_redacts_the_recipes_secrets(tmp_path):
    recipe = recipe_with_secrets(tmp_path, "model_name_or_path: some/model\nlearning_rate: 2.0e-5\n")
    card = write_model_card(tmp_path / "out", stage="sft", base_model="some/model", datasets=["some/data"],
                            metrics={"train_loss": 1.25, "hub_token": CLI_TOKEN}, recipe_path=str(recipe))
    on_disk = (tmp_path / "out" / "README.md").read_bytes()
    assert_no_secret("README.md", on_disk)
    assert_no_secret("card", card.encode())
    # the rest of the recipe is kept, and the secrets' places are marked
    assert "model_name_or_path: some/model" in card and "learning_rate: 2.0e-5" in card and "OMP_NUM_THREADS: 1" in card
    assert f"HF_TOKEN: {REDACTED}" in card and f"MY_DB_PASSWORD: '{REDACTED}'" in card and "train_loss" in card


def test_marker_redacts_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    mark_complete(tmp_path, "sft", metrics={"hub_token": CLI_TOKEN, "train_loss": 1.0},
                  note=f"pushed with {ENV_TOKEN}")
    assert_no_secret("marker", (tmp_path / "llm_recipes.json").read_bytes())
    marker = read_marker(tmp_path)
    assert marker["metrics"] == {"hub_token": REDACTED, "train_loss": 1.0}
    assert marker["note"] == f"pushed with {REDACTED}"


def test_figures_and_the_working_directory_are_not_secrets(tmp_path, monkeypatch):
    """Seen: the marker's `eval_mean_token_accuracy` (a number) became <redacted>, and so did every occurrence of the
    working directory in error lines and cards (the shell's PWD was taken for a password)."""
    workdir = tmp_path / "my_project_dir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PWD", str(workdir))
    monkeypatch.setenv("OLDPWD", str(tmp_path))
    mark_complete(tmp_path / "out", "dpo", metrics={"eval_mean_token_accuracy": 0.716, "eval_num_tokens": 9038.0},
                  note=f"trained in {workdir}")
    marker = read_marker(tmp_path / "out")
    assert marker["metrics"] == {"eval_mean_token_accuracy": 0.716, "eval_num_tokens": 9038.0}
    assert marker["note"] == f"trained in {workdir}"
    assert redact_text(f"error: {workdir}/recipe.yaml: bad") == f"error: {workdir}/recipe.yaml: bad"


def test_redact_text_forms():
    text = (f"hub_token: {CLI_TOKEN}\nrun: python x.py --hub_token {CLI_TOKEN} --seed 3\n"
            f'{{"api_key": "{API_KEY}", "stop_token": "eos"}}\nenv: {{DB_PASSWORD: {PASSWORD}, A: 1}}\n')
    clean = redact_text(text)
    assert_no_secret("text", clean.encode())
    assert "--seed 3" in clean and '"stop_token": "eos"' in clean and "A: 1" in clean


def test_log_records_are_scrubbed(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", PASSWORD)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    factory = logging.getLogRecordFactory()
    logger = logging.getLogger("llm_recipes.test_secrets")
    handler = Keep()
    logger.addHandler(handler)
    try:
        scrub_logs()
        logger.warning("connecting with %s and %s", PASSWORD, ENV_TOKEN)
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(factory)
    assert records == [f"connecting with {REDACTED} and {REDACTED}"]


@pytest.mark.slow
def test_sft_push_holds_no_secret_and_the_projects_card(tiny_model_dir, toy_data_dir, tmp_path):
    """A token in the recipe's env block, one in hub_token and one on the command line: the run pushes with the
    command-line token, and no file pushed or written (training_args.bin, checkpoints included) holds any."""
    from hub_standin import HubStandIn

    recipe = recipe_with_secrets(
        tmp_path,
        f"model_name_or_path: {tiny_model_dir}\ndataset_name: {toy_data_dir / 'sft'}\nmax_steps: 2\nsave_steps: 1\n"
        "per_device_train_batch_size: 4\nmax_length: 64\nreport_to: none\neval_strategy: 'no'\npush_to_hub: true\n"
        "hub_model_id: me/toy-sft\ndisable_tqdm: true\n",
    )
    out = tmp_path / "sft"
    with HubStandIn() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run(
            [sys.executable, "scripts/sft.py", "--config", str(recipe), "--output_dir", str(out),
             "--hub_token", CLI_TOKEN], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.files("me/toy-sft")
    assert hub.authorizations == {f"Bearer {CLI_TOKEN}"}  # the push did use the token
    assert {"README.md", "model.safetensors", "training_args.bin", "llm_recipes.json"} <= set(pushed)
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(name.startswith("checkpoint-") and name.endswith("/training_args.bin") for name in local)
    secrets = (ENV_TOKEN, CLI_TOKEN, PASSWORD, API_KEY)
    leaks = [f"pushed {name}" for name, data in pushed.items() if any(s.encode() in data for s in secrets)]
    leaks += [name for name, data in local.items() if any(s.encode() in data for s in secrets)]
    leaks += ["logs"] if any(s in proc.stdout + proc.stderr for s in secrets) else []
    # the card on the Hub is the project's (TRL's generic one said 'fine-tuned version of [None]')
    card = pushed["README.md"].decode()
    if "Trained with the llm-recipes `sft` stage." not in card or "fine-tuned version of" in card:
        leaks.append("pushed README.md is not the project's card")
    assert not leaks, leaks
    assert card == (out / "README.md").read_text()
