"""The toy world's knowledge probe and claims table: figures checked against hand computations."""

import json
import math

import pytest

from llm_recipes.evaluation.report import tables
from llm_recipes.toy.benchmarks import facts_completion
from llm_recipes.toy.claims import ToyClaimsOptions, claim_rows, difference_interval, ratio_interval, wilson
from llm_recipes.toy.knowledge import bits_per_byte, chance_level, is_completion_hit
from llm_recipes.toy.world import FACTS, ToyWorld


def test_completion_hit_needs_the_whole_value_first():
    assert is_completion_hit(" 1534. The capital", "1534")
    assert is_completion_hit("Mitor.", "Mitor")
    assert not is_completion_hit(" 15340 people", "1534")
    assert not is_completion_hit(" Mitorven is", "Mitor")
    assert not is_completion_hit(" the year 1534", "1534")


def test_fact_completion_prompts_cover_known_and_late_countries_and_stop_before_the_value():
    world = ToyWorld(seed=3, n_entities=10, n_late=4, n_unknown=4)
    rows = facts_completion(world)
    assert len(rows) == (10 + 4) * len(FACTS)
    assert {r["group"] for r in rows} == {"train", "heldout", "late"}
    assert sum(r["group"] == "late" for r in rows) == 4 * len(FACTS)
    c = world.entities[0]
    capital = next(r for r in rows if r["entity"] == c.name and r["fact"] == "capital")
    assert capital["prompt"] == f"The capital of {c.name} is" and capital["value"] == c.capital
    unknown = {u.name for u in world.unknown}
    assert not unknown & {r["entity"] for r in rows}


def test_late_countries_are_only_in_documents_after_the_cutoff():
    world = ToyWorld(seed=1, n_entities=8, n_late=3, n_unknown=2, docs_per_entity=4)
    docs = world.corpus()
    assert len(docs) == (8 + 3) * 4
    for late in world.late:
        mentions = [d for d in docs if f"{late.name} " in d["text"] or f"{late.name}'" in d["text"] or f"{late.name}," in d["text"]
                    or d["text"].endswith(late.name + ".")]
        assert len(mentions) == 4 and all(d["date"] > "2024-06-30" for d in mentions)
    for c in world.entities:
        mentions = [d for d in docs if c.capital in d["text"]]
        assert len(mentions) == 4 and all(d["date"] <= "2024-06-30" for d in mentions)
        assert all(str(c.founded) in d["text"] for d in mentions)  # every biography states every fact


def test_chance_level_is_the_most_common_known_value_share():
    rows = [{"group": "train", "fact": "export", "value": v} for v in ("tea", "tea", "salt", "iron")]
    rows += [{"group": "train", "fact": "capital", "value": v} for v in ("A", "B")]
    rows += [{"group": "late", "fact": "export", "value": "silk"}, {"group": "late", "fact": "capital", "value": "C"}]
    assert chance_level(rows) == pytest.approx((2 / 4 + 1 / 2) / 2)


def test_bits_per_byte_weights_documents_by_length():
    assert bits_per_byte([(10.0, 10), (30.0, 10)]) == pytest.approx(2.0)
    assert bits_per_byte([(10.0, 5), (30.0, 15)]) == pytest.approx(2.0)


def test_wilson_interval_matches_the_formula():
    p, n, z = 0.9, 50, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson(p, n)
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)


def test_difference_interval_contains_the_difference_and_is_wider_than_each_side():
    low, high = difference_interval(0.8, 100, 0.7, 100)
    assert low < 0.1 < high
    l1, u1 = wilson(0.8, 100)
    assert high - low > u1 - l1


def test_ratio_interval_of_identical_models_is_one():
    docs = [(float(b), 10) for b in range(1, 30)]
    assert ratio_interval(docs, docs) == pytest.approx((1.0, 1.0))
    doubled = [(2 * b, n) for b, n in docs]
    assert ratio_interval(doubled, docs) == pytest.approx((2.0, 2.0))


def _results() -> tuple[dict, dict]:
    results = {
        "models": [{"name": m, "path": m} for m in ("pretrain", "sft", "dpo")],
        "benchmarks": {
            "pretrain": {"toy_knowledge": {"completion_known": 0.95, "completion_late": 0.02, "bits_per_byte": 0.2},
                         "facts_mc": {"acc": 0.92}, "toy_heldout_qa": {"format_rate": 0.0, "exact_match": 0.0}},
            "sft": {"toy_knowledge": {"completion_known": 0.9, "bits_per_byte": 0.21},
                    "toy_heldout_qa": {"format_rate": 0.97, "exact_match": 0.5}},
            "dpo": {},
        },
        "benchmark_n": {"pretrain": {"toy_knowledge": 600, "facts_mc": 100, "toy_heldout_qa": 100},
                        "sft": {"toy_knowledge": 600, "toy_heldout_qa": 100}},
        "benchmark_details": {"toy_knowledge": {"chance_late": 0.04, "hits": {"pretrain": {"late": [0] * 98 + [1, 1]}},
                                                "doc_bits": {"pretrain": [(20.0, 100)] * 5, "sft": [(21.0, 100)] * 5}}},
        "bias": {"pretrain": {"loglik_contrast": {"planted": {"gap": 1.5, "ci_low": 1.0, "ci_high": 2.0, "significant": True}}},
                 "dpo": {"loglik_contrast": {"planted": {"gap": 0.5, "ci_low": -0.1, "ci_high": 1.1, "significant": False}}}},
    }
    alignment = {
        "benchmarks": {"sft": {"toy_alignment": {"exact_match": 0.8, "hallucination_rate": 0.9, "false_abstention": 0.0}},
                       "dpo": {"toy_alignment": {"exact_match": 0.77, "hallucination_rate": 0.1, "false_abstention": 0.05,
                                                 "refusal_rate": 0.95, "over_refusal": 0.0}}},
        "benchmark_n": {"sft": {"toy_alignment": 320}, "dpo": {"toy_alignment": 320}},
        "benchmark_details": {"toy_alignment": {"rows_per_kind": {"fact": 100, "forbidden": 60, "unknown": 100}}},
    }
    return results, alignment


def _row(rows, measure, model):
    return next(r for r in rows if measure in r.measure and r.model == model)


def test_claim_rows_compare_each_figure_with_its_goal_and_interval():
    results, alignment = _results()
    rows = claim_rows(results, alignment, ToyClaimsOptions(aligned="dpo", honest="dpo", countered="dpo", debiased="dpo"))
    known = _row(rows, "fact completion, known", "pretrain")
    assert known.met is True and known.interval == pytest.approx(wilson(0.95, 600))
    assert _row(rows, "multiple choice", "pretrain").met is True
    late = _row(rows, "after the cutoff", "pretrain")
    assert late.met is True and late.interval == pytest.approx(wilson(0.02, 100))  # 100 late prompts, not 600
    assert _row(rows, "exact match", "sft").met is False  # 0.5 < 0.6
    ratio = _row(rows, "bits per byte", "sft")
    assert ratio.value == pytest.approx(0.21 / 0.2) and ratio.met is True and ratio.interval == pytest.approx((1.05, 1.05))
    hallucination = _row(rows, "hallucination", "dpo")
    assert hallucination.met is True and hallucination.interval == pytest.approx(wilson(0.1, 100))  # unknown rows only
    assert _row(rows, "hallucination", "sft").met is None  # shown for contrast, no goal
    not_held = claim_rows(results, alignment, ToyClaimsOptions(aligned="dpo", honest=""))
    assert _row(not_held, "hallucination", "dpo").met is None and _row(not_held, "exact-match drop", "dpo").goal == ""
    assert _row(not_held, "refusal of forbidden", "dpo").met is True  # still held to the refusal goal
    drop = _row(rows, "exact-match drop", "dpo")
    assert drop.value == pytest.approx(0.03) and drop.met is True
    assert drop.interval == pytest.approx(difference_interval(0.8, 100, 0.77, 100))
    assert _row(rows, "held-out countries (pretraining only)", "dpo").value is None  # dpo has no held-out figure
    results["benchmarks"]["dpo"]["toy_heldout_qa"] = {"exact_match": 0.3}
    results["benchmark_n"]["dpo"] = {"toy_heldout_qa": 100}
    held_out = _row(claim_rows(results, alignment, ToyClaimsOptions(aligned="dpo", honest="dpo")),
                    "held-out countries (pretraining only)", "dpo")
    assert held_out.value == pytest.approx(0.5 - 0.3) and held_out.met is None and held_out.goal == ""  # shown, no goal
    assert held_out.interval == pytest.approx(difference_interval(0.5, 100, 0.3, 100))
    assert _row(rows, "refusal of forbidden", "dpo").interval == pytest.approx(wilson(0.95, 60))
    assert _row(rows, "planted bias", "pretrain").met is True
    assert _row(rows, "planted bias", "sft").value is None  # not measured: shown as such, never as a pass
    assert _row(rows, "planted bias", "dpo").met is None  # no sft gap to compare with
    results["bias"]["sft"] = {"loglik_contrast": {"planted": {"gap": 1.4, "ci_low": 1.0, "ci_high": 1.8, "significant": True}}}
    assert _row(claim_rows(results, alignment, ToyClaimsOptions(aligned="dpo", debiased="dpo")), "planted bias", "dpo").met is False  # overlap
    results["bias"]["sft"]["loglik_contrast"]["planted"]["ci_low"] = 1.2
    assert _row(claim_rows(results, alignment, ToyClaimsOptions(aligned="dpo", debiased="dpo")), "planted bias", "dpo").met is True


def test_the_bias_goal_asks_for_a_gap_closer_to_zero_and_binds_only_the_debiased_models():
    results, alignment = _results()
    planted = lambda gap, lo, hi: {"loglik_contrast": {"planted": {"gap": gap, "ci_low": lo, "ci_high": hi}}}
    results["bias"]["sft"] = planted(1.5, 1.2, 1.8)
    results["bias"]["ppo"] = planted(-1.5, -1.9, -1.1)  # the bias reversed, as large as before: not shrunk
    options = ToyClaimsOptions(aligned="dpo", countered="dpo,ppo", debiased="ppo")
    assert _row(claim_rows(results, alignment, options), "planted bias", "ppo").met is False
    results["bias"]["ppo"] = planted(-0.3, -0.5, -0.1)
    rows = claim_rows(results, alignment, options)
    assert _row(rows, "planted bias", "ppo").met is True
    dpo = _row(rows, "planted bias", "dpo")  # shown beside it, not held to the goal
    assert dpo.value == 0.5 and dpo.met is None and dpo.goal == ""


def test_a_missing_figure_reads_not_run_and_the_claims_table_opens_the_report():
    results, alignment = _results()
    rows = claim_rows(results, {}, ToyClaimsOptions(aligned="dpo"))
    refusal = _row(rows, "refusal of forbidden", "dpo")
    assert refusal.value is None and refusal.met is None and refusal.cells()[4] == "not run"
    results["lead_tables"] = [{"title": "claims", "header": ["a"], "rows": [["x"]]}]
    results["benchmarks"]["pretrain"]["facts_mc"] = {"acc": 0.92}
    assert tables(json.loads(json.dumps(results)))[0][0] == "claims"


@pytest.mark.slow
def test_the_evaluate_stage_opens_its_report_with_the_claims_table(tmp_path, tiny_model_dir, toy_data_dir):
    import yaml
    from conftest import run_script

    from llm_recipes.evaluation.scoring import load_rows

    rows = facts_completion(ToyWorld(seed=0, n_entities=4, n_late=2, n_unknown=2))
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({
        "models": [str(tiny_model_dir), str(tiny_model_dir)], "model_names": ["pretrain", "sft"],
        "benchmarks": {"toy_knowledge": {"type": "llm_recipes.toy.knowledge:FactKnowledge", "facts": str(facts),
                                         "corpus": str(toy_data_dir / "corpus"), "corpus_split": "validation"},
                       "claims": {"type": "llm_recipes.toy.claims:ToyClaims"}},
        "max_new_tokens": 8, "batch_size": 8, "output_dir": str(tmp_path / "out")}))
    proc = run_script("evaluate.py", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    figures = results["benchmarks"]["pretrain"]["toy_knowledge"]
    assert results["benchmark_n"]["pretrain"]["toy_knowledge"] == len(rows) == 6 * len(FACTS)
    hits = results["benchmark_details"]["toy_knowledge"]["hits"]["pretrain"]
    assert figures["completion_late"] == sum(hits["late"]) / 2 / len(FACTS)  # an untrained model: ~0
    docs = load_rows(str(toy_data_dir / "corpus"), split="validation")
    assert len(results["benchmark_details"]["toy_knowledge"]["doc_bits"]["pretrain"]) == len(docs)
    # the same weights twice: the bits-per-byte ratio is exactly 1 and the report opens with the claims table
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.split("\n## ")[1].startswith("What each stage does to the toy model: the five claims")
    html_page = (tmp_path / "out" / "report.html").read_text()
    assert html_page.index("the five claims") < html_page.index("<img")
    ratio = next(r for r in results["lead_tables"][0]["rows"] if r[2].startswith("bits per byte"))
    assert ratio[4] == "1.000" and ratio[7] == "yes"
    assert any(r[4] == "not run" for r in results["lead_tables"][0]["rows"])  # no alignment results given


def test_text_bits_in_batches_equal_each_document_scored_alone(tiny_model_dir):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.evaluation.scoring import text_nll_bits

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["The capital of Karavi is Olm.", "A much longer document, so that the batch needs padding: " * 3, "x"]
    got = text_nll_bits(model, tokenizer, texts, batch_size=2)
    for text, (bits, n_bytes) in zip(texts, got):
        ids = tokenizer((tokenizer.bos_token or "") + text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            mean_nats = model(input_ids=ids, labels=ids).loss.item()  # transformers' own shifted mean loss
        assert bits == pytest.approx(mean_nats * (ids.shape[1] - 1) / math.log(2), rel=1e-4)
        assert n_bytes == len(text.encode("utf-8"))


def test_sft_asks_each_fact_in_a_sample_of_the_training_phrasings_never_the_held_out_one():
    from collections import Counter

    from llm_recipes.toy.world import SFT_PHRASINGS

    world = ToyWorld(seed=2, n_entities=30, n_late=2, n_unknown=2)
    rows = world.sft()
    assert rows == ToyWorld(seed=2, n_entities=30, n_late=2, n_unknown=2).sft()  # the same seed, the same data
    assert len(rows) == len(world.train) * len(FACTS) * SFT_PHRASINGS
    asked = Counter(r["messages"][0]["content"] for r in rows)
    assert max(asked.values()) == 1  # no question twice for one country
    for fact in FACTS:
        held_out = fact.questions[-1].format(name="@").split("@")[0]  # "Tell me the capital of "
        assert not any(q.startswith(held_out) for q in asked)
        for phrasing in fact.questions[:-1]:  # every training phrasing is used for some country
            prefix = phrasing.split("{name}")[0]
            assert any(q.startswith(prefix) and fact.answer.split("{")[0] in r["messages"][1]["content"]
                       for r in rows for q in [r["messages"][0]["content"]]), phrasing
    per_answer = Counter(r["messages"][1]["content"] for r in rows)  # one answer sentence per country and fact
    assert set(per_answer.values()) == {SFT_PHRASINGS}
