"""Mixing: draw each source's documents so that the output follows the configured shares (down-sampling without
replacement, up-sampling by whole repeats plus a random remainder), and report the realised proportions."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class MixPlan:
    targets: dict[str, int]  # output rows per source
    total: int


def plan_mix(available: dict[str, int], shares: dict[str, float], total: int | None = None,
             max_repeat: float = 1.0) -> MixPlan:
    """Rows per source for `shares` (normalised here: 3 and 1 are 75% and 25% of the output). Without `total`, the
    largest mix that needs no source repeated more than `max_repeat` times (1.0: pure down-sampling, the scarcest
    source relative to its share is used whole)."""
    norm = sum(w for s, w in shares.items() if available.get(s, 0) > 0 or total)
    shares = {s: (w / norm if norm else 0.0) for s, w in shares.items()}
    if total is None:
        limits = [available[s] * max_repeat / share for s, share in shares.items() if share > 0 and available.get(s, 0) > 0]
        total = int(min(limits)) if limits else 0
    targets = {s: int(round(total * shares[s])) if available.get(s, 0) > 0 else 0 for s in shares}
    return MixPlan(targets, sum(targets.values()))


def draw(ids: list, target: int, seed: int) -> tuple[list, list]:
    """(rows to output, with repeats; ids left out). Deterministic for a seed and an id order."""
    rng = random.Random(seed)
    ids = sorted(ids, key=str)
    if target <= len(ids):
        chosen = rng.sample(ids, target)
        chosen_set = set(map(str, chosen))
        return chosen, [i for i in ids if str(i) not in chosen_set]
    repeats, remainder = divmod(target, len(ids))
    return ids * repeats + rng.sample(ids, remainder), []


def realised(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {s: (n / total if total else 0.0) for s, n in counts.items()}
