"""Sources of a curation run, each read by a datatrove reader: text files (books), JSONL / Parquet, HTML pages
and WARC files (web; text extracted with datatrove's Trafilatura extractor), source-code folders, and datasets
by Hub id or local Hub-format folder.

Before any datatrove task starts, `ingest` checks the file-based sources in the main process: a bad JSON line,
a row without text or undecodable bytes stops the run with file and line (`on_bad_row: error`) or becomes a
counted exclusion (`on_bad_row: exclude`); the readers then read only what passed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader, WarcReader
from datatrove.pipeline.readers.base import BaseDiskReader

from llm_recipes.errors import ConfigError, DataError
from llm_recipes.parser import build_options

KINDS = ("text", "jsonl", "parquet", "html", "warc", "code", "hub")
EXTRACTED_KINDS = ("html", "warc")
DOCUMENT_BOUNDARIES = ("file", "blank_line", "line")
COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")  # fsspec infers the codec from the name (datatrove's "infer")
ROW_METADATA = "row_metadata"  # a row's own fields, kept apart from the metadata the stage keeps (source, kind, ...)
DEFAULT_GLOBS = {"text": "**/*.txt*", "jsonl": "**/*.jsonl*", "parquet": "**/*.parquet", "html": "**/*.htm*",
                 "warc": "**/*.warc*", "code": "**/*"}
CODE_LANGUAGES = {
    ".py": "python", ".js": "javascript", ".ts": "typescript", ".java": "java", ".c": "c", ".h": "c", ".cc": "cpp",
    ".cpp": "cpp", ".hpp": "cpp", ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php", ".sh": "shell",
    ".cs": "csharp", ".kt": "kotlin", ".swift": "swift", ".scala": "scala", ".sql": "sql", ".r": "r", ".lua": "lua",
    ".jl": "julia", ".hs": "haskell", ".md": "markdown", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".json": "json", ".html": "html", ".css": "css",
}
MISSING_TEXT = "\x00missing-text\x00"  # set by the adapter; the `read` filter drops it with a counted reason


@dataclass
class SourceSpec:
    name: str
    kind: str
    path: str | None = None
    dataset: str | None = None
    share: float = 1.0  # this source's share of the mixed output, normalised over the sources
    glob: str | None = None
    text_key: str = "text"
    id_key: str = "id"
    date_key: str = "date"
    url_key: str = "url"
    language_key: str | None = None
    language: str | None = None
    date: str | None = None
    split: str = "train"
    config: str | None = None
    limit: int = -1
    document_boundary: str = "file"
    paths_file: str | None = field(default=None, repr=False, metadata={"recipe": False})  # written by ingest: the files that passed

    @classmethod
    def parse(cls, entry, index: int) -> SourceSpec:
        where = f"sources[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping with name, kind, path/dataset, share")
        if "weight" in entry:
            # `weight` in a stage's dataset_mixture is the fraction of a dataset's rows kept (as in alignment-handbook);
            # curation mixes by share of the output, under its own name so that one word never means two things
            raise ConfigError(f"{where} ({entry.get('name')}): 'weight' is now 'share' (this source's share of the "
                              f"mixed output, normalised over the sources): rename the key")
        spec = build_options(cls, entry, where)  # unknown keys, missing name/kind, types (share a number)
        for key in ("name", "kind"):
            if not getattr(spec, key):
                raise ConfigError(f"{where}: missing '{key}'")
        where = f"{where} ({spec.name})"
        if spec.kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
        if spec.kind == "hub":
            if not spec.dataset and not spec.path:
                raise ConfigError(f"{where}: a hub source needs 'dataset' (Hub id or local folder)")
        elif not spec.path:
            raise ConfigError(f"{where}: missing 'path' (a file or folder)")
        elif not os.path.exists(spec.path):
            raise ConfigError(f"{where}: path '{spec.path}' not found")
        if spec.document_boundary not in DOCUMENT_BOUNDARIES:
            raise ConfigError(f"{where}: document_boundary must be one of {', '.join(DOCUMENT_BOUNDARIES)}, "
                              f"got {spec.document_boundary!r}")
        if spec.document_boundary != "file" and spec.kind != "text":
            raise ConfigError(f"{where}: document_boundary applies to text sources only (kind: {spec.kind})")
        if spec.share < 0:
            raise ConfigError(f"{where}: share must be >= 0, got {spec.share}")
        return spec

    @property
    def folder_and_glob(self) -> tuple[str, str]:
        if os.path.isfile(self.path):
            return os.path.dirname(os.path.abspath(self.path)), os.path.basename(self.path)
        return os.path.abspath(self.path), self.glob or DEFAULT_GLOBS[self.kind]

    def files(self) -> list[str]:
        """Files of this source, relative to its folder, sorted."""
        folder, pattern = self.folder_and_glob
        return sorted(str(p.relative_to(folder)) for p in Path(folder).glob(pattern) if p.is_file())


def parse_sources(entries) -> list[SourceSpec]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError("sources: a non-empty list of sources is required")
    specs = [SourceSpec.parse(e, i) for i, e in enumerate(entries)]
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"sources: duplicate source name '{duplicate}'")
    if sum(s.share for s in specs) <= 0:
        raise ConfigError("sources: at least one source needs a share > 0")
    return specs


# ----------------------------------------------------------------------------------------------- adapters
def _plain(value):
    """A JSON value (dates, numpy scalars and bytes from Parquet or the Hub become strings)."""
    return json.loads(json.dumps(value, default=str))


def adapt(self, data: dict, path: str, id_in_file) -> dict:
    """datatrove adapter of row sources: text and id; the row's other fields go, whole, under `row_metadata`, so
    that a row's own `source`, `kind` or `language` never replaces the recipe's (accounting and routing use those);
    `date`, `url` (and `language` with `language_key`) are read from the row's date_key, url_key, language_key.
    A missing text becomes MISSING_TEXT (dropped and counted)."""
    text = data.pop(self.text_key, None)
    if not isinstance(text, str) or not text.strip():
        text = MISSING_TEXT
    doc_id = data.pop(self.id_key, None)
    nested = data.pop("metadata", None) or {}  # datatrove's own JSONL output nests its metadata
    if isinstance(nested, str):
        try:
            nested = json.loads(nested)
        except json.JSONDecodeError:
            nested = {"metadata": nested}
    row = _plain({**nested, **data} if isinstance(nested, dict) else {**data, "metadata": nested})
    meta = {}
    for wanted, key in (("date", self.date_key), ("url", self.url_key), ("language", self.language_key)):
        value = row.get(key) if key else None
        if value not in (None, ""):
            meta[wanted] = value if isinstance(value, str) else json.dumps(value)
    if row:
        meta[ROW_METADATA] = row
    return {"text": text, "id": str(doc_id) if doc_id is not None else f"{path}/{id_in_file}", "metadata": meta}


class _KeysMixin:
    date_key = "date"
    url_key = "url"
    language_key = None


class AdaptedJsonlReader(_KeysMixin, JsonlReader):
    pass


class AdaptedParquetReader(_KeysMixin, ParquetReader):
    pass


class AdaptedHubReader(_KeysMixin, HuggingFaceDatasetReader):
    pass


def split_documents(text: str, boundary: str) -> list[tuple[int, str]]:
    """(first line number, text) of each document of a text file: the whole file, each block between blank lines,
    or each non-empty line."""
    if boundary == "file":
        return [(1, text)]
    documents, current, start = [], [], 1
    for number, line in enumerate(text.split("\n"), start=1):  # line numbers as an editor shows them
        line = line.rstrip("\r")
        if boundary == "line":
            if line.strip():
                documents.append((number, line))
            continue
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            documents.append((start, "\n".join(current)))
            current = []
    if current:
        documents.append((start, "\n".join(current)))
    return documents


class WholeFileReader(BaseDiskReader):
    """Files read as documents (text files, HTML pages, source code): one per file (id: the path relative to the
    folder), or for text files one per blank-line block or per line (id: path:first line). Text and HTML files may
    be compressed (.gz, .zst, ...: decompressed by fsspec as datatrove's JSONL reader does)."""

    name = "📄 Files"

    def __init__(self, data_folder, kind: str, root: str | None = None, document_boundary: str = "file", **kwargs):
        kwargs.pop("adapter", None)
        kwargs.pop("text_key", None)
        kwargs.pop("id_key", None)
        super().__init__(data_folder, **kwargs)
        self.kind, self.root, self.document_boundary = kind, root, document_boundary
        self.compression = "infer" if kind in ("text", "html") else None

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb", compression=self.compression) as fh:
            raw = fh.read()
        text = raw.decode("utf-8", errors="replace")  # ingest already excluded undecodable files
        full = self.data_folder.resolve_paths(filepath)
        rel = os.path.relpath(full, self.root) if self.root else filepath
        meta = {"file_path": rel}
        if self.kind == "code":
            meta["language"] = CODE_LANGUAGES.get(os.path.splitext(filepath)[1].lower(), "unknown")
        elif self.kind == "html":
            meta.update(html_metadata(text))
        parts = split_documents(text, self.document_boundary)
        for line, part in parts:
            doc_id = rel if self.document_boundary == "file" else f"{rel}:{line}"
            yield Document(text=part if part.strip() else MISSING_TEXT, id=doc_id,
                           metadata={**(self.default_metadata or {}), **meta})


_META = re.compile(r"<(?:meta|link)\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r'(\w[\w:-]*)\s*=\s*"([^"]*)"')


def html_metadata(html: str) -> dict:
    """url (canonical / og:url) and date (article:published_time, date, dc.date) from a page's head."""
    found = {}
    for tag in _META.findall(html[:20000]):
        attrs = {k.lower(): v for k, v in _ATTR.findall(tag)}
        key = (attrs.get("name") or attrs.get("property") or attrs.get("rel") or "").lower()
        if key in ("article:published_time", "date", "dc.date", "pubdate") and "date" not in found:
            found["date"] = attrs.get("content", "")
        elif key in ("og:url",) and "url" not in found:
            found["url"] = attrs.get("content", "")
        elif key == "canonical" and "url" not in found:
            found["url"] = attrs.get("href", "")
    return found


def build_reader(spec: SourceSpec):
    """The datatrove reader of one source, tagging every document with source, kind (and language/date if set)."""
    default_metadata = {"source": spec.name, "kind": spec.kind}
    if spec.language:
        default_metadata["language"] = spec.language
    if spec.date:
        default_metadata["date"] = spec.date
    common = dict(adapter=adapt, text_key=spec.text_key, id_key=spec.id_key, default_metadata=default_metadata,
                  limit=spec.limit)
    if spec.kind == "hub":
        options = {"split": spec.split, **({"name": spec.config} if spec.config else {})}
        reader = AdaptedHubReader(spec.dataset or spec.path, dataset_options=options, **common)
    else:
        root, pattern = spec.folder_and_glob
        # ingest's listing holds absolute paths (some point at clean copies): read them from "/"
        folder = "/" if spec.paths_file else root
        disk = dict(common, paths_file=spec.paths_file, glob_pattern=None if spec.paths_file else pattern)
        if spec.kind == "jsonl":
            reader = AdaptedJsonlReader(folder, **disk)
        elif spec.kind == "parquet":
            reader = AdaptedParquetReader(folder, **disk)
        elif spec.kind == "warc":
            disk.pop("adapter")
            reader = WarcReader(folder, **disk)
        else:
            reader = WholeFileReader(folder, spec.kind, root=root, document_boundary=spec.document_boundary, **disk)
    reader.date_key, reader.url_key, reader.language_key = spec.date_key, spec.url_key, spec.language_key
    return reader


# ----------------------------------------------------------------------------------------------- ingest
@dataclass
class BadRow:
    source: str
    file: str
    row: int | None
    reason: str

    def record(self) -> dict:
        where = f"{self.file}:{self.row}" if self.row is not None else self.file
        return {"id": f"{self.source}/{where}", "text": "", "metadata": {
            "source": self.source, "filter_reason": f"ingest:{self.reason}", "file_path": self.file, "row": self.row}}


def open_decompressed(path: Path):
    """A binary file object of the decompressed content (compression inferred from the name, as the readers do)."""
    import io

    import fsspec

    # zstandard's reader has no readline: buffered, it iterates by line like a plain file
    return io.BufferedReader(fsspec.open(str(path), "rb", compression="infer").open())


def _check_jsonl(path: Path, spec: SourceSpec) -> list[tuple[int, str]]:
    bad = []
    with open_decompressed(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append((number, "undecodable_bytes"))
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append((number, f"bad_json ({err.msg})"))
                continue
            if not isinstance(row, dict):
                bad.append((number, "not_a_json_object"))
            elif not isinstance(row.get(spec.text_key), str) or not row[spec.text_key].strip():
                bad.append((number, f"missing_text (no '{spec.text_key}')"))
    return bad


def _check_parquet(path: Path, spec: SourceSpec) -> list[tuple[int, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if spec.text_key not in table.column_names:
        raise DataError(f"{path}: no column '{spec.text_key}' (columns: {', '.join(table.column_names)}); "
                        f"set text_key in source '{spec.name}'")
    texts = table.column(spec.text_key).to_pylist()
    return [(i, f"missing_text (empty '{spec.text_key}')") for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]


def ingest(specs: list[SourceSpec], work_dir: Path, on_bad_row: str) -> list[BadRow]:
    """Check every file-based source; write `paths_file` lists (and clean JSONL copies where lines were bad).
    Returns the rows excluded at the `read` stage; raises DataError on the first one if on_bad_row == 'error'."""
    excluded: list[BadRow] = []
    for spec in specs:
        if spec.kind == "hub":
            continue
        folder, _ = spec.folder_and_glob
        files = spec.files()
        if not files:
            raise DataError(f"source '{spec.name}': no files match {spec.folder_and_glob[1]!r} in {folder}")
        good: list[str] = []
        clean_dir = work_dir / "ingest" / spec.name
        for rel in files:
            path = Path(folder) / rel
            if spec.kind == "jsonl":
                bad = _check_jsonl(path, spec)
            elif spec.kind == "parquet":
                bad = _check_parquet(path, spec)
            elif spec.kind in ("text", "html", "code"):
                try:
                    if spec.kind == "code":
                        path.read_bytes().decode("utf-8")
                    else:
                        with open_decompressed(path) as fh:
                            fh.read().decode("utf-8")
                    bad = []
                except UnicodeDecodeError:
                    bad = [(None, "binary_file" if spec.kind == "code" else "undecodable_bytes")]
            else:
                bad = []
            if bad and on_bad_row == "error" and not (spec.kind == "code" and bad[0][1] == "binary_file"):
                row, reason = bad[0]
                where = f"{path}: line {row}" if spec.kind == "jsonl" else (f"{path}: row {row}" if row is not None else str(path))
                raise DataError(f"source '{spec.name}': {where}: {reason} ({len(bad)} bad row(s) in the file; "
                                f"on_bad_row: exclude drops and counts them)")
            if spec.kind == "parquet":
                bad = []  # rows without text reach datatrove and are dropped, counted, by the `read` filter
            excluded += [BadRow(spec.name, str(path), row, reason.split(" ")[0]) for row, reason in bad]
            if bad and spec.kind == "jsonl":
                # datatrove would skip these lines (or the rest of the file, on bad bytes) itself: read a clean copy
                skip = {row for row, _ in bad}
                target = clean_dir / (os.path.splitext(rel)[0] if rel.endswith(COMPRESSED) else rel)  # written plain
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_decompressed(path) as src, open(target, "wb") as dst:
                    for number, raw in enumerate(src, start=1):
                        if number not in skip:
                            dst.write(raw)
                good.append(str(target))
            elif bad and spec.kind in ("text", "html", "code"):
                continue
            else:
                good.append(str(path))
        listing = work_dir / "ingest" / f"{spec.name}.paths"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(os.path.abspath(p).lstrip("/") + "\n" for p in good))
        spec.paths_file = str(listing)
    return excluded
