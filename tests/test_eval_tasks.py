"""Each of the project's lm-eval task types over local files, offline, on the tiny model, with the chat template
applied as in training."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes.errors import ConfigError, DataError
from llm_recipes.evaluation.tasks import local_task_config, run_lm_eval
from llm_recipes.toy import ToyWorld
from llm_recipes.toy.benchmarks import write_benchmarks


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    write_benchmarks(ToyWorld(seed=0, n_entities=40), out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def scores(tiny, bench_dir):
    model, tokenizer = tiny
    specs = [("mc", "multiple_choice", "facts_mc"), ("gen", "generate_until", "facts_gen"),
             ("ppl", "perplexity", "corpus_ppl"), ("code", "code", "code")]
    tasks = [local_task_config({"name": n, "type": t, "data_files": str(bench_dir / f"{f}.jsonl")}, {"timeout": 5}, 8)
             for n, t, f in specs]
    return run_lm_eval(model, tokenizer, tasks, num_fewshot=0, limit=6, batch_size=8, apply_chat_template=True)


def test_multiple_choice_by_loglikelihood(scores):
    assert set(scores["mc"]) == {"acc", "acc_norm"} and 0 <= scores["mc"]["acc"] <= 1


def test_generate_until_exact_match(scores):
    assert scores["gen"] == {"exact_match": 0.0}  # a random model never says the fact


def test_perplexity_and_bits_per_byte(scores):
    ppl = scores["ppl"]
    assert set(ppl) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert ppl["bits_per_byte"] > 1 and ppl["byte_perplexity"] == pytest.approx(2 ** ppl["bits_per_byte"], rel=1e-6)


def test_code_pass_at_k_through_the_sandbox(scores):
    assert scores["code"] == {"pass@1": 0.0}


def test_few_shot_and_chat_template_reach_the_prompts(tiny, bench_dir):
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, device="cpu")
    chat = [{"role": "user", "content": "Tell me the capital of Mizor."}]
    assert lm.apply_chat_template(chat) == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user" in lm.apply_chat_template(chat)
    task = local_task_config({"name": "mc2", "type": "multiple_choice", "data_files": str(bench_dir / "facts_mc.jsonl")})
    two_shot = run_lm_eval(model, tokenizer, [task], num_fewshot=2, limit=3, batch_size=4, apply_chat_template=True)
    assert set(two_shot["mc2"]) == {"acc", "acc_norm"}


def test_humaneval_offline_as_a_sandboxed_code_task(tiny):
    model, tokenizer = tiny
    task = local_task_config({"name": "humaneval_sandboxed", "type": "code", "data_files": "humaneval"}, {"timeout": 5}, 4)
    assert task["dataset_kwargs"]["data_files"]["test"].endswith("HumanEval.jsonl.gz")
    scores = run_lm_eval(model, tokenizer, [task], num_fewshot=0, limit=2, batch_size=2, apply_chat_template=False)
    assert scores == {"humaneval_sandboxed": {"pass@1": 0.0}}


def test_bad_benchmark_specs_and_rows_are_named(tmp_path):
    with pytest.raises(ConfigError, match="type"):
        local_task_config({"name": "x", "type": "essay", "data_files": "x.jsonl"})
    with pytest.raises(DataError, match="not found"):
        local_task_config({"name": "x", "type": "perplexity", "data_files": str(tmp_path / "missing.jsonl")})
    bad = tmp_path / "mc.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n"
                   + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(DataError, match=r"mc.jsonl: row 2 has answer 5"):
        local_task_config({"name": "x", "type": "multiple_choice", "data_files": str(bad)})
    bad.write_text(json.dumps({"prompt": "def f():\n", "test": "..."}) + "\n")
    with pytest.raises(DataError, match="row 1 lacks column 'entry_point'"):
        local_task_config({"name": "x", "type": "code", "data_files": str(bad)})


def test_a_yaml_task_from_task_dirs_runs_offline(tiny, bench_dir, tmp_path):
    model, tokenizer = tiny
    (tmp_path / "toy_yaml_mc.yaml").write_text(
        "task: toy_yaml_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {bench_dir / 'facts_mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n")
    scores = run_lm_eval(model, tokenizer, ["toy_yaml_mc"], num_fewshot=0, limit=3, batch_size=4,
                         apply_chat_template=True, task_dirs=[str(tmp_path)])
    assert set(scores) == {"toy_yaml_mc"} and 0 <= scores["toy_yaml_mc"]["acc"] <= 1
