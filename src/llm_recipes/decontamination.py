"""N-gram decontamination, shared by the evaluate stage (which benchmark items did a model's training data contain?)
and the curate stage (drop the documents that contain benchmark n-grams).

The n-grams and their hashes are datatrove's (`datatrove.pipeline.decont.n_grams`): text normalised by
`simplify_text` (lower case, no punctuation, numbers as 0...), split into words, n words a gram (12 by default),
hashed with xxhash64. A benchmark item is a (query, label) pair, as datatrove's indexer takes it: the grams of the
label and those that straddle query and label (and, when asked, those of the query alone).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
from datatrove.utils.hashing import create_hash_func
from datatrove.utils.text import ngrams, simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer

from llm_recipes.errors import ConfigError, DataError

DEFAULT_NGRAMS = NGramsDecontConfig.n_grams  # datatrove's default: 12 words
QUERY_KEYS = ("question", "prompt", "instruction", "input", "problem", "query")
LABEL_KEYS = ("answer", "canonical_solution", "completion", "response", "value", "target", "output", "solution")
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".csv")


def check_ngrams(n: Any, key: str) -> int:
    """The n-gram size, a positive integer (a one-line error naming `key` otherwise)."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"{key}: the n-gram size must be a positive number of words, got {n!r}")
    return n


@dataclass
class BenchmarkItem:
    """One benchmark example: its query (prompt/question, may be None) and label (answer, or the text itself)."""

    query: str | None
    label: str

    def text(self, limit: int = 160) -> str:
        whole = " ".join(x for x in (self.query, self.label) if x)
        whole = " ".join(whole.split())
        return whole if len(whole) <= limit else whole[: limit - 3] + "..."


def item_of_row(row: dict) -> BenchmarkItem | None:
    """A benchmark row as (query, label): multiple choice {question, choices, answer: index} -> the right choice;
    {question|prompt, answer|canonical_solution|...}; {text} (perplexity); a prompt alone (code without a solution)."""
    query = next((row[k] for k in QUERY_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    choices, answer = row.get("choices"), row.get("answer")
    if isinstance(choices, list) and isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return BenchmarkItem(query, str(choices[answer]))
    label = next((row[k] for k in LABEL_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    if label is None and isinstance(row.get("text"), str) and row["text"].strip():
        label = row["text"]
    if label is None:
        if query is None:
            return None
        query, label = None, query
    return BenchmarkItem(query, label)


def strings_of(value: Any) -> Iterator[str]:
    """Every text in a training row: string columns, lists of them, chat messages (their `content`)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        if isinstance(value.get("content"), str):
            yield value["content"]
        else:
            for inner in value.values():
                yield from strings_of(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from strings_of(inner)


def fast_word_tokenizer() -> WordTokenizer:
    """The curate stage's regex word tokenizer: after `simplify_text` has removed punctuation, spaCy's split gives
    nearly the same words, and loading spaCy alone takes seconds."""
    from llm_recipes.curation.filters import WhitespaceWordTokenizer

    return WhitespaceWordTokenizer()


class NGramHasher:
    """datatrove's n-gram normalisation and hashing, without its indexer: `NGramsDecontIndexer` needs lighteval (it
    refuses to be built without it) and reads lighteval tasks, not our local benchmark files; its `compute_hashes`
    is reused as is."""

    compute_hashes = NGramsDecontIndexer.compute_hashes  # reads self.tokenizer, self.config, self.hash_func

    def __init__(self, n_grams: int = DEFAULT_NGRAMS, query_ngrams: bool = False,
                 word_tokenizer: str | WordTokenizer | None = None) -> None:
        self.config = NGramsDecontConfig(n_grams=n_grams, find_query_ngrams=query_ngrams)
        self.tokenizer = load_word_tokenizer(word_tokenizer) if word_tokenizer is not None else fast_word_tokenizer()
        self.hash_func = create_hash_func(self.config.hash_config)

    def item_hashes(self, item: BenchmarkItem) -> list[int]:
        return self.compute_hashes(item.label, item.query)

    def text_ngrams(self, text: str) -> Iterator[tuple[int, str]]:
        """(hash, n-gram) of every n-gram of a training text, as datatrove's NGramsDecontFilter computes them."""
        tokens = self.tokenizer.word_tokenize(simplify_text(text, self.config.norm_config))
        for gram in map(" ".join, ngrams(tokens, self.config.n_grams)):
            yield self.hash_func(gram), gram


@dataclass
class Hit:
    """A contaminated benchmark item: the first training n-gram found in it and where it was found."""

    ngram: str
    source: str


class ItemIndex:
    """The n-gram hashes of several benchmarks' items, to look training texts up against."""

    def __init__(self, hasher: NGramHasher, benchmarks: dict[str, list[BenchmarkItem]]) -> None:
        self.hasher, self.benchmarks = hasher, benchmarks
        self.by_hash: dict[int, list[tuple[str, int]]] = {}
        self.checkable: dict[str, int] = {}  # items with at least one n-gram (shorter items cannot be found)
        for name, items in benchmarks.items():
            self.checkable[name] = 0
            for i, item in enumerate(items):
                hashes = set(hasher.item_hashes(item))
                self.checkable[name] += bool(hashes)
                for h in hashes:
                    self.by_hash.setdefault(h, []).append((name, i))

    def scan(self, texts: Iterable[str], source: str, hits: dict[tuple[str, int], Hit] | None = None) -> dict[tuple[str, int], Hit]:
        """Every item one of whose n-grams occurs in `texts` -> (benchmark, item index): Hit. Unlike datatrove's
        filter, which stops at a document's first match, every n-gram of every text is looked up."""
        hits = {} if hits is None else hits
        if not self.by_hash:
            return hits
        for text in texts:
            for h, gram in self.hasher.text_ngrams(text):
                for key in self.by_hash.get(h, ()):
                    hits.setdefault(key, Hit(gram, source))
        return hits


def read_items(path: str, split: str | None = None, key: str = "benchmarks") -> list[BenchmarkItem]:
    """The items of a benchmark data file (.jsonl, .jsonl.gz, .parquet, .csv) or dataset folder (its `split`,
    default test)."""
    from llm_recipes.data import load_source

    if not os.path.exists(path):
        raise ConfigError(f"{key}: benchmark file {path} not found")
    rows = load_source(path, split="train" if os.path.isfile(path) else (split or "test"))
    items = [item for item in map(item_of_row, rows) if item is not None]
    if not items:
        raise DataError(f"{key}: {path} has no benchmark items (rows with question/prompt/answer/text columns)")
    return items


def benchmark_name(path: str) -> str:
    """A benchmark file's or folder's name without its suffixes: data/benchmarks/facts_mc.jsonl.gz -> facts_mc."""
    return Path(path.rstrip("/")).name.split(".")[0] or path


class BenchmarkDecontFilter(NGramsDecontFilter):
    """datatrove's n-gram decontamination filter, its index built here from local benchmark files rather than
    read from the folder its indexer writes (that block needs lighteval and reads lighteval tasks): a document that
    contains an n-gram of a benchmark item is dropped, the reason naming the benchmark (`contaminated_<name>`),
    the n-gram in its metadata (`contaminated_ngram`)."""

    name = "🦠 Decontamination"

    def __init__(self, benchmarks: list[str] | None = None, n_grams: int = DEFAULT_NGRAMS, query_ngrams: bool = False,
                 split: str = "test", word_tokenizer: str | WordTokenizer | None = None, exclusion_writer=None) -> None:
        key = "filters.decontamination"
        if isinstance(benchmarks, str):
            benchmarks = [benchmarks]
        if not benchmarks or not all(isinstance(b, str) for b in benchmarks):
            raise ConfigError(f"{key}.benchmarks: list the benchmark files (.jsonl, .parquet, or dataset folders), "
                              f"got {benchmarks!r}")
        hasher = NGramHasher(check_ngrams(n_grams, f"{key}.n_grams"), query_ngrams, word_tokenizer)
        index: dict[int, str] = {}
        for path in benchmarks:
            name = benchmark_name(path)
            for item in read_items(path, split, f"{key}.benchmarks"):
                for h in hasher.item_hashes(item):
                    index.setdefault(h, name)
        super().__init__(index_folder=os.path.dirname(os.path.abspath(benchmarks[0])), config=hasher.config,
                         exclusion_writer=exclusion_writer, language=hasher.tokenizer)
        self._index_hashes = index

    def load_index_hashes(self) -> None:
        """Nothing to load: the index was built from the benchmark files when the filter was made."""

    def filter(self, doc) -> bool | tuple[bool, str]:
        if super().filter(doc) is True:
            return True
        return False, f"contaminated_{doc.metadata['contaminated_task']}"
