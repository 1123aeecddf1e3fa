"""The project's `evaluate` metric modules, shipped in `evaluation/metrics/<name>/<name>.py` and loaded by path
(the `evaluate` package ships no metric scripts and the Hub may be out of reach)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent / "metrics"


@lru_cache(maxsize=None)
def load_metric(name: str) -> evaluate.EvaluationModule:
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise KeyError(f"metric '{name}' is not shipped with llm-recipes (known: {', '.join(known)})")
    return evaluate.load(str(path))


def compute(name: str, **kwargs) -> dict:
    return load_metric(name).compute(**kwargs)
