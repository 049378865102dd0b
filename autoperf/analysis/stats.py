"""Small, dependency-free statistics for the analysis package.

``percentile`` (exact, linear interpolation: ``numpy.percentile(..., method="linear")``);
``Reservoir`` (every value up to ``cap``, then a uniform sample by Vitter's Algorithm L; count, total,
min and max always exact); ``mann_whitney_u`` (normal approximation with tie and continuity
correction) and ``exceedance_test`` (one-sided binomial: more than ``q`` of a sample above a reference
quantile), the two tests ``regress`` uses.
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


def percentile_at(dist, q: float, interior) -> float | None:
    """``dist``'s q-th percentile by the rule every distribution here follows (Reservoir, Dist): None
    when empty, the exact min and max at the ends, ``interior(q)`` between."""
    if dist.count == 0:
        return None
    if q >= 100:
        return dist.max
    if q <= 0:
        return dist.min
    return interior(q)


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> list[float | None]:
    s = sorted(values)
    return [percentile(s, q) for q in qs]


class Reservoir:
    """Bounded sample of a stream of floats (see module doc for the exactness guarantee)."""

    __slots__ = ("cap", "values", "count", "_total", "_min", "_max", "_full", "_next", "_w", "_rng", "_sorted",
                 "_sorted_n", "_agg_n")

    def __init__(self, cap: int = 100_000, seed: int | None = 0x5EED):
        self.cap = max(1, int(cap))
        self.values = array("d")
        self.count = 0
        self._full = False      # the stream outgrew the cap: totals are maintained explicitly from then on
        self._total = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._agg_n = -1        # count at which _total/_min/_max were computed from values (while exact)
        self._next = 0          # index (0-based, in stream order) of the next value to keep once full
        self._w = 1.0
        self._rng = None
        self._sorted = None
        self._sorted_n = -1

    @property
    def exact(self) -> bool:
        return self.count <= self.cap

    def add(self, v: float) -> None:
        c = self.count
        self.count = c + 1
        if c < self.cap:                    # hot path: exact phase
            self.values.append(v)
            return
        self._add_slow(v, c)

    def add_many(self, values: Sequence[float]) -> None:
        """The same state as ``for v in values: self.add(v)`` (same kept values, same random stream),
        without a Python step per value: one copy while exact, then only the values Algorithm L keeps.
        (The running total after the cap is a left-to-right ``sum``, as ``add`` does it; Python 3.12+
        compensates ``sum``, so there the last bits may differ.)"""
        n = len(values)
        if not n:
            return
        c = self.count
        room = self.cap - c
        if room > 0:
            if n <= room:
                self.values.extend(values)
                self.count = c + n
                return
            self.values.extend(values[:room])
            self.count = c = self.cap
            values = values[room:]
        if not self._full:
            self._start_sampling()
        self._total = sum(values, self._total)
        lo, hi = min(values), max(values)
        if lo < self._min:
            self._min = lo
        if hi > self._max:
            self._max = hi
        end = c + len(values)
        nxt = self._next
        if nxt < end:      # _add_slow's replace + _advance, inlined: the same random calls in the same order
            rng, cap, kept = self._rng, self.cap, self.values
            randbelow, random, log, exp, floor = rng._randbelow, rng.random, math.log, math.exp, math.floor
            w = self._w
            while nxt < end:
                kept[randbelow(cap)] = values[nxt - c]          # = rng.randrange(cap)
                w *= exp(log(random() or 1e-300) / cap)
                if w >= 1.0:
                    nxt += 1
                else:
                    nxt += int(floor(log(random() or 1e-300) / log(1.0 - w))) + 1
            self._w = w
            self._next = nxt
        self.count = end

    def _sync(self) -> None:
        if not self._full and self._agg_n != self.count:
            vals = self.values
            self._total = math.fsum(vals) if vals else 0.0
            self._min = min(vals) if vals else math.inf
            self._max = max(vals) if vals else -math.inf
            self._agg_n = self.count

    def _start_sampling(self) -> None:
        self._sync()
        self._full = True
        if self._rng is None:
            self._rng = random.Random(0x5EED ^ self.cap)
        self._w = math.exp(math.log(self._rng.random() or 1e-300) / self.cap)
        self._advance(self.count - 1)

    def _add_slow(self, v: float, c: int) -> None:
        """``c``: index of ``v`` in the stream (count already incremented)."""
        if not self._full:
            self.count = c
            self._start_sampling()
            self.count = c + 1
        self._total += v
        if v < self._min:
            self._min = v
        elif v > self._max:
            self._max = v
        if c == self._next:
            rng = self._rng
            self.values[rng.randrange(self.cap)] = v
            self._w *= math.exp(math.log(rng.random() or 1e-300) / self.cap)
            self._advance(c)

    def _advance(self, i: int) -> None:
        w = self._w
        if w >= 1.0:
            self._next = i + 1
            return
        r = self._rng.random() or 1e-300
        self._next = i + int(math.floor(math.log(r) / math.log(1.0 - w))) + 1

    @property
    def total(self) -> float:
        self._sync()
        return self._total

    @property
    def min(self) -> float:
        self._sync()
        return self._min

    @property
    def max(self) -> float:
        self._sync()
        return self._max

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(v)

    def merge(self, other: "Reservoir") -> None:
        """Merge another reservoir. Exact when the union fits; otherwise a weighted subsample."""
        if other.count == 0:
            return
        if not self._full and not other._full and self.count + other.count <= self.cap:
            self.values.extend(other.values)
            self.count += other.count
            self._sorted_n = -1
            return
        total, mn, mx = self.total + other.total, min(self.min, other.min), max(self.max, other.max)
        tot = self.count + other.count
        if self._rng is None:
            self._rng = random.Random(0x5EED ^ self.cap)
        rng = self._rng
        if len(self.values) + len(other.values) <= self.cap:
            vals = array("d", self.values)
            vals.extend(other.values)
        else:   # weighted subsample: each side contributes in proportion to its stream count
            k_self = min(round(self.cap * self.count / tot), len(self.values))
            k_other = min(self.cap - k_self, len(other.values))
            vals = array("d", rng.sample(list(self.values), k_self) + rng.sample(list(other.values), k_other))
        self.values = vals
        self.count = tot
        self._total, self._min, self._max = total, mn, mx
        self._full = True
        self._w = math.exp(math.log(rng.random() or 1e-300) / self.cap)
        self._advance(self.count - 1)
        self._sorted_n = -1

    def sorted(self) -> list[float]:
        if self._sorted_n != self.count or self._sorted is None:
            self._sorted = sorted(self.values)
            self._sorted_n = self.count
        return self._sorted

    def percentile(self, q: float) -> float | None:
        return percentile_at(self, q, self._interior)

    def _interior(self, q: float) -> float | None:
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
