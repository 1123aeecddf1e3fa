"""Each of the project's lm-eval task types over local files, offline, on the tiny model, with the chat template
applied as in training."""

from __future__ import annotations

import json
import re

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
    return run_lm_eval(model, tokenizer, tasks, num_fewshot=0, limit=6, batch_size=8, apply_chat_template=True).scores


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
    two_shot = run_lm_eval(model, tokenizer, [task], num_fewshot=2, limit=3, batch_size=4, apply_chat_template=True).scores
    assert set(two_shot["mc2"]) == {"acc", "acc_norm"}


def test_humaneval_offline_as_a_sandboxed_code_task(tiny):
    model, tokenizer = tiny
    task = local_task_config({"name": "humaneval_sandboxed", "type": "code", "data_files": "humaneval"}, {"timeout": 5}, 4)
    assert task["dataset_kwargs"]["data_files"]["test"].endswith("HumanEval.jsonl.gz")
    run = run_lm_eval(model, tokenizer, [task], num_fewshot=0, limit=2, batch_size=2, apply_chat_template=False)
    assert run.scores == {"humaneval_sandboxed": {"pass@1": 0.0}} and run.n_scored == {"humaneval_sandboxed": 2}


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
                         apply_chat_template=True, task_dirs=[str(tmp_path)]).scores
    assert set(scores) == {"toy_yaml_mc"} and 0 <= scores["toy_yaml_mc"]["acc"] <= 1


# ------------------------------------------------------------------ published benchmark shapes: GSM8K and MMLU
# A model whose greedy reply is known: the tiny model trained a few steps to answer every question with a GSM8K-style
# worked solution. GSM8K scores the number after "####" (commas, "$" and a final "." ignored, as lm-eval's gsm8k).
WORKED_REPLY = "6 x 700 = 4,200 apples.\n#### 4,200"
GSM8K_FINALS = ["4200", "4,200", "42", "17", "4200"]  # the references' final answers: 3 of 5 equal 4,200


def _gsm8k_rows(prefix: str = "") -> list[dict]:
    return [{"question": f"{prefix}Question {i}: how many apples are in {i} crates?",
             "answer": f"Each crate holds {i} x 10 = <<{i}*10={i * 10}>>{i * 10} apples.\n#### {final}"}
            for i, final in enumerate(GSM8K_FINALS)]


def _write_jsonl(path, rows) -> str:
    import gzip

    text = "".join(json.dumps(r) + "\n" for r in rows)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def answering_model(tiny):
    import copy

    return train_to_reply(copy.deepcopy(tiny[0]), tiny[1])


def train_to_reply(model, tokenizer):
    """A few steps of training until the greedy reply to each GSM8K-shaped question is WORKED_REPLY."""
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                           add_generation_prompt=True) for r in _gsm8k_rows()]
    encoded = [tokenizer(c + WORKED_REPLY + tokenizer.eos_token, return_tensors="pt").input_ids for c in chats]
    model.train()
    for step in range(150):
        ids = encoded[step % len(encoded)]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def _gsm8k_exact_match_by_hand(samples: list[dict]) -> float:
    """GSM8K scoring done by hand over the logged generations: the first `#### N` of the generation against the
    reference's text after '####', commas and a final '.' dropped."""
    hits = []
    for sample in samples:
        generation = sample["resps"][0][0]
        found = re.search(r"#### (-?[0-9.,]+)", generation)
        predicted = found.group(1).replace(",", "").rstrip(".") if found else None
        hits.append(predicted == sample["doc"]["answer"].split("####")[-1].strip().replace(",", ""))
    return sum(hits) / len(hits)


def _gsm8k_layout(root, kind: str) -> str:
    """The GSM8K rows as published: a JSON lines file (plain or gzipped), or openai/gsm8k's Hub folder layout."""
    if kind == "hub":
        from datasets import Dataset

        (root / "main").mkdir(parents=True)
        Dataset.from_list(_gsm8k_rows("TRAIN ")).to_parquet(root / "main" / "train-00000-of-00001.parquet")
        Dataset.from_list(_gsm8k_rows()).to_parquet(root / "main" / "test-00000-of-00001.parquet")
        return str(root / "main")
    root.mkdir(parents=True)
    return _write_jsonl(root / f"gsm8k.{kind}", _gsm8k_rows())


@pytest.mark.parametrize("layout", ["jsonl", "jsonl.gz", "hub"])
def test_gsm8k_final_answer_extracted_from_worked_solutions(answering_model, tmp_path, layout):
    model, tokenizer = answering_model
    data = _gsm8k_layout(tmp_path / "gsm8k", layout)
    task = local_task_config({"name": "gsm8k_local", "type": "generate_until", "data_files": data,
                              "answer_regex": "gsm8k", "max_gen_toks": 32})
    run = run_lm_eval(model, tokenizer, [task], num_fewshot=0, limit=None, batch_size=8, apply_chat_template=True,
                      log_samples=True)
    samples = run.samples["gsm8k_local"]
    assert [s["resps"][0][0] for s in samples] == [WORKED_REPLY] * 5  # the model says what it was trained to
    assert _gsm8k_exact_match_by_hand(samples) == pytest.approx(3 / 5)
    assert run.scores == {"gsm8k_local": {"exact_match": pytest.approx(3 / 5)}}
    assert run.n_scored == {"gsm8k_local": 5}


def test_gsm8k_few_shot_examples_show_the_worked_solution_from_the_train_split(answering_model, tmp_path):
    model, tokenizer = answering_model
    data = _gsm8k_layout(tmp_path / "gsm8k", "hub")
    task = local_task_config({"name": "gsm8k_2shot", "type": "generate_until", "data_files": data,
                              "answer_regex": "gsm8k", "max_gen_toks": 32})
    assert task["fewshot_split"] == "train" and task["test_split"] == "test"
    run = run_lm_eval(model, tokenizer, [task], num_fewshot=2, limit=3, batch_size=8, apply_chat_template=True,
                      log_samples=True)
    context = run.samples["gsm8k_2shot"][0]["arguments"][0][0]
    shown = [r for r in _gsm8k_rows("TRAIN ") if r["question"] in context]
    assert len(shown) == 2 and all(r["answer"] in context for r in shown)  # whole worked solutions, "#### N" included
    assert run.n_scored == {"gsm8k_2shot": 3}


def test_lm_eval_filter_list_as_given(answering_model, tmp_path):
    """lm-eval's own filter_list: two pipelines over short references, each reported under its filter's name."""
    model, tokenizer = answering_model
    rows = [{"question": r["question"], "answer": final} for r, final in zip(_gsm8k_rows(), ["4,200", "4", "200", "7", "4,200"])]
    data = _write_jsonl(tmp_path / "short.jsonl", rows)
    filters = [{"name": "last_number", "filter": [{"function": "regex", "regex_pattern": r"([0-9][0-9,]*)", "group_select": -1},
                                                  {"function": "take_first"}]},
               {"name": "first_number", "filter": [{"function": "regex", "regex_pattern": r"([0-9][0-9,]*)"},
                                                   {"function": "take_first"}]}]
    task = local_task_config({"name": "short", "type": "generate_until", "data_files": data, "filter_list": filters,
                              "max_gen_toks": 32})
    run = run_lm_eval(model, tokenizer, [task], num_fewshot=0, limit=None, batch_size=8, apply_chat_template=True)
    numbers = re.findall(r"[0-9][0-9,]*", WORKED_REPLY)  # what the model says: 6, 700, 4,200, 4,200
    # exact_match ignores case and punctuation (the comma) in this task type
    last = sum(numbers[-1].replace(",", "") == r["answer"].replace(",", "") for r in rows) / len(rows)
    first = sum(numbers[0].replace(",", "") == r["answer"].replace(",", "") for r in rows) / len(rows)
    assert (last, first) == (2 / 5, 0.0)
    assert run.scores == {"short": {"exact_match,last_number": pytest.approx(last),
                                    "exact_match,first_number": pytest.approx(first)}}


def test_bad_answer_regex_and_filters_are_named(tmp_path):
    data = _write_jsonl(tmp_path / "g.jsonl", _gsm8k_rows())
    base = {"name": "g", "type": "generate_until", "data_files": data}
    with pytest.raises(ConfigError, match="unknown key 'answer_regx'"):
        local_task_config({**base, "answer_regx": "gsm8k"})
    with pytest.raises(ConfigError, match="needs a group"):
        local_task_config({**base, "answer_regex": "#### [0-9]+"})
    with pytest.raises(ConfigError, match="unknown lm-eval filter function 'regexp'"):
        local_task_config({**base, "filter_list": [{"name": "x", "filter": [{"function": "regexp"}]}]})
    with pytest.raises(ConfigError, match="only for generate_until"):
        local_task_config({**base, "type": "perplexity", "answer_regex": "gsm8k"})
    no_final = _write_jsonl(tmp_path / "h.jsonl", [*_gsm8k_rows(), {"question": "q", "answer": "no final answer"}])
    with pytest.raises(DataError, match=r"h.jsonl: row 6: answer_regex .* finds no final answer"):
        local_task_config({**base, "data_files": no_final, "answer_regex": "gsm8k"})


def test_a_whole_hub_repository_with_several_configurations_is_refused(tmp_path):
    from datasets import Dataset

    for config in ("main", "socratic"):
        (tmp_path / config).mkdir()
        Dataset.from_list(_gsm8k_rows()).to_parquet(tmp_path / config / "test-00000-of-00001.parquet")
    with pytest.raises(ConfigError, match=r"several configurations \(main, socratic\): name one folder"):
        local_task_config({"name": "g", "type": "generate_until", "data_files": str(tmp_path), "answer_regex": "gsm8k"})


def _mmlu_rows(n: int, prefix: str = "") -> list[dict]:
    return [{"question": f"{prefix}Which city is the capital of country {i}?", "subject": "geography",
             "choices": [f"City {i}{c}" for c in "wxyz"], "answer": (i * 3) % 4} for i in range(n)]


def _continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    import torch

    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    ids = tokenizer(context + continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logprobs[i - 1, ids[i]].item() for i in range(len(context_ids), len(ids)))


@pytest.mark.parametrize("layout", ["hub", "jsonl"])
def test_mmlu_shaped_multiple_choice_accuracy_recomputed_with_transformers(tiny, tmp_path, layout):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    model, tokenizer = tiny
    rows = _mmlu_rows(12)
    if layout == "hub":  # cais/mmlu as published: all/{test,dev,...}-00000-of-00001.parquet, answer a class label
        features = Features({"question": Value("string"), "subject": Value("string"),
                             "choices": Sequence(Value("string")), "answer": ClassLabel(names=list("ABCD"))})
        (tmp_path / "all").mkdir()
        Dataset.from_list(rows, features=features).to_parquet(tmp_path / "all" / "test-00000-of-00001.parquet")
        Dataset.from_list(_mmlu_rows(3, "DEV "), features=features).to_parquet(tmp_path / "all" / "dev-00000-of-00001.parquet")
        data = str(tmp_path / "all")
    else:
        data = _write_jsonl(tmp_path / "mmlu.jsonl", rows)
    task = local_task_config({"name": "mmlu_local", "type": "multiple_choice", "data_files": data})
    run = run_lm_eval(model, tokenizer, [task], num_fewshot=0, limit=None, batch_size=8, apply_chat_template=True)
    # by hand: the chat-templated question, each choice's summed log-probability, the best one against the answer
    right = right_norm = 0
    for row in rows:
        context = tokenizer.apply_chat_template([{"role": "user", "content": row["question"]}], tokenize=False,
                                                add_generation_prompt=True)
        scores = [_continuation_logprob(model, tokenizer, context, choice) for choice in row["choices"]]
        right += max(range(4), key=lambda i: scores[i]) == row["answer"]
        right_norm += max(range(4), key=lambda i: scores[i] / len(row["choices"][i])) == row["answer"]
    assert run.scores["mmlu_local"] == {"acc": pytest.approx(right / 12), "acc_norm": pytest.approx(right_norm / 12)}
    assert run.n_scored == {"mmlu_local": 12}


def test_a_generation_budget_the_context_cannot_hold_is_named(tiny, tmp_path):
    model, tokenizer = tiny  # a 256-token context
    data = _write_jsonl(tmp_path / "g.jsonl", _gsm8k_rows())
    task = local_task_config({"name": "gsm8k_local", "type": "generate_until", "data_files": data,
                              "answer_regex": "gsm8k", "max_gen_toks": 256})
    with pytest.raises(ConfigError, match=r"benchmarks.gsm8k_local.max_gen_toks: 256 leaves no room for the prompt "
                                          r"in the model's 256-token context"):
        run_lm_eval(model, tokenizer, [task], num_fewshot=0, limit=None, batch_size=8, apply_chat_template=True)
