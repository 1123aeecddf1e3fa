"""Every recipe under recipes/ parses with its stage script's config classes (found by globbing, so a new recipe
is covered without touching this file); every accelerate config loads with accelerate's own loader; pipelines
load, slice and run (skipping finished stages)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from conftest import REPO_ROOT

from llm_recipes.parser import parse_config
from llm_recipes.toy.config import ToyDataArguments
from llm_recipes.errors import ConfigError
from llm_recipes.hub import read_marker
from llm_recipes.pipeline import load_pipeline, run_pipeline, select_stages
from llm_recipes.stages import load_script

RECIPES = sorted((REPO_ROOT / "recipes").rglob("*.yaml"))
ACCELERATE_CONFIGS = sorted((REPO_ROOT / "accelerate_configs").glob("*.yaml"))


def stage_script(recipe: Path) -> Path:
    """recipes/toy/sft.yaml -> scripts/sft.py (the file stem); recipes/<model>/sft/config_x.yaml -> scripts/sft.py
    (the parent folder)."""
    for name in (recipe.stem, recipe.parent.name):
        if (REPO_ROOT / "scripts" / f"{name}.py").is_file():
            return REPO_ROOT / "scripts" / f"{name}.py"
    pytest.fail(
        f"{recipe.relative_to(REPO_ROOT)}: no stage script scripts/{recipe.stem}.py or scripts/{recipe.parent.name}.py; "
        "name the recipe after its stage or put it under recipes/<model>/<stage>/"
    )


def check_parses(config: Path, script: Path) -> None:
    classes = load_script(script).CONFIG_CLASSES
    parsed = parse_config(classes, ["--config", str(config)])
    assert len(parsed) == len(classes)
    assert all(isinstance(obj, cls) for obj, cls in zip(parsed, classes))


@pytest.fixture
def keep_environment():
    """Recipes may carry an `env:` block; parsing one must not leak into other tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_recipes_were_found():
    names = {str(p.relative_to(REPO_ROOT)) for p in RECIPES}
    assert {"recipes/toy/pipeline.yaml", "recipes/llama-3.1-8b/sft/config_qlora.yaml",
            "recipes/llama-3.1-8b/sft/config_full.yaml", "recipes/qwen2.5-0.5b/sft/config_lora.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(REPO_ROOT / "recipes")) for p in RECIPES])
def test_recipe_parses(recipe: Path, keep_environment):
    spec = yaml.safe_load(recipe.read_text())
    if isinstance(spec, dict) and "stages" in spec:  # a pipeline: each stage's recipe with that stage's script
        pipeline = load_pipeline(recipe)
        for stage in pipeline.stages:
            check_parses(REPO_ROOT / stage.config, REPO_ROOT / stage.script)
    else:
        check_parses(recipe, stage_script(recipe))


def test_gpu_recipes_ask_for_what_they_promise(keep_environment):
    """The settings that make the Llama/Qwen recipes what their headers say (parsed values, CPU overrides aside)."""
    sft = load_script(REPO_ROOT / "scripts" / "sft.py").CONFIG_CLASSES
    base = REPO_ROOT / "recipes"
    raw = {name: yaml.safe_load((base / name).read_text()) for name in (
        "llama-3.1-8b/sft/config_qlora.yaml", "llama-3.1-8b/sft/config_full.yaml", "qwen2.5-0.5b/sft/config_lora.yaml")}
    for name, spec in raw.items():
        assert spec["bf16"] is True and spec["activation_checkpointing"] is True and spec["packing"] is True, name
        assert spec["push_to_hub"] is False and spec["chat_template"] == "chatml", name
        assert spec["assistant_only_loss"] is True, name
    data, _, model = parse_config(sft, ["--config", str(base / "llama-3.1-8b/sft/config_qlora.yaml")])
    assert model.load_in_4bit and model.bnb_4bit_quant_type == "nf4" and model.use_peft
    assert model.model_name_or_path == "meta-llama/Llama-3.1-8B"
    assert (data.dataset_name, data.dataset_train_split, data.dataset_test_split) == (
        "HuggingFaceH4/ultrachat_200k", "train_sft", "test_sft")
    _, _, model = parse_config(sft, ["--config", str(base / "llama-3.1-8b/sft/config_full.yaml")])
    assert not model.use_peft and not model.load_in_4bit and model.attn_implementation == "auto"
    data, _, model = parse_config(sft, ["--config", str(base / "qwen2.5-0.5b/sft/config_lora.yaml")])
    assert model.use_peft and model.model_name_or_path == "Qwen/Qwen2.5-0.5B"
    assert len(data.dataset_mixture["datasets"]) == 2


# ----------------------------------------------------------------------------------------------- accelerate
EXPECTED_ACCELERATE = {
    "single": (DistributedType.NO, {}),
    "ddp": (DistributedType.MULTI_GPU, {}),
    "cpu_2proc": (DistributedType.MULTI_GPU, {}),
    "zero2": (DistributedType.DEEPSPEED, {"deepspeed_config": ("zero_stage", 2)}),
    "zero3": (DistributedType.DEEPSPEED, {"deepspeed_config": ("zero_stage", 3)}),
    "fsdp2": (DistributedType.FSDP, {"fsdp_config": ("fsdp_version", 2)}),
}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=[p.stem for p in ACCELERATE_CONFIGS])
def test_accelerate_config_loads(path: Path):
    config = load_config_from_file(str(path))  # accelerate's own loader: unknown keys raise
    assert config.num_processes >= 1 and config.compute_environment.value == "LOCAL_MACHINE"
    if path.stem in EXPECTED_ACCELERATE:
        distributed_type, sections = EXPECTED_ACCELERATE[path.stem]
        assert config.distributed_type == distributed_type
        for section, (key, value) in sections.items():
            assert getattr(config, section)[key] == value


def test_every_expected_accelerate_config_exists():
    assert set(EXPECTED_ACCELERATE) <= {p.stem for p in ACCELERATE_CONFIGS}


# ----------------------------------------------------------------------------------------------- pipelines
def write_pipeline(tmp_path: Path, stages: list[dict], **extra) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **extra, "stages": stages}, sort_keys=False))
    return path


def stage(name: str, script: str = "scripts/toy_data.py", config: str = "recipes/toy/toy_data.yaml", **extra) -> dict:
    return {"name": name, "script": script, "config": config, "output": f"runs/x/{name}", **extra}


@pytest.mark.parametrize(
    ("stages", "extra", "expected"),
    [
        ([stage("a")], {"shuffle": True}, "unknown key 'shuffle'"),
        ([stage("a", retries=2)], {}, r"stages\[0\]: unknown key 'retries'"),
        ([stage("a", script="scripts/nope.py")], {}, r"stages\[0\] \(a\): script 'scripts/nope.py' not found"),
        ([stage("a", config="recipes/nope.yaml")], {}, r"config 'recipes/nope.yaml' not found"),
        ([stage("a"), stage("b"), stage("a")], {}, r"stages\[2\]: duplicate stage name 'a'"),
        ([{"name": "a", "script": "scripts/toy_data.py"}], {}, r"stages\[0\]: missing 'config'"),
        ([], {}, "non-empty 'stages' list"),
    ],
)
def test_load_pipeline_errors(tmp_path, stages, extra, expected):
    path = write_pipeline(tmp_path, stages, **extra)
    with pytest.raises(ConfigError, match=expected) as err:
        load_pipeline(path)
    assert str(path) in str(err.value)


def test_select_stages(tmp_path):
    pipeline = load_pipeline(write_pipeline(tmp_path, [stage(n) for n in ("data", "tok", "base", "sft", "eval")]))
    names = lambda stages: [s.name for s in stages]  # noqa: E731
    assert names(select_stages(pipeline)) == ["data", "tok", "base", "sft", "eval"]
    assert names(select_stages(pipeline, from_stage="base")) == ["base", "sft", "eval"]
    assert names(select_stages(pipeline, until_stage="tok")) == ["data", "tok"]
    assert names(select_stages(pipeline, "tok", "sft")) == ["tok", "base", "sft"]
    assert names(select_stages(pipeline, "sft", "sft")) == ["sft"]
    with pytest.raises(ConfigError, match="no stage 'dpo'"):
        select_stages(pipeline, from_stage="dpo")


@pytest.mark.slow  # two `accelerate launch` processes: ~20 s alone, more on a loaded 2-core machine
def test_run_pipeline_skips_finished_stages(tmp_path):
    out = tmp_path / "data"
    config = tmp_path / "toy_data.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(out), "n_entities": 6, "seed": 1}))
    check_parses(config, REPO_ROOT / "scripts" / "toy_data.py")
    path = write_pipeline(tmp_path, [{"name": "data", "script": "scripts/toy_data.py", "config": str(config),
                                      "output": str(out)}], env={"OMP_NUM_THREADS": "1"},
                          summary=str(tmp_path / "summary.json"))

    first = run_pipeline(path)
    assert [r["status"] for r in first] == ["ran"]
    marker = read_marker(out)
    assert marker["stage"] == "toy_data" and marker["seed"] == 1
    assert (out / "sft" / "README.md").is_file()

    second = run_pipeline(path)
    assert [r["status"] for r in second] == ["skipped"] and second[0]["result"] == marker
    # the summary of the re-run keeps the time the skipped stage took when it ran, twice over
    assert second[0]["seconds_when_ran"] == first[0]["seconds"] > 0
    assert run_pipeline(path)[0]["seconds_when_ran"] == first[0]["seconds"]

    forced = run_pipeline(path, force=True)
    assert [r["status"] for r in forced] == ["ran"]
    assert read_marker(out)["finished"] >= marker["finished"]
    assert isinstance(parse_config((ToyDataArguments,), ["--config", str(config)])[0], ToyDataArguments)
