"""Data collection and curation on datatrove: sources, routed filters, PII removal, deduplication, knowledge
cutoff, mixing and an exact account of every dropped document (`scripts/curate.py`)."""

from llm_recipes.curation.routing import Route, RoutedFilter, RoutedFormatter

__all__ = ["Route", "RoutedFilter", "RoutedFormatter"]
