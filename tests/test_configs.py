"""`parse_config` / `run_cli`: YAML recipe + CLI overrides -> the stage's dataclasses, with one-line errors."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from conftest import run_script
from trl import SFTConfig

from llm_recipes.data_config import DataArguments, DatasetMixtureArguments
from llm_recipes.errors import ConfigError
from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.model_config import ModelArguments
from llm_recipes.parser import build_options, parse_config

SFT_CLASSES = (DataArguments, SFTConfig, ModelArguments)


def write(tmp_path, text: str, name: str = "recipe.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parse(path: str, *cli: str, classes=SFT_CLASSES):
    return parse_config(classes, ["--config", path, *cli])


def test_yaml_values_become_defaults(tmp_path):
    path = write(
        tmp_path,
        "model_name_or_path: some/model\ndataset_name: data.jsonl\nlearning_rate: 1.0e-4\n"
        "num_train_epochs: 2\nlora_r: 8\nuse_peft: true\noutput_dir: out/sft\n",
    )
    data_args, training_args, model_args = parse(path)
    assert isinstance(data_args, DataArguments) and isinstance(training_args, SFTConfig)
    assert isinstance(model_args, ModelArguments)
    assert data_args.dataset_name == "data.jsonl"
    assert training_args.learning_rate == 1e-4 and training_args.num_train_epochs == 2
    assert training_args.output_dir == "out/sft"
    assert model_args.model_name_or_path == "some/model" and model_args.lora_r == 8 and model_args.use_peft
    # fields the recipe does not name keep their defaults
    assert data_args.dataset_train_split == "train" and model_args.dtype == "float32"


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # YAML 1.1 reads `1e-5` as a string; it must still arrive as a float
    _, training_args, _ = parse(write(tmp_path, "learning_rate: 1e-5\n"))
    assert training_args.learning_rate == pytest.approx(1e-5) and isinstance(training_args.learning_rate, float)


def test_cli_overrides_yaml(tmp_path):
    path = write(tmp_path, "learning_rate: 1.0e-4\nseed: 3\ndataset_name: a.jsonl\n")
    data_args, training_args, _ = parse(path, "--learning_rate", "0.5", "--dataset-name=b.jsonl")
    assert training_args.learning_rate == 0.5
    assert data_args.dataset_name == "b.jsonl"
    assert training_args.seed == 3  # not overridden: the YAML value stays


def test_config_equals_form_and_missing_path(tmp_path):
    path = write(tmp_path, "seed: 7\n")
    assert parse_config(SFT_CLASSES, [f"--config={path}"])[1].seed == 7
    with pytest.raises(ConfigError, match="--config needs the path"):
        parse_config(SFT_CLASSES, ["--config"])


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "learning_rate: 1.0e-4\nlearnig_rate: 3\n")
    with pytest.raises(ConfigError) as err:
        parse(path)
    message = str(err.value)
    assert "'learnig_rate'" in message and path in message and "\n" not in message


def test_unknown_cli_option(tmp_path):
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match="unknown option '--not_an_option'"):
        parse(path, "--not_an_option", "3")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("learning_rate: abc", "key 'learning_rate' expects float, got 'abc'"),
        ("learning_rate: [0.1, 0.2]", "key 'learning_rate' takes one value"),
        ("num_train_epochs: {a: 1}", "key 'num_train_epochs' takes a single value, got a mapping"),
        ("dataset_mixture: abc", "key 'dataset_mixture' expects dict"),
        ("eval_max_samples: 2.5", "key 'eval_max_samples' expects int"),
        ("packing: maybe", "key 'packing' expects"),
        ("dataset_format: xml", "key 'dataset_format' must be one of"),
        ("lr_scheduler_type: cosinus", "key 'lr_scheduler_type' must be one of"),
        ("lora_target_modules: [[q_proj]]", "key 'lora_target_modules' takes a list of single values"),
    ],
)
def test_bad_value_names_key_and_file(tmp_path, line, expected):
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as err:
        parse(path)
    assert expected in str(err.value) and path in str(err.value)


def test_bad_cli_value_is_one_line_error(tmp_path):
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError) as err:
        parse(path, "--learning_rate", "abc")
    assert "--learning_rate" in str(err.value) and "abc" in str(err.value) and "\n" not in str(err.value)


def test_values_are_converted_to_the_field_type(tmp_path):
    # argparse leaves YAML defaults untouched: a number for a str field, one value for a list field
    path = write(tmp_path, "output_dir: 2024\ndataset_config: 1\nlora_target_modules: [q_proj, v_proj]\nreport_to: [tensorboard]\n")
    data_args, training_args, model_args = parse(path)
    assert training_args.output_dir == "2024" and data_args.dataset_config == "1"
    assert model_args.lora_target_modules == ["q_proj", "v_proj"]
    assert training_args.report_to == ["tensorboard"]  # TrainingArguments takes str or list here
    mappings = "activation_checkpointing_kwargs: {use_reentrant: false}\ndataset_mixture: {datasets: [{path: a.jsonl}]}\n"
    data_args, training_args, _ = parse(write(tmp_path, mappings, "mappings.yaml"))
    assert training_args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert data_args.dataset_mixture == {"datasets": [{"path": "a.jsonl"}]}
    (evaluate,) = parse(write(tmp_path, "models: runs/toy/sft\n", "eval.yaml"), classes=(EvaluateArguments,))
    assert evaluate.models == ["runs/toy/sft"]


def test_env_block_sets_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_RECIPES_TEST_VAR", "before")
    path = write(tmp_path, "env:\n  LLM_RECIPES_TEST_VAR: 42\nseed: 1\n")
    parse(path)
    assert os.environ["LLM_RECIPES_TEST_VAR"] == "42"
    with pytest.raises(ConfigError, match="'env' must be a mapping"):
        parse(write(tmp_path, "env: [A, B]\n", "bad_env.yaml"))


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=f"{missing}: config file not found"):
        parse(missing)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "key: [unclosed\n"])
def test_not_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=path):
        parse(path)


def test_dataclass_check_failure_is_config_error(tmp_path):
    # TRL's ModelConfig.__post_init__ check, reported on one line with the file
    path = write(tmp_path, "load_in_4bit: true\nload_in_8bit: true\n")
    with pytest.raises(ConfigError, match=path) as err:
        parse(path)
    assert "\n" not in str(err.value)


def test_gpu_settings_follow_the_machine(tmp_path):
    path = write(tmp_path, "bf16: true\ngradient_checkpointing: true\nactivation_checkpointing: true\n")
    _, training_args, _ = parse(path)
    on_gpu = torch.cuda.is_available()
    assert training_args.bf16 is on_gpu
    assert training_args.activation_checkpointing is on_gpu and training_args.gradient_checkpointing is on_gpu
    assert training_args.use_cpu is not on_gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU defaults apply only where there is no CUDA")
def test_cpu_defaults_are_logged_naming_each_key_changed(tmp_path, caplog):
    # They were applied silently at parse time, so the log line a second copy in training.setup wrote never showed.
    caplog.set_level(logging.INFO, logger="llm_recipes")
    _, training_args, _ = parse(write(tmp_path, "bf16: true\ngradient_checkpointing: true\n"))
    assert training_args.bf16 is False and training_args.gradient_checkpointing is False and training_args.use_cpu
    lines = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "bf16 True -> False" in lines[0] and "gradient_checkpointing True -> False" in lines[0]
    assert "use_cpu False -> True" in lines[0]
    assert "fp16" not in lines[0]  # unchanged keys are not named


def test_stage_script_rejects_unknown_key_with_one_line(tmp_path):
    path = write(tmp_path, "model_name_or_path: some/model\nlearnin_rate: 0.1\n")
    proc = run_script("sft.py", "--config", path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'learnin_rate'" in errors[0] and path in errors[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ----------------------------------------------------------------------------------------------- value checks
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("learning_rate: -1.0e-4", "key 'learning_rate' must be > 0, got -0.0001"),
        ("per_device_train_batch_size: 0", "key 'per_device_train_batch_size' must be > 0, got 0"),
        ("max_length: -5", "key 'max_length' must be > 0, got -5"),
        ("gradient_accumulation_steps: 0", "key 'gradient_accumulation_steps' must be > 0"),
        ("weight_decay: -0.1", "key 'weight_decay' must be >= 0"),
        ("lora_dropout: 1.0", "key 'lora_dropout' must be in [0, 1)"),
        ("lora_r: 0", "key 'lora_r' must be > 0"),
        ("eval_max_samples: 0", "key 'eval_max_samples' must be > 0"),
        ("num_train_epochs: 0", "key 'num_train_epochs' must be > 0 (or set max_steps)"),
        ("chat_template: \"{% for m in messages %}{{ m['content'] }\"", "key 'chat_template' is not valid Jinja (line 1:"),
        ("chat_template: chatmlx", "chat_template: 'chatmlx' is neither a built-in"),
    ],
)
def test_values_out_of_range_name_key_and_file(tmp_path, line, expected):
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as err:
        parse(path)
    assert expected in str(err.value) and str(err.value).startswith(path) and "\n" not in str(err.value)


def test_values_in_range_and_unset_pass(tmp_path):
    path = write(tmp_path, "max_length: null\nlearning_rate: 1.0e-9\nnum_train_epochs: 0\nmax_steps: 5\nseed: 0\n"
                 "chat_template: chatml\nweight_decay: 0\n")
    _, training_args, _ = parse(path)
    assert training_args.max_length is None and training_args.max_steps == 5


def test_value_from_the_command_line_is_named_so(tmp_path):
    path = write(tmp_path, "learning_rate: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"^command line: key 'learning_rate' must be > 0, got -1.0"):
        parse(path, "--learning_rate", "-1")


def test_inputs_are_checked_before_anything_loads(tmp_path, tiny_model_dir, toy_data_dir):
    from llm_recipes.parser import check_inputs
    from llm_recipes.errors import DataError

    def inputs(**values):
        data_args, _, model_args = parse(write(tmp_path, yaml_lines(values)))
        check_inputs((data_args, model_args))

    def yaml_lines(values):
        return "".join(f"{k}: {v}\n" for k, v in values.items())

    good = {"model_name_or_path": tiny_model_dir, "dataset_name": toy_data_dir / "sft"}
    inputs(**good)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=f"^dataset_name: {empty}: empty file"):
        inputs(**{**good, "dataset_name": empty})
    with pytest.raises(ConfigError, match="^model_name_or_path: .*no such folder"):
        inputs(**{**good, "model_name_or_path": tmp_path / "missing"})
    with pytest.raises(ConfigError, match="^model_name_or_path: not set"):
        inputs(dataset_name=good["dataset_name"])
    with pytest.raises(ConfigError, match="^tokenizer_name_or_path: .*no tokenizer in the folder"):
        inputs(**good, tokenizer_name_or_path=toy_data_dir / "sft")


# ----------------------------------------------------------------------------------------------- nested options
def test_build_options_builds_nested_typed_options():
    mixture = build_options(DatasetMixtureArguments, {
        "datasets": [{"path": "a.jsonl", "weight": 2, "columns": ["messages"]}, {"id": "org/data", "config": 2024}],
        "seed": 3, "test_split_size": 50,
    }, "dataset_mixture")
    first, second = mixture.datasets
    assert first.path == "a.jsonl" and first.weight == 2.0 and isinstance(first.weight, float)
    assert first.columns == ["messages"] and first.split == "train"  # unset keys keep their defaults
    assert second.config == "2024"  # a YAML number for a str option becomes a str
    assert mixture.seed == 3 and mixture.test_split_size == 50 and isinstance(mixture.test_split_size, int)  # rows
    assert build_options(DatasetMixtureArguments, {"datasets": [{"path": "a"}], "test_split_size": 0.1},
                         "m").test_split_size == 0.1  # a share


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"datasets": [{"path": "a"}], "shufle": True},
         "dataset_mixture: unknown key 'shufle' (known: datasets, seed, test_split_size)"),
        ({"datasets": [{"path": "a"}, {"path": "b", "wieght": 2}]}, "dataset_mixture.datasets[1]: unknown key 'wieght'"),
        ({"datasets": [{"path": "a", "weight": "lots"}]}, "dataset_mixture.datasets[0]: weight must be a number, got 'lots'"),
        ({"datasets": [{"path": "a"}], "seed": 1.5}, "dataset_mixture: seed must be an integer, got 1.5"),
        ({"datasets": [{"path": "a", "columns": "text"}]}, "dataset_mixture.datasets[0]: columns must be a list, got 'text'"),
        ({"datasets": [{"path": "a", "columns": [["x"]]}]}, "dataset_mixture.datasets[0]: columns[0] must be a string"),
        ({"datasets": ["a.jsonl"]}, "dataset_mixture.datasets[0]: must be a mapping of id, path"),
        ({"datasets": [{"split": "test"}]}, "dataset_mixture.datasets[0]: needs 'id' (Hub) or 'path' (local)"),
        (["a.jsonl"], "dataset_mixture: must be a mapping of datasets, seed, test_split_size"),
    ],
)
def test_build_options_errors_name_the_key_path(mapping, expected):
    with pytest.raises(ConfigError) as err:
        build_options(DatasetMixtureArguments, mapping, "dataset_mixture")
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_mixture_keys_are_checked_before_anything_loads(tmp_path):
    from llm_recipes.parser import check_inputs

    data_args, _, _ = parse(write(tmp_path, "dataset_mixture: {datasets: [{path: a.jsonl, wieght: 2}]}\n"))
    with pytest.raises(ConfigError, match=r"^dataset_mixture.datasets\[0\]: unknown key 'wieght'"):
        check_inputs((data_args,))
