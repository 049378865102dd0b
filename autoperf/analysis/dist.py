"""Durations read from ``metrics`` records' exponential histograms, beside the span-fed Reservoir.

``HistSum`` adds many interval histograms of one key (the report's hot loop over a day of metrics):
bucket counts are packed into one big integer, 32 bits a bucket while the sum's count stays below
2**32 (no bucket can overflow then; 64 bits beyond), so adding a histogram is one integer addition
in C instead of a Python step per bucket. ``Dist`` is what a state holder's ``res``
becomes once a metrics record feeds it: the Reservoir interface (count, total, min, max, percentile,
summary, merge, values) over the histogram sum plus any span-fed values (uncovered processes).
"""
from __future__ import annotations

import math
from array import array

from autoperf.metrics.exphist import ExpHistogram, lower_bound

from .stats import Reservoir, percentile_at

__all__ = ["HistSum", "Dist", "as_dist", "merge_res"]

_W = 64                     # bits per bucket in a wide packed sum
_NARROW = 32                # ... and in a sum whose count is below 2**32 (half the bytes to convert and add)
_CODE = {32: "I", 64: "Q"}
assert array("I").itemsize == 4 and array("Q").itemsize == 8

_last = {32: [None, 0], 64: [None, 0]}   # the last list packed per width: one record feeds several sums


def _pack(counts, width=_W) -> int:
    last = _last[width]
    if last[0] is counts:
        return last[1]
    value = int.from_bytes(array(_CODE[width], counts).tobytes(), "little")
    last[0], last[1] = counts, value
    return value


def _unpack(value: int, n: int, width=_W) -> list:
    a = array(_CODE[width])
    a.frombytes(value.to_bytes(n * width // 8, "little"))
    return a.tolist()


class HistSum:
    """The sum of histograms (durations in seconds, one scale) with exact count, sum, min and max (ms)."""

    __slots__ = ("scale", "offset", "n", "packed", "zero", "count", "sum_ms", "min_ms", "max_ms", "_h", "w")

    def __init__(self):
        self.scale = None
        self.offset = 0         # bucket index of the packed sum's lowest field
        self.n = 0              # fields in use
        self.packed = 0
        self.zero = 0
        self.count = 0
        self.sum_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = -math.inf
        self._h = None          # the ExpHistogram, built when read
        self.w = _NARROW        # bits per bucket of ``packed``

    def add(self, hist: dict, count: int, sum_ms: float, min_ms, max_ms) -> None:
        """One ``metrics`` record's histogram and exact fields."""
        if self.count + count >= 1 << _NARROW and self.w == _NARROW:
            self._widen()
        self.count += count
        self.sum_ms += sum_ms
        if min_ms is not None and min_ms < self.min_ms:
            self.min_ms = min_ms
        if max_ms is not None and max_ms > self.max_ms:
            self.max_ms = max_ms
        self._h = None
        self.zero += hist.get("zero_count") or 0
        counts = hist.get("counts")
        if not counts:
            return
        scale = hist.get("scale", 6)
        offset = hist.get("offset") or 0
        if scale != self.scale:
            if self.scale is None:
                self.scale, self.offset = scale, offset
            else:               # rare: a downscaled interval; both go to the coarser scale
                self._merge_slow(scale, offset, counts)
                return
        self._add_packed(offset, len(counts), _pack(counts, self.w))

    def _widen(self) -> None:
        """64 bits a bucket from now on (the count reaches 2**32)."""
        if self.n:
            self.packed = _pack(_unpack(self.packed, self.n, self.w), _W)
        self.w = _W

    def _add_packed(self, offset, n, value):
        if not self.n:
            self.offset, self.n, self.packed = offset, n, value
            return
        w = self.w
        if offset < self.offset:
            self.packed <<= w * (self.offset - offset)
            self.n += self.offset - offset
            self.offset = offset
        shift = offset - self.offset
        self.packed += value << (w * shift) if shift else value
        if shift + n > self.n:
            self.n = shift + n

    def _merge_slow(self, scale, offset, counts):
        h = self._plain()
        other = ExpHistogram(scale)
        other.offset, other.counts, other.count = offset, list(counts), sum(counts)
        other.min, other.max = h.min, h.max
        h.merge(other)
        self.scale, self.offset, self.n = h.scale, h.offset, len(h.counts)
        self.packed = _pack(h.counts, self.w) if h.counts else 0

    def _plain(self) -> ExpHistogram:
        h = ExpHistogram(self.scale if self.scale is not None else 6)
        h.offset = self.offset
        h.counts = _unpack(self.packed, self.n, self.w) if self.n else []
        h.count = sum(h.counts)
        h.min, h.max = 0.0, math.inf
        return h

    def merge(self, other: "HistSum") -> None:
        # the exact fields add as ExpHistogram.merge's do; the buckets differ (one packed integer here)
        if not other.count:
            return
        if self.w != _W and (other.w == _W or self.count + other.count >= 1 << _NARROW):
            self._widen()
        if other.w != self.w:               # (a copy: ``other`` is not changed)
            other = _widened(other)
        self.count += other.count
        self.sum_ms += other.sum_ms
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)
        self.zero += other.zero
        self._h = None
        if not other.n:
            return
        if self.scale is None or other.scale == self.scale:
            if self.scale is None:
                self.scale = other.scale
            self._add_packed(other.offset, other.n, other.packed)
        else:
            self._merge_slow(other.scale, other.offset, _unpack(other.packed, other.n, other.w))

    def hist(self) -> ExpHistogram:
        """The ExpHistogram (seconds) with the exact count, sum, min and max."""
        h = self._h
        if h is None:
            h = ExpHistogram(self.scale if self.scale is not None else 6)
            h.offset = self.offset
            h.counts = _unpack(self.packed, self.n, self.w) if self.n else []
            h.zero_count = self.zero
            h.count = self.count
            h.sum = self.sum_ms / 1000.0
            h.min = self.min_ms / 1000.0
            h.max = self.max_ms / 1000.0
            self._h = h
        return h


def _widened(hs: HistSum) -> HistSum:
    out = HistSum()
    for name in HistSum.__slots__:
        setattr(out, name, getattr(hs, name))
    out._widen()
    return out


class Dist:
    """A Reservoir-compatible distribution: a HistSum (metrics records) plus a Reservoir (span records of
    processes without metrics). ``cap`` is 0 so inlined fast paths (``count < cap``) call ``add``."""

    __slots__ = ("hs", "res", "cap", "_cache")

    def __init__(self, res: Reservoir | None = None):
        self.hs = HistSum()
        self.res = res if res is not None else Reservoir(1000)
        self.cap = 0
        self._cache = None

    # -- writing
    def add_metrics(self, hist, count, sum_ms, min_ms, max_ms):
        self.hs.add(hist, count, sum_ms, min_ms, max_ms)
        self._cache = None

    def add(self, v):
        self.res.add(v)
        self._cache = None

    def add_many(self, values):
        self.res.add_many(values)
        self._cache = None

    def merge(self, other):
        if isinstance(other, Dist):
            self.hs.merge(other.hs)
            self.res.merge(other.res)
        else:
            self.res.merge(other)
        self._cache = None

    # -- reading
    @property
    def count(self) -> int:
        return self.hs.count + self.res.count

    @property
    def exact(self) -> bool:
        """Percentiles are not exact values but within 0.55 % (never a sample of the count)."""
        return True

    @property
    def total(self) -> float:
        return self.hs.sum_ms + (self.res.total if self.res.count else 0.0)

    @property
    def min(self) -> float:
        return min(self.hs.min_ms, self.res.min if self.res.count else math.inf)

    @property
    def max(self) -> float:
        return max(self.hs.max_ms, self.res.max if self.res.count else -math.inf)

    @property
    def avg(self):
        c = self.count
        return self.total / c if c else None

    def _hist(self) -> ExpHistogram:
        if self._cache is None:
            h = self.hs.hist().copy()
            r = self.res
            if r.count:         # span-fed values join the histogram (weighted when the reservoir samples)
                if h.count == 0:
                    h.min, h.max = math.inf, -math.inf
                weight = r.count / len(r.values)
                extra = ExpHistogram(h.scale)
                for v in r.values:
                    extra.record(v / 1000.0)
                if weight != 1.0:
                    extra.counts = [round(c * weight) for c in extra.counts]
                    extra.zero_count = round(extra.zero_count * weight)
                extra.count, extra.sum = r.count, r.total / 1000.0
                extra.min, extra.max = r.min / 1000.0, r.max / 1000.0
                h.merge(extra)
            self._cache = h
        return self._cache

    def percentile(self, q):
        return percentile_at(self, q, self._interior)

    def _interior(self, q):
        v = self._hist().percentile(q)        # within the exact min and max (one run: its value)
        return None if v is None else min(max(v * 1000.0, self.min), self.max)

    def fraction_above(self, limit_ms: float) -> float:
        h = self._hist()
        return h.count_above(limit_ms / 1000.0) / h.count if h.count else 0.0

    def count_above(self, limit_ms: float) -> int:
        return self._hist().count_above(limit_ms / 1000.0)

    @property
    def values(self):
        """A representative sample (bucket mid-points in proportion, at most ~5000 values) for the tests
        that need values (Mann–Whitney in regress, the report's coarse histogram)."""
        h = self._hist()
        if not h.count:
            return array("d")
        step = max(1.0, h.count / 5000.0)
        out = array("d")
        acc = 0.0
        if h.zero_count:
            acc += h.zero_count
            out.extend([0.0] * int(acc // step))
            acc -= int(acc // step) * step
        for k, c in enumerate(h.counts):
            if not c:
                continue
            acc += c
            m = int(acc // step)
            if m:
                lo, hi = lower_bound(h.offset + k, h.scale), lower_bound(h.offset + k + 1, h.scale)
                v = min(max(2.0 * lo * hi / (lo + hi), h.min), h.max) * 1000.0
                out.extend([v] * m)
                acc -= m * step
        return out

    def sorted(self):
        return sorted(self.values)

    def summary(self, qs=(50, 95, 99)) -> dict:
        n = self.count
        if n == 0:
            d = {"count": 0, "avg_ms": None, "min_ms": None, "max_ms": None}
            for q in qs:
                d[f"p{q:g}_ms"] = None
            return d
        d = {"count": n, "avg_ms": self.total / n, "min_ms": self.min, "max_ms": self.max}
        for q in qs:
            d[f"p{q:g}_ms"] = self.percentile(q)
        return d


def as_dist(holder, attr="res") -> Dist:
    """``holder.attr`` as a Dist (a Reservoir is wrapped once, keeping its values)."""
    r = getattr(holder, attr)
    if r.__class__ is not Dist:
        r = Dist(r)
        setattr(holder, attr, r)
    return r


def merge_res(mine, theirs):
    """``mine`` with ``theirs`` merged in (either may be a Reservoir or a Dist); returns the holder to keep."""
    if theirs.__class__ is Dist and mine.__class__ is not Dist:
        mine = Dist(mine)
    mine.merge(theirs)
    return mine
