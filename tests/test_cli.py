"""`llm-recipes`: the stage registry, `--help`, paths from any directory (a recipe's own folder for its inputs,
the caller's directory for outputs), and the pipeline runner's terminal lines, per-stage logs and end table."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from llm_recipes.pipeline import key_figure, resolve_recipe_paths, run_pipeline, summary_table
from llm_recipes.stages import SERVICES, STAGES, get_stage

CLI = [sys.executable, "-m", "llm_recipes.cli"]


# ----------------------------------------------------------------------------------------------- registry
def test_registry_and_scripts_name_the_same_stages():
    scripts = {p.stem for p in (REPO_ROOT / "scripts").glob("*.py")}
    assert {s.name for s in STAGES + SERVICES} == scripts
    assert all(s.script == REPO_ROOT / "scripts" / f"{s.name}.py" for s in STAGES)


def test_every_stage_names_its_config_classes():
    for stage in STAGES + SERVICES:
        classes = stage.config_classes()
        assert classes and all(dataclasses.is_dataclass(c) for c in classes), stage.name


def test_help_lists_every_stage_on_one_line_without_importing_torch():
    probe = ("import sys; from llm_recipes.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for stage in STAGES:
        assert any(line.split()[:1] == [stage.name] and stage.help in line for line in lines), stage.name
    assert lines[-1] == "NO_TORCH"


def test_unknown_stage_is_named():
    from llm_recipes.errors import ConfigError

    with pytest.raises(ConfigError, match="no stage 'sfft'"):
        get_stage("sfft")


# ----------------------------------------------------------------------------------------------- paths
def test_recipe_inputs_beside_the_recipe_outputs_relative_to_the_caller(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "constitution.json").write_text("[]")
    (recipes / "data").mkdir()
    (recipes / "sft").mkdir()  # recipes/toy/ holds sft/, dpo/, evaluate/ folders: a bare word stays a setting
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    config = {"constitution": "constitution.json", "output_dir": "data", "prompts": "runs/toy/data/rl_prompts",
              "benchmarks": {"b": {"data_files": "constitution.json"}}, "model_candidates": ["data", "gpt2"],
              "dataset_name": "HuggingFaceH4/ultrachat_200k", "seed": 0, "loss_type": ["sigmoid", "sft"],
              "dataset_path": "data/"}
    resolved = resolve_recipe_paths(config, recipes / "x.yaml")
    assert resolved["constitution"] == str(recipes / "constitution.json")
    assert resolved["benchmarks"]["b"]["data_files"] == str(recipes / "constitution.json")
    assert resolved["model_candidates"] == ["data", "gpt2"] and resolved["loss_type"] == ["sigmoid", "sft"]
    assert resolved["dataset_path"] == str(recipes / "data/")
    assert resolved["output_dir"] == "data"  # an output is never taken from beside the recipe
    assert resolved["prompts"] == "runs/toy/data/rl_prompts" and resolved["dataset_name"] == config["dataset_name"]
    assert resolved["seed"] == 0


def test_shipped_toy_cai_recipe_finds_its_constitution_from_any_directory(tmp_path, monkeypatch):
    from llm_recipes.parser import parse_config

    monkeypatch.chdir(tmp_path)
    classes = get_stage("cai").config_classes()
    (args,) = parse_config(classes, ["--config", str(REPO_ROOT / "recipes/toy/cai.yaml")])
    assert Path(args.constitution) == REPO_ROOT / "recipes/toy/constitution.json"
    assert args.output_dir == "runs/toy/cai"  # relative to the caller: lands in tmp_path


def test_ppo_stage_takes_trust_remote_code():
    """PPO read `trust_remote_code` from a config that has no such field, so it was always False and a recipe
    setting it was refused as an unknown key."""
    from llm_recipes.parser import parse_config

    classes = get_stage("ppo").config_classes()
    parsed = parse_config(classes, ["--config", str(REPO_ROOT / "recipes/toy/ppo.yaml"), "--trust_remote_code", "true"])
    assert [a.trust_remote_code for a in parsed if hasattr(a, "trust_remote_code")] == [True]
    parsed = parse_config(classes, ["--config", str(REPO_ROOT / "recipes/toy/ppo.yaml")])
    assert [a.trust_remote_code for a in parsed if hasattr(a, "trust_remote_code")] == [False]


# ----------------------------------------------------------------------------------------------- runner output
def test_key_figures_read_from_markers():
    assert key_figure({"stage": "reward", "metrics": {"eval_accuracy": 0.93125, "eval_loss": 0.3}}) == \
        "pairwise accuracy 0.931"
    assert key_figure({"stage": "pretrain", "metrics": {"eval_perplexity_before": 512.0, "eval_perplexity_after": 66.61}}) \
        == "validation perplexity 512 -> 66.6"
    assert key_figure({"stage": "curate", "totals": {"input": 1200, "kept": 800}}) == "kept 800 of 1200 documents"
    assert key_figure({"stage": "distill", "metrics": {"teacher_parameters": 984192, "student_parameters": 557696}}) \
        == "parameters, teacher -> student 984192 -> 557696"
    assert key_figure({"stage": "toy_users", "metrics": {"requests": 328, "thumbs_up": 115, "thumbs_down": 129,
                                                         "choices": 13}}) == "328 requests, 115 up / 129 down, 13 choices"
    gates = [{"metric": "toy_alignment/refusal_rate", "served": 1.0, "new": 1.0, "delta": 0.0},
             {"metric": "toy_alignment/exact_match", "served": 0.62, "new": 0.79, "delta": 0.17},
             {"metric": "toy_knowledge/bits_per_byte", "served": 0.5893, "new": 0.5932, "delta": 0.0039}]
    assert key_figure({"stage": "update", "gates": gates}) == "exact_match 0.62 -> 0.79, bits_per_byte 0.589 -> 0.593"
    assert key_figure({"stage": "toy_data", "rows": {"corpus": 10, "sft": 5}}) == "15 rows in 2 datasets"
    assert key_figure({"stage": "sft", "metrics": {"train_loss": 1.08791, "epoch": 3.0}}) == "train loss 1.09"
    evaluated = {"stage": "evaluate", "models": ["runs/toy/sft", "runs/toy/dpo/"],
                 "benchmarks": {"runs/toy/sft": {"toy_alignment": {"exact_match": 0.02, "refusal_rate": 0.0}},
                                "runs/toy/dpo/": {"toy_alignment": {"exact_match": 0.01, "refusal_rate": 0.975}}}}
    assert key_figure(evaluated) == "refusal_rate: sft 0, dpo 0.975"
    # two benchmarks with the same metric: one figure per model (the first benchmark's), not one per benchmark
    two = {"stage": "evaluate", "benchmarks": {"sft": {"facts_gen": {"exact_match": 0.97}, "qa": {"exact_match": 0.9}},
                                               "dpo": {"facts_gen": {"exact_match": 0.6}, "qa": {"exact_match": 0.5}}}}
    assert key_figure(two) == "exact_match: sft 0.97, dpo 0.6"
    lm_eval = {"stage": "evaluate", "models": ["m"], "benchmarks": {"m": {"facts_mc": {"acc,none": 0.25, "acc_stderr,none": 0.1}}}}
    assert key_figure(lm_eval) == "acc: m 0.25"
    assert key_figure({"stage": "evaluate", "models": ["a", "b"]}) == "2 models compared: report.html"
    table = summary_table([{"stage": "reward", "status": "ran", "seconds": 12.4, "output": "runs/toy/reward",
                            "result": {"stage": "reward", "metrics": {"eval_accuracy": 0.5}}}])
    header, rule, row = table.splitlines()
    assert header.split() == ["stage", "status", "time", "result", "output"]
    assert row.split() == ["reward", "ran", "12s", "pairwise", "accuracy", "0.5", "runs/toy/reward"]


def write_pipeline(tmp_path: Path, stages: list[dict]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "env": {"OMP_NUM_THREADS": "1"}, "summary": "runs/t/summary.json",
                                    "stages": stages}, sort_keys=False))
    return path


@pytest.mark.slow  # one `accelerate launch` of the data stage, ~20 s on a quiet 2-core machine
def test_pipeline_logs_each_stage_and_prints_a_table(tmp_path, monkeypatch, capsys):
    """Run from another directory: outputs and logs land there, the terminal gets one line per stage and a table,
    a failed stage's log tail is printed with its path."""
    recipe = tmp_path / "data.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": "runs/t/data", "n_entities": 6, "seed": 1}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"output_dir": "runs/t/bad", "n_entities": -3}))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_pipeline(tmp_path, [
        {"name": "data", "script": "scripts/toy_data.py", "config": str(recipe), "output": "runs/t/data"}])
    records = run_pipeline(path)
    out = capsys.readouterr().out
    assert [r["status"] for r in records] == ["ran"]
    assert (work / "runs/t/data/llm_recipes.json").is_file() and (work / "runs/t/logs/data.log").is_file()
    stage_lines = [line for line in out.splitlines() if line.startswith("[1/1] data")]
    assert len(stage_lines) == 1 and "done in" in stage_lines[0]
    table = out[out.index("\nstage "):]
    assert "rows in" in table and "runs/t/data" in table  # the data stage's figure and output

    path = write_pipeline(tmp_path, [
        {"name": "bad", "script": "scripts/toy_data.py", "config": str(bad), "output": "runs/t/bad"}])
    with pytest.raises(SystemExit, match="runs/t/logs/bad.log"):
        run_pipeline(path)
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "last" in captured.err and "n_entities" in captured.err


# ----------------------------------------------------------------------------------------------- installed
@pytest.mark.slow  # builds and installs a wheel into a new venv, then runs one stage: ~1 min
def test_installed_package_runs_from_any_directory(tmp_path):
    """`pip install .` (not editable) into a fresh venv; from another directory, `llm-recipes --help` lists the
    stages and `llm-recipes toy_data --config recipes/toy/toy_data.yaml` (the shipped recipe) writes its output
    under that directory."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)  # pip and setuptools: the system's
    python = env_dir / "bin" / "python"
    build_env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    source = tmp_path / "source"  # pip builds in the source tree (build/, egg-info): a copy keeps the checkout clean
    for name in ("src", "scripts", "recipes", "accelerate_configs"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    proc = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", str(source)],
                          capture_output=True, text=True, timeout=600, env=build_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    probe = "import llm_recipes, sys; print(llm_recipes.__file__); print(llm_recipes.PROJECT_ROOT)"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    located = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=work, env=env).stdout.split()
    assert located[0].startswith(str(env_dir)) and located[1].startswith(str(env_dir)), located  # the wheel, not the checkout
    assert (Path(located[1]) / "recipes/toy/pipeline.yaml").is_file()
    assert (Path(located[0]).parent / "serving" / "chat.html").is_file()  # package data: the serve chat page
    cli = env_dir / "bin" / "llm-recipes"
    help_text = subprocess.run([cli, "--help"], capture_output=True, text=True, cwd=work, env=env).stdout
    assert all(stage.name in help_text for stage in STAGES)
    proc = subprocess.run([cli, "toy_data", "--config", "recipes/toy/toy_data.yaml", "--n_entities", "6"],
                          capture_output=True, text=True, cwd=work, env={**env, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "runs/toy/data/llm_recipes.json").is_file()
    assert not (Path(located[1]) / "runs").exists()


# ----------------------------------------------------------------------------------------------- docs
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
TOP = ("scripts/", "src/", "recipes/", "accelerate_configs/", "benchmarks/", "docs/", "tests/")


def test_readme_stage_table_is_the_registry():
    import re

    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", (REPO_ROOT / "README.md").read_text(), re.M)
    assert rows == [(s.name, s.help) for s in STAGES]


def test_docs_name_only_files_that_exist():
    """Every repository path in the README and docs/ (in backticks or as a link) exists; `<...>`, `*`, `{...}` and
    `runs/` paths are patterns or outputs, not files."""
    import re

    missing = []
    for doc in DOCS:
        text = doc.read_text()
        links = [(doc.parent / t.split("#")[0]).resolve() for t in re.findall(r"\]\(([^)#][^)]*)\)", text)
                 if "://" not in t]
        quoted = [REPO_ROOT / p for p in re.findall(r"`([^` ]+)`", text) if p.startswith(TOP)]
        for path in [*links, *quoted]:
            name = str(path)
            if any(c in name for c in "<>*{}") or "/runs/" in name:
                continue
            if not path.exists():
                missing.append(f"{doc.relative_to(REPO_ROOT)}: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    assert not missing, missing


def library_modules() -> set[str]:
    """`cli`, `ppo/config`, ... for every module of src/llm_recipes: packages' __init__ and the `evaluate` metric
    scripts under evaluation/metrics/ (loaded by path, not imported) left out."""
    root = REPO_ROOT / "src" / "llm_recipes"
    return {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.py")
            if p.name != "__init__.py" and (root / "evaluation" / "metrics") not in p.parents}


def test_module_lists_match_the_tree():
    import re

    readme = (REPO_ROOT / "README.md").read_text().split("Modules of `src/llm_recipes/`")[1].split("```text")[1].split("```")[0]
    listed = set()
    for token in re.findall(r"[a-z_]+/ \([a-z_ ]+\)|[a-z_]+", readme):
        if "/" in token:
            package, names = token.split("/ (")
            listed |= {f"{package}/{n}" for n in names.rstrip(")").split()}
        else:
            listed.add(token)
    assert listed == library_modules()
    code_map = (REPO_ROOT / "docs" / "code_map.md").read_text()
    for module in library_modules():
        name = module.split("/")[-1]
        assert f"`{name}`" in code_map or f"`{module}.py`" in code_map, module


def test_a_seed_reaches_every_stage_whose_recipe_has_one():
    from llm_recipes.pipeline import Stage, with_seed

    def stage(script: str) -> Stage:
        return Stage(name=script, script=f"scripts/{script}.py", config="x.yaml", output="runs/x", args=["--a", "1"])

    assert with_seed(stage("dpo"), 3).args == ["--a", "1", "--seed", "3"]
    assert with_seed(stage("toy_data"), 3).args[-2:] == ["--seed", "3"]
    assert with_seed(stage("tokenizer"), 3).args == ["--a", "1"]  # no seed in its recipe: none passed
    assert with_seed(stage("dpo"), None).args == ["--a", "1"]
