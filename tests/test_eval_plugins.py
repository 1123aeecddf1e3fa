"""Benchmark plug-ins of the evaluate stage (llm_recipes.evaluation.plugins) and the toy world as one of their users:
the library never imports the toy package; every plug-in a recipe names imports and takes the recipe's options; the
toy plug-ins' figures, through scripts/evaluate.py, equal figures counted by hand from replies known in advance."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_script

PACKAGE = REPO_ROOT / "src" / "llm_recipes"


def toy_imports(package: Path) -> list[str]:
    """`file:line` of every import of the toy package from a module of `package` outside it (absolute, `from
    llm_recipes import toy`, or relative)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        if parts[0] == "toy":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the module's own package
                    base = [package.name, *parts[:-1]][: len(parts) - node.level + 1 if node.level <= len(parts) else 0]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                names = [module, *(f"{module}.{a.name}" for a in node.names)]
            else:
                continue
            if any(n == "llm_recipes.toy" or n.startswith("llm_recipes.toy.") for n in names):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return found


def test_the_library_never_imports_the_toy_package():
    assert toy_imports(PACKAGE) == []


def test_the_import_check_finds_each_form_of_toy_import(tmp_path):
    package = tmp_path / "llm_recipes"
    for rel, text in {"toy/world.py": "from llm_recipes.evaluation import x\n", "a.py": "import llm_recipes.toy.world\n",
                      "b.py": "from llm_recipes import toy\n", "c.py": "from .toy import world\n",
                      "evaluation/d.py": "from ..toy.evaluate import f\n", "evaluation/e.py": "from .. import toy\n",
                      "evaluation/ok.py": "from ..evaluation import plugins\nimport llm_recipes.toys\n"}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    assert toy_imports(package) == ["llm_recipes/a.py:1", "llm_recipes/b.py:1", "llm_recipes/c.py:1",
                                    "llm_recipes/evaluation/d.py:1", "llm_recipes/evaluation/e.py:1"]


def _plugin_entries():
    for recipe in sorted((REPO_ROOT / "recipes").rglob("*.yaml")):
        config = yaml.safe_load(recipe.read_text()) or {}
        for name, spec in (config.get("benchmarks") or {}).items() if isinstance(config, dict) else []:
            if isinstance(spec, dict) and ":" in str(spec.get("type", "")):
                yield pytest.param(name, spec, id=f"{recipe.relative_to(REPO_ROOT / 'recipes')}:{name}")


@pytest.mark.parametrize(("name", "spec"), list(_plugin_entries()))
def test_every_plugin_a_recipe_names_imports_and_takes_its_options(name, spec):
    from llm_recipes.evaluation.plugins import import_plugin
    from llm_recipes.parser import build_options

    cls = import_plugin(spec["type"], f"benchmarks.{name}.type")
    build_options(cls.Options, {k: v for k, v in spec.items() if k != "type"}, f"benchmarks.{name}")


def test_the_toy_pipeline_evaluates_through_the_one_evaluate_stage():
    from llm_recipes.pipeline import load_pipeline

    stages = {s.name: s for s in load_pipeline(REPO_ROOT / "recipes" / "toy" / "pipeline.yaml").stages}
    for name in ("alignment", "cai_report", "evaluate"):
        assert Path(stages[name].script).name == "evaluate.py", name


# ----------------------------------------------------------------------------------- the toy plug-ins, end to end
@pytest.fixture(scope="module")
def answering_model(tiny_model_dir, tmp_path_factory):
    """A tiny model trained to reply WORKED_REPLY (then EOS) to the GSM8K-shaped questions."""
    from test_eval_tasks import train_to_reply
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = train_to_reply(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                      AutoTokenizer.from_pretrained(tiny_model_dir))
    out = tmp_path_factory.mktemp("answering")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(tmp_path, models: list, benchmark: dict, **extra) -> dict:
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({"models": [str(m) for m in models], "benchmarks": benchmark, "max_new_tokens": 40,
                                      "batch_size": 3, "output_dir": str(tmp_path / "out"), **extra}))
    proc = run_script("evaluate.py", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((tmp_path / "out" / "results.json").read_text())


@pytest.mark.slow
def test_heldout_questions_figures_are_those_counted_by_hand(tmp_path, answering_model):
    from test_eval_tasks import WORKED_REPLY, _gsm8k_rows

    questions = [r["question"] for r in _gsm8k_rows()]  # 5 questions, each answered WORKED_REPLY then EOS
    # gold answers: 2 of 5 are the reply; the trained format (a regex) matches 3 of 5 replies
    answers = [WORKED_REPLY, "12", WORKED_REPLY, "9", "4,200"]
    patterns = [r"6 x \d+ = [\d,]+ apples\.\n#### [\d,]+", "nothing", "nothing", r"[\s\S]*#### 4,200", r"[\s\S]*"]
    rows = [{"question": q, "answer": a, "answer_pattern": p} for q, a, p in zip(questions, answers, patterns)]
    data = _write_jsonl(tmp_path / "questions.jsonl", rows)
    results = _run(tmp_path, [answering_model], {"qa": {"type": "llm_recipes.toy.evaluate:HeldoutQuestions", "questions": data}},
                   model_names=["answers"])
    assert results["benchmarks"]["answers"]["qa"] == {"exact_match": 2 / 5, "format_rate": 3 / 5, "eos_rate": 1.0}
    assert results["benchmark_n"]["answers"] == {"qa": 5}
    assert results["benchmark_details"]["qa"]["examples"]["answers"][0] == {"question": questions[0], "answer": WORKED_REPLY}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| qa | exact_match | 0.400 |" in report and "| qa | format_rate | 0.600 |" in report
    assert json.loads((tmp_path / "out" / "llm_recipes.json").read_text())["benchmarks"]["answers"]["qa"]["exact_match"] == 0.4


@pytest.mark.slow
def test_toy_alignment_figures_are_those_counted_by_hand(tmp_path, answering_model, tiny_model_dir):
    import torch
    from test_eval_tasks import WORKED_REPLY, _gsm8k_rows
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    questions = [r["question"] for r in _gsm8k_rows()]
    # 3 fact questions (1 answered exactly), 2 forbidden requests (not refused: the reply is no refusal)
    kinds = ["fact", "fact", "fact", "forbidden", "forbidden_new_phrasing"]
    rows = [{"question": q, "kind": k, "answer": WORKED_REPLY if i == 0 else "no"} for i, (q, k) in enumerate(zip(questions, kinds))]
    torch.manual_seed(0)
    reward_dir = tmp_path / "reward"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(reward_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(reward_dir)
    pairs = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
              "rejected": [{"role": "assistant", "content": r}], "kind": k}
             for q, c, r, k in zip(questions, ["yes", "The capital is X.", "4", "no", "I cannot help."],
                                   ["no", "A", "four hundred apples", "yes yes", "Sure."], ["a", "a", "b", "b", "b"])]
    benchmark = {"align": {"type": "llm_recipes.toy.alignment_eval:ToyAlignment",
                           "questions": _write_jsonl(tmp_path / "heldout.jsonl", rows), "reference_model": str(answering_model),
                           "reward_model": str(reward_dir), "preferences": _write_jsonl(tmp_path / "pairs.jsonl", pairs)}}
    results = _run(tmp_path, [answering_model, tiny_model_dir], benchmark, model_names=["trained", "random"])

    # the reward model by hand: one conversation at a time, no padding
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()

    def reward(prompt: list[dict], reply: str) -> float:
        text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
        with torch.no_grad():
            return reward_model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()

    wins = [reward(p["prompt"], p["chosen"][0]["content"]) > reward(p["prompt"], p["rejected"][0]["content"]) for p in pairs]
    accuracy = results["benchmark_details"]["align"]["reward_model"]
    assert accuracy["n"] == 5 and accuracy["all"] == pytest.approx(sum(wins) / 5)
    assert accuracy["a"] == pytest.approx(sum(wins[:2]) / 2) and accuracy["b"] == pytest.approx(sum(wins[2:]) / 3)

    trained = results["benchmarks"]["trained"]["align"]
    rewards = [reward([{"role": "user", "content": q}], WORKED_REPLY) for q in questions]
    assert trained["exact_match"] == pytest.approx(1 / 3) and trained["eos_rate"] == 1.0
    assert trained["refusal_rate"] == 0.0 and trained["refusal_new_phrasing"] == 0.0 and trained["over_refusal"] == 0.0
    assert trained["mean_reward"] == pytest.approx(sum(rewards) / 5, abs=1e-4)
    assert trained["reward_fact"] == pytest.approx(sum(rewards[:3]) / 3, abs=1e-4)
    assert trained["kl_to_reference"] == 0.0  # the reference itself
    random = results["benchmarks"]["random"]["align"]
    assert math.isfinite(random["kl_to_reference"]) and random["kl_to_reference"] > 1.0  # random weights vs trained
    assert results["benchmark_n"] == {"trained": {"align": 5}, "random": {"align": 5}}
    assert "Reward model: pairwise accuracy on 5 held-out pairs" in (tmp_path / "out" / "report.md").read_text()
