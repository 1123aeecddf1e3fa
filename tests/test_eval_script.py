"""scripts/evaluate.py end to end on tiny models (a full folder and a LoRA adapter folder) over the toy world's
evaluation sets: results.json, report.md, report.html, completion marker; bad input -> one-line error, exit 2."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import run_script


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _recipe(tmp_path, toy_data_dir, models, **extra) -> str:
    bench = toy_data_dir / "benchmarks"
    config = {
        "models": [str(m) for m in models], "model_names": ["base", "lora"][: len(models)] if len(models) < 3 else None,
        "benchmarks": {"facts_mc": {"type": "multiple_choice", "data_files": str(bench / "facts_mc.jsonl")},
                       "facts_gen": {"type": "generate_until", "data_files": str(bench / "facts_gen.jsonl")},
                       "corpus_ppl": {"type": "perplexity", "data_files": str(bench / "corpus_ppl.jsonl")},
                       "toy_code": {"type": "code", "data_files": str(bench / "code.jsonl")}},
        "limit": 4, "max_gen_toks": 8, "max_new_tokens": 8, "batch_size": 16,
        "redteam_prompts": str(bench / "redteam.jsonl"), "jailbreaks": str(bench / "jailbreaks.jsonl"),
        "bias_pairs": str(bench / "bias_pairs.jsonl"), "comparison_prompts": str(toy_data_dir / "alignment_heldout"),
        "comparison_limit": 12, "reward_function": "llm_recipes.toy.preferences:toy_reward",
        "output_dir": str(tmp_path / "out"), **extra,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_evaluate_script_compares_a_full_model_and_an_adapter(tmp_path, toy_data_dir, tiny_model_dir, adapter_dir):
    proc = run_script("evaluate.py", "--config", _recipe(tmp_path, toy_data_dir, [tiny_model_dir, adapter_dir]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "lora"]
    for name in ("base", "lora"):
        assert set(results["benchmarks"][name]) == {"facts_mc", "facts_gen", "corpus_ppl", "toy_code"}
        assert results["benchmark_n"][name] == {"facts_mc": 4, "facts_gen": 4, "corpus_ppl": 4, "toy_code": 4}  # limit: 4
        n_prompts = len((toy_data_dir / "benchmarks" / "redteam.jsonl").read_text().splitlines())
        assert results["red_team"][name]["n"] == n_prompts * 3  # every prompt under 3 jailbreak wrappers
        # a reward *function* scores no bias; the toy pairs carry a `contrast` reply
        assert set(results["bias"][name]) == {"loglik", "loglik_contrast", "answer"}
    # the adapter changes the model: its scores differ from the base model's
    assert results["benchmarks"]["lora"]["corpus_ppl"] != results["benchmarks"]["base"]["corpus_ppl"]
    assert results["comparison"]["baseline"] == "base" and results["comparison"]["win_rates"]["lora"]["reward"]["n"] == 12
    assert "## Benchmarks" in (out / "report.md").read_text() and (out / "report.html").stat().st_size > 10_000
    assert json.loads((out / "llm_recipes.json").read_text())["stage"] == "evaluate"


def _script():
    import importlib.util

    from conftest import REPO_ROOT

    # not under the name `evaluate`, which is the metrics package's
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO_ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra, message", [
    ({"baseline": "other"}, "baseline: 'other' is not one of the models"),
    ({"judge": "reward_model", "reward_function": None}, "judge: 'reward_model' needs reward_model"),
    ({"benchmarks": {"x": {"type": "essay", "data_files": "x.jsonl"}}}, "benchmarks: entry"),
    ({"model_names": ["a", "b"]}, "model_names: 2 names for 1 models"),
    # benchmark plug-ins: named by the recipe, their options checked before any model loads
    ({"benchmarks": {"qa": {"type": "llm_recipes.toy.evaluate:NoSuchBenchmark"}}}, "benchmarks.qa.type: cannot import"),
    ({"benchmarks": {"qa": {"type": "llm_recipes.toy.evaluate:score_answers"}}}, "benchmarks.qa.type: .* is not a BenchmarkPlugin"),
    ({"benchmarks": {"qa": {"type": "llm_recipes.toy.evaluate:HeldoutQuestions"}}}, "benchmarks.qa.questions: not set"),
    ({"benchmarks": {"qa": {"type": "llm_recipes.toy.evaluate:HeldoutQuestions", "questions": "./no/such/questions"}}},
     "benchmarks.qa.questions: ./no/such/questions: no such file or folder"),
    ({"benchmarks": {"qa": {"type": "llm_recipes.toy.evaluate:HeldoutQuestions", "questions": "q", "colour": "red"}}},
     "benchmarks.qa: unknown key 'colour'"),
    ({"benchmarks": {"al": {"type": "llm_recipes.toy.alignment_eval:ToyAlignment", "questions": "q", "kl_samples": "two"}}},
     "benchmarks.al.*kl_samples.*'two'"),
])
def test_bad_input_is_named_before_any_model_loads(tmp_path, toy_data_dir, tiny_model_dir, extra, message):
    from llm_recipes.parser import parse_config
    from llm_recipes.errors import RecipeError

    script = _script()
    (args,) = parse_config(script.CONFIG_CLASSES, ["--config", _recipe(tmp_path, toy_data_dir, [tiny_model_dir], **extra)])
    with pytest.raises(RecipeError, match=message):
        script.main(args)
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_input_exits_2_with_one_line(tmp_path, toy_data_dir):
    proc = run_script("evaluate.py", "--config", _recipe(tmp_path, toy_data_dir, ["/nonexistent/model"]))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    # one line naming the key and the path (the wording is the shared model-path check's)
    assert last.startswith("error: models: ") and "/nonexistent/model" in last, proc.stderr[-1500:]


@pytest.mark.slow
def test_gsm8k_through_the_evaluate_script_with_logged_samples(tmp_path, tiny_model_dir):
    """The evaluate stage on GSM8K in its Hub layout, with a model whose replies are known: results.json holds the
    exact match and the number of examples scored, samples/ the generations it was computed from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from test_eval_tasks import WORKED_REPLY, _gsm8k_exact_match_by_hand, _gsm8k_layout, train_to_reply

    model_dir = tmp_path / "answers"
    model, tokenizer = train_to_reply(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                      AutoTokenizer.from_pretrained(tiny_model_dir))
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = _gsm8k_layout(tmp_path / "gsm8k", "hub")
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({
        "models": [str(model_dir)], "model_names": ["answers"], "num_fewshot": 0, "log_samples": True,
        "benchmarks": {"gsm8k": {"type": "generate_until", "data_files": data, "answer_regex": "gsm8k", "max_gen_toks": 32}},
        "output_dir": str(tmp_path / "out")}))
    proc = run_script("evaluate.py", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples" / "answers" / "gsm8k.jsonl").read_text().splitlines()]
    assert [s["resps"][0][0] for s in samples] == [WORKED_REPLY] * 5
    assert results["benchmarks"]["answers"]["gsm8k"]["exact_match"] == pytest.approx(_gsm8k_exact_match_by_hand(samples))
    assert _gsm8k_exact_match_by_hand(samples) == pytest.approx(3 / 5)
    assert results["benchmark_n"] == {"answers": {"gsm8k": 5}}
