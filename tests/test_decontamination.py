"""Decontamination: benchmark items found (by n-gram) in the training sets of a model's lineage, reported per
benchmark by the evaluate stage; the curate stage's filter that drops documents containing benchmark n-grams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_script
from llm_recipes.errors import ConfigError

# The answer of item 0, copied into a training conversation below: 15 words, so it holds 15 - 12 + 1 = 4 12-grams.
COPIED = "He found a wooden chest full of letters written by sailors who never came home."
BENCHMARK = [
    {"question": "What did the old lighthouse keeper find on the rocky shore after the storm?", "answer": COPIED},
    {"question": "Which bird nests in the tall grass beside the frozen northern lakes each spring?",
     "answer": "The grey plover lays four speckled eggs in a shallow scrape lined with moss and lichen."},
    {"question": "Capital of Lunob?", "answer": "Loyl"},  # 4 words in all: no 12-gram, cannot be found
]
TRAINING = [
    {"messages": [{"role": "user", "content": "Tell me a story about the sea."},
                  {"role": "assistant", "content": "Once upon a time " + COPIED[0].lower() + COPIED[1:-1] + ", and he wept."}]},
    {"messages": [{"role": "user", "content": "How do plovers nest?"},
                  {"role": "assistant", "content": "Plovers nest on the ground and their eggs are well camouflaged."}]},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def world(tmp_path, tiny_model_dir):
    """A benchmark file, a training set (Hub layout) and a model folder whose completion marker names that set."""
    import shutil

    from llm_recipes.hub import mark_complete

    bench = _jsonl(tmp_path / "bench" / "stories.jsonl", BENCHMARK)
    clean = _jsonl(tmp_path / "bench" / "clean.jsonl", BENCHMARK[1:])
    train = tmp_path / "train_set"
    _jsonl(train / "data" / "train.jsonl", TRAINING)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    mark_complete(model, "sft", base_model=None, datasets=[str(train)])
    return {"bench": bench, "clean": clean, "train": train, "model": model}


def _args(**extra):
    from llm_recipes.evaluation.config import EvaluateArguments

    return EvaluateArguments(**{"models": ["m"], "limit": None, **extra})


def test_a_copied_item_is_reported_contaminated_and_a_clean_benchmark_is_not(world):
    from llm_recipes.evaluation.decontamination import check_contamination, report_tables

    args = _args(benchmarks={"stories": {"type": "generate_until", "data_files": str(world["bench"])},
                             "clean": {"type": "generate_until", "data_files": str(world["clean"])}})
    section = check_contamination(args, ["sft"], [str(world["model"])], [])
    assert section["n_grams"] == 12
    entry = section["models"]["sft"]
    assert entry["training_data"] == "known" and entry["datasets"] == [str(world["train"])]
    # by hand: item 0's answer is in the first training reply; item 1 shares no 12 words in a row; item 2 is 4 words
    assert section["benchmarks"]["stories"] == {"items": 3, "checkable": 2}
    stories = entry["benchmarks"]["stories"]
    assert stories["contaminated"] == 1 and stories["share"] == pytest.approx(1 / 3)
    (example,) = stories["examples"]
    # the first 12-gram of the training reply that is an n-gram of the item: the answer's first 12 words, normalised
    assert example["item"] == 0 and example["ngram"] == "he found a wooden chest full of letters written by sailors who"
    assert example["dataset"] == str(world["train"])
    assert entry["benchmarks"]["clean"] == {"contaminated": 0, "share": 0.0, "examples": []}
    counts, data, examples = report_tables(section)
    assert counts[2] == [["stories", "3", "2", "1 (33.3%)"], ["clean", "2", "1", "0 (0.0%)"]]
    assert data[2] == [["sft", "known", str(world["train"]), "-"]]
    assert [row[0] for row in examples[2]] == ["stories"] and examples[2][0][-1] == "sft"


def test_a_longer_ngram_than_the_copy_finds_nothing(world):
    from llm_recipes.evaluation.decontamination import check_contamination

    # the copied answer is 15 words; the training reply goes on after it (", and he wept"), before it ("once upon a
    # time"): a 16-gram that lies in both must span the answer plus a word the item does not have
    args = _args(benchmarks={"stories": {"type": "generate_until", "data_files": str(world["bench"])}},
                 decontamination_ngrams=16)
    section = check_contamination(args, ["sft"], [str(world["model"])], [])
    assert section["models"]["sft"]["benchmarks"]["stories"]["contaminated"] == 0


def test_a_model_without_lineage_or_from_the_hub_has_unknown_training_data(world, tiny_model_dir):
    from llm_recipes.evaluation.decontamination import check_contamination, report_tables

    args = _args(benchmarks={"stories": {"type": "generate_until", "data_files": str(world["bench"])}})
    section = check_contamination(args, ["bare", "hub"], [str(tiny_model_dir), "someone/some-model"], [])
    for name in ("bare", "hub"):
        assert section["models"][name]["training_data"] == "unknown"
        assert section["models"][name]["benchmarks"] == {}
    assert "no completion marker" in section["models"]["bare"]["unknown"][0]
    assert "Hub model" in section["models"]["hub"]["unknown"][0]
    counts, data = report_tables(section)
    assert counts[2] == [["stories", "3", "2", "unknown", "unknown"]]
    assert [row[1] for row in data[2]] == ["unknown", "unknown"]


def test_a_plugin_offers_the_rows_of_its_data_file_options(world):
    from dataclasses import dataclass

    from llm_recipes.evaluation.decontamination import check_contamination
    from llm_recipes.evaluation.plugins import BenchmarkPlugin

    @dataclass
    class Options:
        questions: str
        note: str = "not a file"

    plugin = BenchmarkPlugin("stories_plugin", Options(str(world["bench"])), _args())
    assert [item.label for item in plugin.decontamination_items()] == [row["answer"] for row in BENCHMARK]
    nothing = BenchmarkPlugin("summary", None, _args())
    section = check_contamination(_args(benchmarks={}), ["sft"], [str(world["model"])], [plugin, nothing])
    assert section["models"]["sft"]["benchmarks"]["stories_plugin"]["contaminated"] == 1
    assert section["not_checked"] == {"summary": "the plug-in names no local benchmark data"}


def test_lineage_datasets_of_a_pipeline_and_not_its_models_or_tokenizer(tmp_path, world):
    from llm_recipes.evaluation.decontamination import training_data
    from llm_recipes.hub import mark_complete

    corpus = _jsonl(tmp_path / "corpus" / "data" / "train.jsonl", [{"text": "words"}]).parents[1]
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    mark_complete(tokenizer, "tokenizer", dataset=str(corpus))
    pretrain = tmp_path / "pretrain"
    pretrain.mkdir()
    (pretrain / "config.json").write_text("{}")
    mark_complete(pretrain, "pretrain", datasets=[str(corpus)], tokenizer=str(tokenizer))
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "config.json").write_text("{}")
    mark_complete(sft, "sft", base_model=str(pretrain), datasets=[str(world["train"])])
    found = training_data(str(sft))
    assert sorted(found.datasets) == sorted([str(corpus), str(world["train"])]) and found.status == "known"
    # a base model from the Hub: its own training data cannot be seen
    mark_complete(sft, "sft", base_model="someone/base", datasets=[str(world["train"])])
    found = training_data(str(sft))
    assert found.datasets == [str(world["train"])] and found.unknown == ["someone/base (Hub)"] and found.status == "partial"


def test_bad_ngram_size_is_an_error_naming_the_key(world):
    from llm_recipes.evaluation.decontamination import check_contamination

    for bad in (0, -3):
        with pytest.raises(ConfigError, match=r"^decontamination_ngrams: .*positive"):
            check_contamination(_args(benchmarks={}, decontamination_ngrams=bad), ["sft"], [str(world["model"])], [])


def test_evaluate_script_exits_2_on_a_bad_ngram_size(tmp_path, world):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({"models": [str(world["model"])], "decontamination_ngrams": 0,
                                      "output_dir": str(tmp_path / "out")}))
    proc = run_script("evaluate.py", "--config", str(recipe))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: decontamination_ngrams: "), proc.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_evaluate_stage_reports_contamination_in_results_and_report(tmp_path, world):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({
        "models": [str(world["model"])], "model_names": ["sft"],
        "benchmarks": {"stories": {"type": "perplexity", "data_files": str(_jsonl(
            tmp_path / "ppl.jsonl", [{"text": row["question"] + " " + row["answer"]} for row in BENCHMARK]))}},
        "limit": 3, "batch_size": 4, "output_dir": str(tmp_path / "out")}))
    proc = run_script("evaluate.py", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # a perplexity item is its whole text: item 0 holds the copied answer; item 1 does not; item 2 is too short
    assert results["decontamination"]["models"]["sft"]["benchmarks"]["stories"]["contaminated"] == 1
    for report in ("report.md", "report.html"):
        text = (tmp_path / "out" / report).read_text()
        assert "Contamination: benchmark items sharing a 12-gram" in text and "Contaminated items (examples)" in text


# ----------------------------------------------------------------------------------------------- curation filter
def test_curation_filter_drops_exactly_the_contaminated_document(tmp_path, world):
    from llm_recipes.curation.config import CurationArguments
    from llm_recipes.curation.pipeline import run_curation

    filler = "The weather in the valley was mild and the farmers brought in a generous harvest of apples"
    docs = [{"id": "copied", "text": "An old tale. " + COPIED + " " + filler + "."},
            {"id": "near", "text": "He found a wooden chest full of letters, then left. " + filler + "."},  # 8 words
            {"id": "other", "text": filler + " and pears."}]
    _jsonl(tmp_path / "src" / "docs.jsonl", docs)
    out = tmp_path / "out"
    stats = run_curation(CurationArguments(
        sources=[{"name": "web", "kind": "jsonl", "path": str(tmp_path / "src"), "share": 1.0}], output_dir=str(out),
        tasks=1, workers=1, word_tokenizer="whitespace", filters={"decontamination": {"benchmarks": [str(world["bench"])]}},
        dedup={"exact": False, "near": False}, validation_fraction=0.0))
    assert stats["sources"]["web"]["input"] == 3 and stats["sources"]["web"]["excluded"] == 1
    assert stats["removal_reasons"] == {"decontamination:contaminated_stories": 1}
    ledger = [json.loads(line) for line in (out / "exclusions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in ledger] == ["copied"]


def test_curation_filter_bad_config_names_the_key(tmp_path, world):
    from llm_recipes.curation.filters import build_filters

    with pytest.raises(ConfigError, match=r"^filters\.decontamination\.n_grams: "):
        build_filters({"decontamination": {"benchmarks": [str(world["bench"])], "n_grams": 0}}, "en")
    with pytest.raises(ConfigError, match=r"^filters\.decontamination\.benchmarks: benchmark file .*missing\.jsonl not found"):
        build_filters({"decontamination": {"benchmarks": [str(tmp_path / "missing.jsonl")]}}, "en")
    with pytest.raises(ConfigError, match=r"^filters\.decontamination\.benchmarks: list the benchmark files"):
        build_filters({"decontamination": {}}, "en")


def test_curate_script_exits_2_on_a_missing_benchmark_file(tmp_path):
    _jsonl(tmp_path / "src" / "docs.jsonl", [{"text": "some text that is long enough to keep"}])
    recipe = tmp_path / "c.yaml"
    recipe.write_text(json.dumps({"sources": [{"name": "s", "kind": "jsonl", "path": str(tmp_path / "src")}],
                                  "filters": {"decontamination": {"benchmarks": ["no/such/bench.jsonl"]}},
                                  "output_dir": str(tmp_path / "out")}))
    proc = run_script("curate.py", "--config", str(recipe))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: filters.decontamination.benchmarks: ") and "no/such/bench.jsonl" in last
