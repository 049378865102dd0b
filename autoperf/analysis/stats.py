"""Small, dependency-free statistics used by the analysis package.

* ``percentile`` — exact percentile with linear interpolation between closest ranks
  (the same definition as ``numpy.percentile(..., method="linear")``).
* ``Reservoir`` — bounded sample of a stream: *exact* (keeps every value) while the stream
  has at most ``cap`` values, then a uniform random sample of ``cap`` values (Vitter's
  Algorithm L, so the per-value cost after the cap is one integer compare).  ``count``,
  ``total``, ``min`` and ``max`` are always exact.
* ``mann_whitney_u`` — two-sample Mann–Whitney U test, normal approximation with tie
  correction and continuity correction (no scipy).
* ``exceedance_test`` — one-sided binomial (normal approximation) test that more than
  ``q`` of a sample lies above a reference quantile (used to make p95 regressions credible).
"""
from __future__ import annotations

import math
import random
from array import array
from typing import Iterable, Sequence

__all__ = ["percentile", "percentiles", "Reservoir", "mann_whitney_u", "exceedance_test", "norm_sf"]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """q in [0, 100]; ``sorted_values`` must be sorted ascending. None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * (q / 100.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a = sorted_values[lo]
    return float(a + (sorted_values[hi] - a) * frac)


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> list[float | None]:
    s = sorted(values)
    return [percentile(s, q) for q in qs]


class Reservoir:
    """Bounded sample of a stream of floats (see module doc for the exactness guarantee)."""

    __slots__ = ("cap", "values", "count", "total", "min", "max", "_next", "_w", "_rng", "_sorted")

    def __init__(self, cap: int = 100_000, seed: int | None = 0x5EED):
        self.cap = max(1, int(cap))
        self.values = array("d")
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._next = 0          # index (0-based, in stream order) of the next value to keep once full
        self._w = 1.0
        self._rng = random.Random(seed)
        self._sorted = None

    @property
    def exact(self) -> bool:
        return self.count <= self.cap

    def add(self, v: float) -> None:
        self.count += 1
        self.total += v
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        self._sorted = None
        vals = self.values
        if len(vals) < self.cap:
            vals.append(v)
            if len(vals) == self.cap:
                self._w = math.exp(math.log(self._rng.random() or 1e-300) / self.cap)
                self._advance(self.count - 1)
            return
        if self.count - 1 == self._next:
            vals[self._rng.randrange(self.cap)] = v
            self._w *= math.exp(math.log(self._rng.random() or 1e-300) / self.cap)
            self._advance(self.count - 1)

    def _advance(self, i: int) -> None:
        w = self._w
        if w >= 1.0:
            self._next = i + 1
            return
        r = self._rng.random() or 1e-300
        self._next = i + int(math.floor(math.log(r) / math.log(1.0 - w))) + 1

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(v)

    def merge(self, other: "Reservoir") -> None:
        """Merge another reservoir. Exact when the union fits; otherwise a weighted subsample."""
        if other.count == 0:
            return
        if self.count + other.count <= self.cap or len(self.values) + len(other.values) <= self.cap:
            self.values.extend(other.values)
        else:
            # weighted subsample: each side contributes in proportion to its stream count
            tot = self.count + other.count
            k_self = round(self.cap * self.count / tot)
            k_other = self.cap - k_self
            rng = self._rng
            mine = list(self.values)
            theirs = list(other.values)
            a = rng.sample(mine, min(k_self, len(mine)))
            b = rng.sample(theirs, min(k_other, len(theirs)))
            self.values = array("d", a + b)
            self._w = math.exp(math.log(rng.random() or 1e-300) / self.cap)
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if len(self.values) >= self.cap:
            self._advance(self.count - 1)
        self._sorted = None

    def sorted(self) -> list[float]:
        if self._sorted is None or len(self._sorted) != len(self.values):
            self._sorted = sorted(self.values)
        return self._sorted

    def percentile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        if q >= 100:
            return self.max
        if q <= 0:
            return self.min
        return percentile(self.sorted(), q)

    @property
    def avg(self) -> float | None:
        return self.total / self.count if self.count else None

    def fraction_above(self, limit: float) -> float:
        """Fraction of the (sampled) values strictly above ``limit``."""
        s = self.sorted()
        if not s:
            return 0.0
        import bisect
        return (len(s) - bisect.bisect_right(s, limit)) / len(s)

    def summary(self, qs: Sequence[float] = (50, 95, 99)) -> dict:
        if self.count == 0:
            d = {"count": 0, "avg_ms": None, "min_ms": None, "max_ms": None}
            for q in qs:
                d[f"p{q:g}_ms"] = None
            return d
        d = {"count": self.count, "avg_ms": self.total / self.count, "min_ms": self.min, "max_ms": self.max}
        for q in qs:
            d[f"p{q:g}_ms"] = self.percentile(q)
        if not self.exact:
            d["sampled"] = len(self.values)
        return d


def norm_sf(z: float) -> float:
    """Survival function of the standard normal distribution."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(a: Sequence[float], b: Sequence[float], alternative: str = "greater") -> dict:
    """Mann–Whitney U test of ``b`` against ``a``.

    ``alternative="greater"``: H1 is that values of ``b`` tend to be larger than those of ``a``.
    Normal approximation with tie correction:
        sigma^2 = n1*n2/12 * ((n+1) - sum(t^3 - t) / (n*(n-1)))
    and a 0.5 continuity correction.  Returns {u, z, p, effect} where ``effect`` is the common
    language effect size P(b > a) + 0.5 P(b == a).
    """
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return {"u": None, "z": None, "p": 1.0, "effect": None}
    combined = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    n = n1 + n2
    rank_sum_b = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        v = combined[i][0]
        while j + 1 < n and combined[j + 1][0] == v:
            j += 1
        t = j - i + 1
        avg_rank = (i + j) / 2.0 + 1.0
        if t > 1:
            tie_term += t ** 3 - t
        for k in range(i, j + 1):
            if combined[k][1] == 1:
                rank_sum_b += avg_rank
        i = j + 1
    u_b = rank_sum_b - n2 * (n2 + 1) / 2.0      # number of (a, b) pairs with b > a (+ half ties)
    mu = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - (tie_term / (n * (n - 1)) if n > 1 else 0.0))
    effect = u_b / (n1 * n2)
    if var <= 0:
        return {"u": u_b, "z": 0.0, "p": 1.0, "effect": effect}
    sd = math.sqrt(var)
    if alternative == "greater":
        z = (u_b - mu - 0.5) / sd
        p = norm_sf(z)
    elif alternative == "less":
        z = (u_b - mu + 0.5) / sd
        p = 1.0 - norm_sf(z)
    else:
        z = (abs(u_b - mu) - 0.5) / sd
        p = min(1.0, 2.0 * norm_sf(z))
    return {"u": u_b, "z": z, "p": p, "effect": effect}


def exceedance_test(sample_sorted: Sequence[float], reference_value: float, q: float = 0.05) -> dict:
    """Is P(X > reference_value) > q for the sample? One-sided binomial test, normal approximation.

    Used for tail (p95) regressions: if the current distribution had not changed, about 5 % of the
    current samples would exceed the baseline p95.  Returns {k, n, frac, z, p}.
    """
    import bisect
    n = len(sample_sorted)
    if n == 0:
        return {"k": 0, "n": 0, "frac": None, "z": None, "p": 1.0}
    k = n - bisect.bisect_right(sample_sorted, reference_value)
    sd = math.sqrt(n * q * (1 - q))
    z = (k - n * q - 0.5) / sd if sd > 0 else 0.0
    return {"k": k, "n": n, "frac": k / n, "z": z, "p": norm_sf(z)}
