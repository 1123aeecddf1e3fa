"""Routing: apply a datatrove filter or formatter only to the documents of some sources, kinds or languages.

datatrove runs every step on every document; a `Route` selects documents by their metadata (`source`, `kind`,
`language`) and the wrapped step sees only those, the others pass through untouched. A dropped document gets
`filter_reason` "<stage>:<reason>" and goes to the wrapper's exclusion writer, so accounting sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.writers.disk_base import DiskWriter

from llm_recipes.parser import build_options

ROUTE_KEYS = ("sources", "kinds", "languages", "not_sources", "not_kinds", "not_languages")


@dataclass(frozen=True)
class Route:
    """Which documents a step applies to; an empty include list means all, `not_*` lists exclude."""

    sources: frozenset[str] = field(default_factory=frozenset)
    kinds: frozenset[str] = field(default_factory=frozenset)
    languages: frozenset[str] = field(default_factory=frozenset)
    not_sources: frozenset[str] = field(default_factory=frozenset)
    not_kinds: frozenset[str] = field(default_factory=frozenset)
    not_languages: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_dict(cls, spec: dict | None, where: str = "route") -> Route:
        spec = spec or {}
        if isinstance(spec, dict):  # a single name stands for a list of one
            spec = {key: [value] if isinstance(value, str) else value for key, value in spec.items()}
        return build_options(cls, spec, where)

    def matches(self, doc: Document) -> bool:
        meta = doc.metadata
        for include, exclude, key in ((self.sources, self.not_sources, "source"), (self.kinds, self.not_kinds, "kind"),
                                      (self.languages, self.not_languages, "language")):
            value = meta.get(key)
            if include and value not in include:
                return False
            if value in exclude:
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={sorted(getattr(self, k))}" for k in ROUTE_KEYS if getattr(self, k)]
        return ", ".join(parts) or "all documents"


class RoutedFilter(BaseFilter):
    """Runs `inner.filter` on the documents `route` selects; reasons are prefixed with `stage`."""

    type = "🔻 - FILTER"

    def __init__(self, inner: BaseFilter, route: Route, stage: str, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.inner, self.route, self.stage = inner, route, stage
        self.name = f"{stage} ({route.describe()})"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if not self.route.matches(doc):
            return True
        keep, reason = get_filter_result(self.inner.filter(doc))
        if keep:
            return True
        return False, f"{self.stage}:{reason or 'dropped'}"


class RoutedFormatter(BaseFormatter):
    """Runs `inner.format` on the text of the documents `route` selects."""

    def __init__(self, inner: BaseFormatter, route: Route, stage: str):
        super().__init__()
        self.inner, self.route, self.stage = inner, route, stage
        self.name = f"{stage} ({route.describe()})"

    def format(self, text: str) -> str:  # pragma: no cover - run() routes per document
        return self.inner.format(text)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("total")
            if self.route.matches(doc):
                with self.track_time():
                    doc.text = self.inner.format(doc.text)
                self.stat_update("formatted")
            yield doc


class Accounted(PipelineStep):
    """Wraps a step that may drop documents without telling (an extractor): every document that goes in and does
    not come out is written to `exclusion_writer` with `filter_reason` "<stage>:<reason>"."""

    type = "🧾 - ACCOUNT"

    def __init__(self, inner: PipelineStep, stage: str, exclusion_writer: DiskWriter, route: Route | None = None,
                 reason: str = "dropped"):
        super().__init__()
        self.inner, self.stage, self.exclusion_writer = inner, stage, exclusion_writer
        self.route = route or Route()
        self.reason = reason
        self.name = f"{stage} ({self.route.describe()})"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        pending: dict[int, Document] = {}
        passthrough: list[Document] = []

        def feed():
            for doc in data:
                if self.route.matches(doc):
                    pending[id(doc)] = doc
                    yield doc
                else:
                    passthrough.append(doc)

        with self.exclusion_writer as writer:

            def drop(doc: Document) -> None:
                doc.metadata["filter_reason"] = f"{self.stage}:{self.reason}"
                self.stat_update("dropped")
                writer.write(doc, rank)

            for out in self.inner.run(feed(), rank, world_size):
                # documents fed before `out` that did not come out were dropped by the inner step
                for key in list(pending):
                    doc = pending.pop(key)
                    if key == id(out):
                        break
                    drop(doc)
                yield from passthrough
                passthrough.clear()
                yield out
            for doc in pending.values():
                drop(doc)
            yield from passthrough
