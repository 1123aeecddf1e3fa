"""Curation (`scripts/curate.py`): filters on crafted documents, routing, PII, dedup, cutoff, mixing,
conservation of counts, malformed input, executors (local, Ray) and the Hub-format output."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("datatrove")

from datatrove.data import Document  # noqa: E402

from llm_recipes.curation.config import CurationArguments  # noqa: E402
from llm_recipes.curation.accounting import AccountingError, conservation  # noqa: E402
from llm_recipes.curation.filters import (  # noqa: E402
    CodeHygieneFilter, CutoffFilter, LengthFilter, OfflineLanguageFilter, WordListFilter, build_filters,
)
from llm_recipes.curation.mixing import draw, plan_mix  # noqa: E402
from llm_recipes.curation.pii import PIIScrubber  # noqa: E402
from llm_recipes.curation.routing import Route, RoutedFilter  # noqa: E402
from llm_recipes.errors import ConfigError, DataError  # noqa: E402
from conftest import run_script  # noqa: E402

ARTICLE = ("The capital of Kalo is Miras, a city known for its busy markets and narrow streets. Kalo was founded in "
           "1204, after ten years of quarrels between the river towns. About four million people live in Kalo today, "
           "most of them near the coast. The people of Kalo speak Venic, although traders in Miras also use the old "
           "dialects. Its main export is copper, which leaves the harbour of Miras every Monday. Visitors often "
           "remark on the golden light over the hills in the evening. Schools teach grammar from the age of six.")


def doc(text: str, **meta) -> Document:
    return Document(text=text, id=meta.pop("id", "d"), metadata={"source": "web", "kind": "jsonl", **meta})


def keep(filt, d: Document):
    result = filt.filter(d)
    return result if isinstance(result, bool) else result[0]


# ----------------------------------------------------------------------------------------------- filters
def test_length_filter():
    f = LengthFilter(min_chars=10, max_words=5)
    assert not keep(f, doc("short"))
    assert keep(f, doc("four words long here"))
    assert f.filter(doc("one two three four five six")) == (False, "too_many_words")


def test_cutoff_filter_dates_and_undated_policy():
    f = CutoffFilter("2024-06-30", undated="keep")
    assert keep(f, doc("x", date="2024-06-30"))
    assert f.filter(doc("x", date="2024-07-01T00:00:00Z")) == (False, "after_cutoff")
    assert keep(f, doc("x"))
    assert CutoffFilter("2024-06-30", undated="drop").filter(doc("x")) == (False, "undated")
    with pytest.raises(ConfigError, match="cutoff_date"):
        CutoffFilter("last year")


def test_word_list_toxicity_filter():
    f = WordListFilter(word_files=["toy_toxic"], severe_files=["toy_illegal"], min_hits=2)
    assert keep(f, doc(ARTICLE))
    assert keep(f, doc(ARTICLE + " You grobnak."))  # one hit is under min_hits
    assert f.filter(doc(ARTICLE + " You grobnak, you SKEEVLOR.")) == (False, "toxic")
    assert f.filter(doc(ARTICLE + " Selling zorbium   contraband here.")) == (False, "illegal_content")
    assert keep(f, doc("The grobnakian empire was large."))  # whole words only
    with pytest.raises(ConfigError, match="word list 'nope'"):
        WordListFilter(word_files=["nope"])


def test_code_hygiene_filter():
    f = CodeHygieneFilter()
    assert keep(f, doc("# SPDX-License-Identifier: MIT\ndef f():\n    return 1\n", file_path="a/f.py"))
    assert f.filter(doc("TOKEN=1", file_path=".env")) == (False, "secret_file")
    assert f.filter(doc("MIT License ...", file_path="LICENSE")) == (False, "licence_file")
    assert f.filter(doc("# GNU GENERAL PUBLIC LICENSE v3\nx = 1\n", file_path="g.py")) == (False, "licence_GPL-3.0")
    assert f.filter(doc("key = 'AKIAABCDEFGHIJKLMNOP'\n", file_path="k.py")) == (False, "secret")


def test_language_filter_offline():
    f = OfflineLanguageFilter(languages=["en", "fr"], threshold=0.5)
    assert keep(f, doc(ARTICLE))
    french = doc("La capitale du pays est une ville connue pour ses marchés animés et ses rues étroites. "
                 "Les habitants parlent une langue ancienne et aiment beaucoup la musique.")
    assert keep(f, french) and french.metadata["language"] == "fr"
    german = doc("Die Hauptstadt des Landes ist eine Stadt mit vielen alten Häusern und engen Gassen. "
                 "Die Menschen sprechen eine alte Sprache und lieben die Musik sehr.")
    assert f.filter(german) == (False, "language_de")


def test_datatrove_quality_filters_from_yaml_config():
    built = {name: (filt, route) for name, filt, route in build_filters({
        "gopher_repetition": {}, "gopher_quality": {"min_doc_words": 20}, "fineweb_quality": True}, "en")}
    assert list(built) == ["gopher_repetition", "gopher_quality", "fineweb_quality"]
    spam = doc("\n".join(["BUY CHEAP COPPER NOW!!! BEST PRICE!!!"] * 12))
    assert not keep(built["gopher_repetition"][0], spam)
    assert keep(built["gopher_repetition"][0], doc(ARTICLE))
    assert keep(built["gopher_quality"][0], doc(ARTICLE))
    assert not keep(built["gopher_quality"][0], doc("$$ ## %% " * 40))
    assert keep(built["fineweb_quality"][0], doc(ARTICLE))
    with pytest.raises(ConfigError, match="unknown parameter 'min_words_typo'"):
        build_filters({"gopher_quality": {"min_words_typo": 3}}, "en")
    with pytest.raises(ConfigError, match="unknown filter 'perplexity'"):
        build_filters({"perplexity": True}, "en")


# ----------------------------------------------------------------------------------------------- routing
def test_routing_applies_a_filter_only_to_selected_sources_and_languages():
    route = Route.from_dict({"sources": ["web"], "languages": ["en"]})
    routed = RoutedFilter(LengthFilter(min_chars=1000), route, "length")
    assert routed.filter(doc("short", source="web", language="en")) == (False, "length:too_short")
    assert routed.filter(doc("short", source="web", language="fr")) is True
    assert routed.filter(doc("short", source="books", language="en")) is True
    excluding = Route.from_dict({"not_kinds": ["code"]})
    assert excluding.matches(doc("x", kind="text")) and not excluding.matches(doc("x", kind="code"))
    with pytest.raises(ConfigError, match="unknown key 'source'"):
        Route.from_dict({"source": ["web"]})


# ----------------------------------------------------------------------------------------------- PII
PII_CASES = {
    "email": ["ana.12@mail.toy.org", "first.last+tag@example.co.uk"],
    "ip": ["81.2.69.160", "203.0.114.7"],
    "ipv6": ["2a00:1450:4007:80f::200e", "2606:4700:4700::1111"],
    "phone": ["+44 20 7946 0958", "(415) 555-2671", "+33 6 12 34 56 78", "212-555-0187"],
    "credit_card": ["4111 1111 1111 1111", "5500005555555559", "3782-822463-10005"],
    "national_id": ["123-45-6789", "AB 12 34 56 C", "12345678Z"],
}
PII_NEGATIVES = ["in 1999 and 2024-01-15", "call 12345", "4111 1111 1111 1112", "000-12-3456",
                 "ratio 3:4:5", "std::vector", "10.0.0.1 is private", "at 12:30:45", "ID 12345678A"]


@pytest.mark.parametrize("kind", list(PII_CASES))
def test_pii_each_type_is_replaced_by_its_placeholder(kind):
    scrubber = PIIScrubber()
    placeholder = scrubber.placeholders[kind]
    for value in PII_CASES[kind]:
        out = scrubber.format(f"Contact: {value}, thanks.")
        assert value not in out and placeholder in out, (kind, value, out)


def test_pii_leaves_look_alikes_alone():
    scrubber = PIIScrubber()
    for text in PII_NEGATIVES:
        assert scrubber.format(text) == text, text


# ----------------------------------------------------------------------------------------------- mixing, accounting
def test_weight_means_one_thing_curation_mixes_by_share(tmp_path):
    """`weight` in a stage's dataset_mixture is the fraction of a dataset's rows kept (as in alignment-handbook's
    mixtures); curation's mix is a share of the output, so it is named `share` and an old `weight` is refused."""
    from datasets import Dataset

    from llm_recipes.curation.sources import parse_sources
    from llm_recipes.data import load_mixture

    for name, n in (("small", 10), ("large", 20)):
        Dataset.from_list([{"text": f"{name} {i}"} for i in range(n)]).to_json(str(tmp_path / f"{name}.jsonl"))
    mixed = load_mixture({"datasets": [{"path": str(tmp_path / "small.jsonl"), "weight": 0.5},
                                       {"path": str(tmp_path / "large.jsonl"), "weight": 0.5}]})["train"]
    assert Counter(t.split()[0] for t in mixed["text"]) == {"small": 5, "large": 10}  # half of each, by hand
    entry = {"name": "small", "kind": "jsonl", "path": str(tmp_path / "small.jsonl")}
    with pytest.raises(ConfigError, match=r"sources\[0\] \(small\): 'weight' .*'share'"):
        parse_sources([{**entry, "weight": 0.5}])
    assert parse_sources([{**entry, "share": 0.5}])[0].share == 0.5
    # shares are normalised: 0.5/0.5 is half of the output each, however many rows each source has
    assert plan_mix({"small": 10, "large": 20}, {"small": 0.5, "large": 0.5}).targets == {"small": 10, "large": 10}


def test_mixing_follows_weights_with_down_and_up_sampling():
    plan = plan_mix({"a": 1000, "b": 100, "c": 50}, {"a": 0.5, "b": 0.3, "c": 0.2})
    assert plan.targets == {"a": 125, "b": 75, "c": 50}  # c, scarcest for its weight, is used whole
    plan = plan_mix({"a": 1000, "b": 100}, {"a": 0.5, "b": 0.5}, total=400)
    rows, dropped = draw(list(range(100)), plan.targets["b"], seed=0)
    assert len(rows) == 200 and not dropped and Counter(Counter(rows).values()) == {2: 100}
    rows, dropped = draw(list(range(1000)), plan.targets["a"], seed=0)
    assert len(rows) == 200 and len(dropped) == 800 and not set(rows) & set(dropped)


def test_conservation_names_the_source_that_lost_documents():
    assert conservation({"a": 10}, {"a": 7}, {"a": 3})["a"] == {"input": 10, "kept": 7, "excluded": 3}
    with pytest.raises(AccountingError, match="source 'b'.*1 unaccounted"):
        conservation({"a": 10, "b": 5}, {"a": 7, "b": 2}, {"a": 3, "b": 2})


# ----------------------------------------------------------------------------------------------- end to end
def _variant(text: str, rng: random.Random, edits: int) -> str:
    words = text.split(" ")
    for _ in range(edits):
        words[rng.randrange(len(words))] = "indeed"
    return " ".join(words)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """Crafted sources: web JSONL (exact and near duplicates, late, toxic, PII), HTML pages, a Parquet file,
    a local Hub-format dataset, books and a code folder."""
    from datasets import Dataset, DatasetDict

    from llm_recipes.hub import save_dataset
    from llm_recipes.toy import ToyWorld
    from llm_recipes.toy.raw import article

    root = tmp_path_factory.mktemp("sources")
    rng = random.Random(0)
    world = ToyWorld(seed=0, n_entities=60)
    rows = [{"id": f"w{i}", "text": article(c, rng, 12), "date": "2020-01-01"} for i, c in enumerate(world.entities)]
    rows.append({**rows[0], "id": "exact-dup-of-w0"})
    rows.append({**rows[1], "id": "near-dup-of-w1", "text": _variant(rows[1]["text"], rng, 2)})
    rows.append({**rows[2], "id": "late", "date": "2025-03-01"})
    rows.append({**rows[3], "id": "toxic", "text": rows[3]["text"] + " You grobnak, you snivrat."})
    rows[4]["text"] += " Mail ana.7@mail.toy.org or call +44 20 7946 0958."
    (root / "web").mkdir()
    (root / "web" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "html").mkdir()
    for i, c in enumerate(world.entities[:5]):
        body = "".join(f"<p>{p}</p>" for p in article(c, rng, 12).split("\n\n"))
        (root / "html" / f"p{i}.html").write_text(
            f'<html><head><meta name="date" content="2021-0{i + 1}-01"><link rel="canonical" href="https://t.toy/{i}">'
            f"</head><body><nav>Home</nav><article>{body}</article></body></html>")
    (root / "html" / "empty.html").write_text("<html><body><nav>Home | About</nav></body></html>")
    Dataset.from_list([{"text": article(c, rng, 10), "date": "2019-05-05"} for c in world.entities[5:15]]
                      + [{"text": "", "date": "2019-05-05"}]).to_parquet(str(root / "data.parquet"))
    save_dataset(DatasetDict({"train": Dataset.from_list([{"text": article(c, rng, 10)} for c in world.entities[15:25]])}),
                 root / "hubset", "hubset", "crafted")
    (root / "books").mkdir()
    (root / "books" / "b.txt").write_text(article(world.entities[30], rng, 14))
    (root / "code").mkdir()
    (root / "code" / "m.py").write_text("# SPDX-License-Identifier: MIT\ndef add(a, b):\n    return a + b\n")
    (root / "code" / ".env").write_text("TOKEN=abc\n")
    return root


def curation_args(root: Path, out: Path, **overrides) -> CurationArguments:
    args = CurationArguments(
        sources=[
            {"name": "web", "kind": "jsonl", "path": str(root / "web"), "share": 0.5},
            {"name": "pages", "kind": "html", "path": str(root / "html"), "share": 0.1},
            {"name": "table", "kind": "parquet", "path": str(root / "data.parquet"), "share": 0.2},
            {"name": "curated", "kind": "hub", "dataset": str(root / "hubset"), "share": 0.1},
            {"name": "books", "kind": "text", "path": str(root / "books"), "share": 0.05},
            {"name": "code", "kind": "code", "path": str(root / "code"), "share": 0.05},
        ],
        output_dir=str(out), tasks=1, workers=1, word_tokenizer="whitespace", on_bad_row="exclude",
        filters={"code": {}, "length": {"min_chars": 20}, "language": {"languages": ["en"], "threshold": 0.5},
                 "gopher_repetition": {}, "gopher_quality": {"min_doc_words": 20}, "c4_quality": {"min_num_sentences": 3},
                 "fineweb_quality": {}, "toxicity": {"enabled": True, "word_files": ["toy_toxic"], "min_hits": 2}},
        cutoff_date="2024-06-30", mix_total_documents=None, mix_max_repeat=100.0, validation_fraction=0.2,
        keep_work_dir=False,
    )
    return replace(args, **overrides)


def _ledger(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "exclusions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def curated(sources, tmp_path_factory):
    from llm_recipes.curation.pipeline import run_curation

    out = tmp_path_factory.mktemp("curated") / "out"
    stats = run_curation(curation_args(sources, out))
    return out, stats


def test_curation_output_loads_and_accounts_for_every_document(curated):
    from datasets import load_dataset

    out, stats = curated
    ds = load_dataset(str(out), cache_dir=str(out.parent / "hf_cache"))  # the shared cache keys a local folder by name
    assert set(ds) == {"train", "validation"} and "text" in ds["train"].column_names
    for source, row in stats["sources"].items():
        assert row["input"] == row["kept"] + row["excluded"], source
    assert stats["sources"]["web"]["input"] == 64 and stats["sources"]["table"]["input"] == 11
    assert stats["sources"]["pages"]["input"] == 6 and stats["sources"]["code"]["input"] == 2
    reasons = {(r["id"], f"{r['stage']}:{r['reason']}") for r in _ledger(out)}
    assert ("late", "cutoff:after_cutoff") in reasons
    assert ("toxic", "toxicity:toxic") in reasons
    assert ("exact-dup-of-w0", "exact_dedup:duplicate") in reasons
    assert any(i in ("near-dup-of-w1", "w1") and r == "near_dedup:duplicate" for i, r in reasons)
    assert {("empty.html", "extract:no_text_extracted"), ("empty.html", "length:too_short")} & reasons
    assert (".env", "code:secret_file") in reasons
    assert any(r == "read:missing_text" for _, r in reasons)  # the empty Parquet row
    text = "\n".join(list(ds["train"]["text"]) + list(ds["validation"]["text"]))
    assert "ana.7@mail.toy.org" not in text and "<EMAIL>" in text and "<PHONE>" in text
    card = (out / "README.md").read_text()
    assert "configs:" in card and "removed by (stage:reason)" in card and "after_cutoff" in card


def test_mix_follows_weights(curated):
    _, stats = curated
    shares = {s: v["realised_share"] for s, v in stats["sources"].items()}
    targets = {s: v["target_share"] for s, v in stats["sources"].items()}
    for s in shares:
        assert abs(shares[s] - targets[s]) < 0.02, (s, shares[s], targets[s])


def test_malformed_input_error_names_file_and_line(sources, tmp_path):
    from llm_recipes.curation.pipeline import run_curation

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jsonl").write_bytes(b'{"text": "fine line of text here for sure"}\n{"text": broken\n{"txt": "no text"}\n'
                                  b'{"text": "caf\xe9 bytes"}\n')
    spec = [{"name": "bad", "kind": "jsonl", "path": str(bad), "share": 1}]
    with pytest.raises(DataError, match=r"x.jsonl: line 2: bad_json.*3 bad row"):
        run_curation(curation_args(sources, tmp_path / "o1", sources=spec, on_bad_row="error"))
    stats = run_curation(curation_args(sources, tmp_path / "o2", sources=spec, on_bad_row="exclude",
                                       filters={"length": {"min_chars": 20}}, validation_fraction=0.0))
    assert stats["sources"]["bad"] == {**stats["sources"]["bad"], "input": 4, "kept": 1, "excluded": 3}
    assert {r["reason"] for r in _ledger(tmp_path / "o2")} == {"bad_json", "missing_text", "undecodable_bytes"}


@pytest.mark.slow  # two stage launches (torch and datatrove imports): ~35 s on 2 loaded cores
def test_script_exits_with_one_line_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    recipe = tmp_path / "c.yaml"
    recipe.write_text(json.dumps({"sources": [{"name": "s", "kind": "jsonl", "path": str(tmp_path / "bad.jsonl")}],
                                  "output_dir": str(tmp_path / "out")}))
    proc = run_script("curate.py", "--config", str(recipe))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: source 's':") and "line 2" in proc.stderr
    recipe.write_text(json.dumps({"sources": [{"name": "s", "kind": "pdf", "path": str(tmp_path)}]}))
    proc = run_script("curate.py", "--config", str(recipe))
    assert proc.returncode == 2 and "kind must be one of" in proc.stderr


@pytest.mark.slow
def test_ray_executor_matches_local(sources, curated, tmp_path):
    pytest.importorskip("ray")
    import ray

    from llm_recipes.curation.pipeline import run_curation

    out, local_stats = curated
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        stats = run_curation(curation_args(sources, tmp_path / "ray", executor="ray", tasks=2, workers=2))
    finally:
        ray.shutdown()
    assert stats["totals"] == local_stats["totals"]
    assert stats["removal_reasons"] == local_stats["removal_reasons"]


def test_toy_raw_corpus_is_the_same_for_a_seed(tmp_path):
    """The curate stage samples by document id, so random WARC record ids (warcio's default) made every toy
    pipeline run curate, and so pretrain on, a different corpus."""
    from llm_recipes.toy.raw import write_raw_corpus
    from llm_recipes.toy.world import ToyWorld

    world = ToyWorld(seed=3, n_entities=20)
    for name in ("a", "b"):
        write_raw_corpus(world, tmp_path / name, n_web=30, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("web/crawl.warc.gz") in files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


# ----------------------------------------------------------------------------------------------- row metadata
def test_rows_with_their_own_source_and_metadata_keep_the_recipe_bookkeeping(tmp_path):
    """A web corpus whose rows carry their own `source`, `kind`, `language`, url, date and id: the recipe's
    source name does the accounting; the row's own fields are kept in `row_metadata` (a JSON object)."""
    from llm_recipes.curation.pipeline import run_curation

    rows = []
    for i in range(12):
        rows.append({"id": f"page-{i}", "text": f"Page {i}. " + ARTICLE, "source": "commoncrawl-2024", "kind": "article",
                     "language": "English", "url": f"https://news.toy/{i}", "date": "2030-01-01" if i < 2 else "2021-05-0{}".format(i % 9 + 1),
                     "crawl": {"segment": i}})
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    stats = run_curation(CurationArguments(
        sources=[{"name": "web", "kind": "jsonl", "path": str(tmp_path / "web"), "share": 1.0}], output_dir=str(out),
        tasks=1, workers=1, word_tokenizer="whitespace", filters={"length": {"min_chars": 20}},
        dedup={"exact": True, "near": False}, cutoff_date="2024-06-30", validation_fraction=0.0))
    # by hand: 12 rows read, the 2 dated 2030 are after the cutoff, the other 10 differ (page number) and stay
    assert stats["sources"]["web"]["input"] == 12
    assert stats["sources"]["web"]["kept"] == 10 and stats["sources"]["web"]["excluded"] == 2
    assert set(stats["sources"]) == {"web"}
    ledger = _ledger(out)
    assert sorted(r["id"] for r in ledger) == ["page-0", "page-1"] and {r["source"] for r in ledger} == {"web"}
    ds = output_rows(out)
    assert len(ds) == 10 and {r["source"] for r in ds} == {"web"} and {r["kind"] for r in ds} == {"jsonl"}
    by_id = {r["id"]: r for r in ds}
    row = by_id["page-5"]
    assert row["url"] == "https://news.toy/5" and row["date"] == "2021-05-06"
    own = json.loads(row["row_metadata"])
    assert own["source"] == "commoncrawl-2024" and own["kind"] == "article" and own["language"] == "English"
    assert own["crawl"] == {"segment": 5} and own["url"] == "https://news.toy/5"
    assert "row_metadata" in (out / "README.md").read_text()


# ----------------------------------------------------------------------------------------------- explicit filters
MATHS = [r"Let $f(x) = \sum_{k=0}^{n} a_k x^k$ with $a_k \in \mathbb{R}$. Then $f'(x) = \sum_{k=1}^{n} k a_k x^{k-1}$, "
         r"and $\int_0^1 f = \sum_k a_k/(k+1)$." + f" Lemma {i}: $\\|x_{i}\\|_2 \\le {i + 1}$." for i in range(8)]


def test_only_the_filters_a_recipe_lists_run_and_the_card_and_log_say_which(tmp_path, caplog):
    """A maths corpus with only `length` listed: language, Gopher, C4 and FineWeb filters used to run anyway
    and drop most of it."""
    from llm_recipes.curation.pipeline import run_curation

    (tmp_path / "maths.jsonl").write_text("".join(json.dumps({"id": f"m{i}", "text": t}) + "\n" for i, t in enumerate(MATHS)))
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="llm_recipes"):
        stats = run_curation(CurationArguments(
            sources=[{"name": "maths", "kind": "jsonl", "path": str(tmp_path / "maths.jsonl"), "share": 1.0}],
            output_dir=str(out), tasks=1, workers=1, word_tokenizer="whitespace", filters={"length": {"min_chars": 20}},
            dedup={"exact": True, "near": False}, validation_fraction=0.0))
    assert stats["sources"]["maths"] == {**stats["sources"]["maths"], "input": 8, "kept": 8, "excluded": 0}
    assert list(stats["filters"]) == ["length"] and stats["filters"]["length"]["params"] == {"min_chars": 20}
    start = [r.getMessage() for r in caplog.records if "filters that run" in r.getMessage()]
    assert len(start) == 1 and "length" in start[0] and "min_chars" in start[0] and "language" not in start[0]
    card = (out / "README.md").read_text()
    assert "| length | min_chars=20 |" in card and "language" not in card.split("Filters run")[1].split("\n\n")[1]
    # listed with no parameters: runs with the defaults shown; `false` or enabled: false: does not run
    names = [name for name, _, _ in build_filters({"gopher_repetition": {}, "c4_quality": False,
                                                   "url": {"enabled": False}}, "en")]
    assert names == ["gopher_repetition"]
    assert build_filters(None, "en") == []


# ----------------------------------------------------------------------------------------------- near-dup defaults
def _shingles_by_hand(text: str, n: int = 5) -> set:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_near_dedup_defaults_catch_99_percent_of_pairs_at_jaccard_0_8(tmp_path):
    """200 pairs with Jaccard 0.80-0.82 on word 5-grams (computed here): the default MinHash settings must
    find at least 198 of them (the old 14 x 8 defaults found ~94% at this similarity)."""
    from llm_recipes.curation.pipeline import run_curation

    rng = random.Random(7)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(5000)]
    rows, pairs = [], []
    for p in range(200):
        words = [rng.choice(vocab) for _ in range(rng.randint(200, 500))]
        original = " ".join(words)
        while True:
            variant = list(words)
            while True:
                variant[rng.randrange(len(variant))] = rng.choice(vocab) + "x"
                a, b = _shingles_by_hand(original), _shingles_by_hand(" ".join(variant))
                similarity = len(a & b) / len(a | b)
                if similarity <= 0.82:
                    break
            if similarity >= 0.80:
                break
        rows += [{"id": f"p{p}a", "text": original}, {"id": f"p{p}b", "text": " ".join(variant)}]
        pairs.append((f"p{p}a", f"p{p}b"))
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    run_curation(CurationArguments(
        sources=[{"name": "web", "kind": "jsonl", "path": str(tmp_path / "docs.jsonl"), "share": 1.0}],
        output_dir=str(out), tasks=1, workers=1, word_tokenizer="whitespace", filters={},
        dedup={"exact": False}, validation_fraction=0.0))
    removed = {r["id"] for r in _ledger(out) if r["stage"] == "near_dedup"}
    found = sum(a in removed or b in removed for a, b in pairs)
    assert len(removed) == found  # no pair loses both documents, nothing else removed
    assert found >= 198, found


# ----------------------------------------------------------------------------------------------- text boundaries, compression
def test_text_sources_split_documents_and_compressed_inputs_are_read(tmp_path):
    import gzip

    import zstandard

    from llm_recipes.curation.pipeline import run_curation

    paragraphs = [f"Chapter {i}. " + ARTICLE for i in range(3)]
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.txt").write_text("\n\n\n".join(paragraphs) + "\n")                 # 3 paragraphs
    with gzip.open(tmp_path / "book" / "b.txt.gz", "wt") as fh:                                  # 2 paragraphs, gzip
        fh.write(f"Preface. {ARTICLE}\n  \nEpilogue. {ARTICLE}\n")
    (tmp_path / "lines").mkdir()
    with gzip.open(tmp_path / "lines" / "l.txt.gz", "wt") as fh:                                 # 4 lines, 1 blank
        fh.write("\n".join([f"Line {i}: {ARTICLE}" for i in range(4)][:2] + [""] + [f"Line {i}: {ARTICLE}" for i in range(2, 4)]))
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole" / "w.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(("Whole. " + ARTICLE + "\n\n" + ARTICLE).encode()))
    (tmp_path / "json").mkdir()
    with gzip.open(tmp_path / "json" / "j.jsonl.gz", "wt") as fh:                                # 3 rows, 1 bad
        fh.write(json.dumps({"id": "j1", "text": "J1 " + ARTICLE}) + "\nnot json\n" + json.dumps({"id": "j2", "text": "J2 " + ARTICLE}) + "\n")
    (tmp_path / "json" / "k.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        (json.dumps({"id": "k1", "text": "K1 " + ARTICLE}) + "\n").encode()))
    out = tmp_path / "out"
    stats = run_curation(CurationArguments(
        sources=[{"name": "book", "kind": "text", "path": str(tmp_path / "book"), "document_boundary": "blank_line"},
                 {"name": "lines", "kind": "text", "path": str(tmp_path / "lines"), "document_boundary": "line"},
                 {"name": "whole", "kind": "text", "path": str(tmp_path / "whole")},
                 {"name": "json", "kind": "jsonl", "path": str(tmp_path / "json")}],
        output_dir=str(out), tasks=1, workers=1, word_tokenizer="whitespace", filters={}, on_bad_row="exclude",
        dedup={"exact": True, "near": False}, mix_max_repeat=100.0, validation_fraction=0.0))
    counts = {name: (s["input"], s["kept"]) for name, s in stats["sources"].items()}
    assert counts == {"book": (5, 5), "lines": (4, 4), "whole": (1, 1), "json": (4, 3)}
    assert [r["reason"] for r in _ledger(out)] == ["bad_json"]
    ids = {r["id"] for r in output_rows(out)}
    assert {"a.txt:1", "a.txt:4", "a.txt:7", "b.txt.gz:1", "b.txt.gz:3", "l.txt.gz:1", "l.txt.gz:5", "w.txt.zst"} <= ids
    from llm_recipes.curation.sources import parse_sources

    with pytest.raises(ConfigError, match="document_boundary applies to text sources only"):
        parse_sources([{"name": "j", "kind": "jsonl", "path": str(tmp_path / "json"), "document_boundary": "line"}])


def output_rows(out: Path, split: str = "train") -> list[dict]:
    """The output split read straight from its Parquet file (datasets' cache can serve an earlier test's folder)."""
    import pyarrow.parquet as pq

    return pq.read_table(out / "data" / f"{split}-00000-of-00001.parquet").to_pylist()


def test_url_filter_uses_the_bundled_suffix_list_offline(caplog, monkeypatch, tmp_path):
    """With no cached public-suffix list, tldextract fetched it at run time: offline, two tracebacks per task."""
    monkeypatch.setenv("TLDEXTRACT_CACHE", str(tmp_path / "tldextract"))  # a fresh machine: nothing cached
    built = build_filters({"url": {"use_integrated_lists": False, "extra_domains": ["spam-farm.com"]}}, "en")
    (name, url_filter, _), = built
    assert name == "url" and tuple(url_filter.tldextractor.suffix_list_urls) == ()
    with caplog.at_level("WARNING"):
        assert url_filter.filter(doc(ARTICLE, url="https://www.spam-farm.com/page")) == (False, "domain")
        assert url_filter.filter(doc(ARTICLE, url="https://news.example.co.uk/page")) is True
    assert not [r for r in caplog.records if r.name.startswith("tldextract")]
