"""95% intervals of rates and of their differences (the toy claims table and the update round's changelog).

scipy's binomtest gives the Wilson interval of one proportion; the difference of two independent proportions uses
Newcombe's hybrid score method, which scipy does not offer."""

from __future__ import annotations

import math

from scipy.stats import binomtest

Interval = tuple[float, float]


def wilson(rate: float, n: int) -> Interval:
    """95% Wilson score interval of a proportion measured on n items."""
    if not n:
        return (math.nan, math.nan)
    ci = binomtest(round(rate * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def difference_interval(p1: float, n1: int, p2: float, n2: int) -> Interval:
    """95% interval of p1 - p2 from the two Wilson intervals (Newcombe's hybrid score method)."""
    l1, u1 = wilson(p1, n1)
    l2, u2 = wilson(p2, n2)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
