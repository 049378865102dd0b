"""Exponential histograms in OpenTelemetry's layout: mergeable, bounded, percentiles within 0.55 %.

Bucket ``i`` at scale ``s`` holds values in ``(base**i, base**(i+1)]`` with ``base = 2**(2**-s)``;
``counts[k]`` is bucket ``offset + k``; values ``<= 0`` count in ``zero_count``. At the default
scale 6 a bucket is 1.09 % wide, and a percentile read from it (each rank's value taken as its
bucket's harmonic mid-point, clamped to the exact min and max) is within 0.545 % of the exact
one, for any data. When the buckets of one histogram would span more than ``max_buckets``, it
halves its resolution (scale - 1), as the OTel SDK does; 4096 buckets at scale 6 span a ratio of
2**64 between the smallest and largest value, so durations never need it.
"""
from __future__ import annotations

import math

__all__ = ["ExpHistogram", "DEFAULT_SCALE", "MAX_BUCKETS", "relative_error"]

DEFAULT_SCALE = 6
MAX_BUCKETS = 4096
_frexp = math.frexp
_log = math.log
_ceil = math.ceil
_LN2 = math.log(2.0)


def relative_error(scale: int) -> float:
    """The largest relative error of a value (or percentile) read from a histogram at ``scale``."""
    ratio = 2.0 ** (2.0 ** -scale)
    return (ratio - 1.0) / (ratio + 1.0)


def bucket_index(value: float, scale: int) -> int:
    """The bucket holding ``value`` (> 0) at ``scale`` (OTel's mapping, exact at powers of two)."""
    mantissa, exp = _frexp(value)      # value = mantissa * 2**exp, 0.5 <= mantissa < 1
    if mantissa == 0.5:                # 2**(exp-1) exactly: the upper bound of its bucket
        return ((exp - 1) << scale) - 1 if scale >= 0 else (exp - 2) >> -scale
    if scale > 0:
        return _ceil(_log(value) * (1 << scale) / _LN2) - 1
    return (exp - 1) >> -scale


def lower_bound(index: int, scale: int) -> float:
    """The (exclusive) lower bound of bucket ``index`` at ``scale``: ``base ** index``."""
    return 2.0 ** (index / (1 << scale)) if scale >= 0 else 2.0 ** (index * (1 << -scale))


class ExpHistogram:
    """A histogram of positive values (durations in seconds, for OTel and Prometheus).

    ``record(v)`` is the hot operation (the writer thread, once per finished span): a frexp, a
    log and a list increment while the value falls in the buckets already spanned.
    """

    __slots__ = ("scale", "zero_count", "offset", "counts", "count", "sum", "min", "max", "max_buckets")

    def __init__(self, scale: int = DEFAULT_SCALE, max_buckets: int = MAX_BUCKETS):
        self.scale = scale
        self.max_buckets = max_buckets
        self.zero_count = 0
        self.offset = 0
        self.counts: list = []
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    # -- recording ----------------------------------------------------------------------------
    def record(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0.0:
            self.zero_count += 1
            return
        scale = self.scale
        mantissa, exp = _frexp(value)
        if mantissa == 0.5 or scale <= 0:
            index = bucket_index(value, scale)
        else:
            index = _ceil(_log(value) * (1 << scale) / _LN2) - 1
        k = index - self.offset
        counts = self.counts
        if 0 <= k < len(counts):
            counts[k] += 1
        else:
            self._grow(index, 1)

    def _grow(self, index: int, n: int) -> None:
        """Add ``n`` to bucket ``index`` (at the current scale), widening or downscaling to fit."""
        counts = self.counts
        if not counts:
            self.offset, self.counts = index, [n]
            return
        low = min(self.offset, index)
        high = max(self.offset + len(counts) - 1, index)
        shift = 0
        while (high >> shift) - (low >> shift) + 1 > self.max_buckets:
            shift += 1
        if shift:
            self._downscale(shift)
            index >>= shift
            counts = self.counts
        k = index - self.offset
        if k < 0:
            self.counts = counts = [0] * -k + counts
            self.offset = index
            k = 0
        elif k >= len(counts):
            counts.extend([0] * (k - len(counts) + 1))
        counts[k] += n

    def _downscale(self, shift: int) -> None:
        """Halve the resolution ``shift`` times: bucket ``i`` goes to ``i >> shift``."""
        if shift <= 0:
            return
        merged: dict = {}
        for k, c in enumerate(self.counts):
            if c:
                j = (self.offset + k) >> shift
                merged[j] = merged.get(j, 0) + c
        self.scale -= shift
        if merged:
            lo, hi = min(merged), max(merged)
            self.offset = lo
            self.counts = [merged.get(j, 0) for j in range(lo, hi + 1)]
        else:
            self.offset, self.counts = self.offset >> shift, []

    # -- combining ----------------------------------------------------------------------------
    def merge(self, other: "ExpHistogram") -> None:
        """Add ``other``'s observations to this histogram (both keep exact counts, sum, min, max)."""
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.zero_count += other.zero_count
        if not other.counts:
            return
        if other.scale < self.scale:
            self._downscale(self.scale - other.scale)
        for k, c in enumerate(other.counts):
            if c:   # the shift is read each time: _grow may have lowered this scale
                self._grow((other.offset + k) >> (other.scale - self.scale), c)

    def copy(self) -> "ExpHistogram":
        h = ExpHistogram(self.scale, self.max_buckets)
        h.zero_count, h.offset, h.counts = self.zero_count, self.offset, list(self.counts)
        h.count, h.sum, h.min, h.max = self.count, self.sum, self.min, self.max
        return h

    # -- reading ------------------------------------------------------------------------------
    def _mid(self, index: int) -> float:
        """Bucket ``index``'s estimate of a value in it: the harmonic mid-point, clamped to
        [min, max] (within ``relative_error(scale)`` of any value of the bucket)."""
        lo, hi = lower_bound(index, self.scale), lower_bound(index + 1, self.scale)
        return min(max(2.0 * lo * hi / (lo + hi), self.min), self.max)

    def percentile(self, q: float) -> float | None:
        """``q`` in [0, 100], linear interpolation between closest ranks (numpy's default), as
        ``analysis.stats.percentile`` computes it over the raw values. None when empty."""
        return self.percentiles((q,))[0]

    def percentiles(self, qs) -> list:
        """Several percentiles in one walk over the buckets."""
        n = self.count
        if n == 0:
            return [None for _ in qs]
        wanted = []
        for q in qs:
            pos = (n - 1) * (q / 100.0)
            lo = int(pos)
            wanted.append((lo, min(lo + 1, n - 1), pos - lo))
        ranks = sorted({r for lo, hi, _ in wanted for r in (lo, hi)})
        values = {}
        it = iter(ranks)
        rank = next(it)
        seen = 0
        done = False
        if self.zero_count:
            zero_value = min(max(0.0, self.min), self.max)
            seen = self.zero_count
            while rank < seen:
                values[rank] = zero_value
                rank = next(it, None)
                if rank is None:
                    done = True
                    break
        if not done:
            for k, c in enumerate(self.counts):
                if not c:
                    continue
                seen += c
                if rank < seen:
                    mid = self._mid(self.offset + k)
                    while rank is not None and rank < seen:
                        values[rank] = mid
                        rank = next(it, None)
                    if rank is None:
                        break
            while rank is not None:
                values[rank] = self.max
                rank = next(it, None)
        out = []
        for lo, hi, frac in wanted:
            a = values[lo]
            out.append(a + (values[hi] - a) * frac)
        return out

    def count_above(self, threshold: float) -> int:
        """Observations above ``threshold``, counting a bucket that straddles it as above (an
        upper bound; exact when ``threshold`` is a bucket boundary)."""
        if self.count == 0 or threshold >= self.max:
            return 0
        if threshold < 0:
            return self.count
        if threshold == 0:
            return self.count - self.zero_count
        index = bucket_index(threshold, self.scale)
        if threshold >= lower_bound(index + 1, self.scale):
            index += 1      # the threshold ends its bucket: none of that bucket is above it
        return sum_(self.counts[max(index - self.offset, 0):])

    # -- the record form ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """``{"scale", "zero_count", "offset", "counts"}`` (OTel's positive buckets; leading and
        trailing empty buckets trimmed). count, sum, min and max are the caller's fields."""
        counts = self.counts
        lo, hi = 0, len(counts)
        while lo < hi and not counts[lo]:
            lo += 1
        while hi > lo and not counts[hi - 1]:
            hi -= 1
        return {"scale": self.scale, "zero_count": self.zero_count,
                "offset": self.offset + lo, "counts": counts[lo:hi]}

    @classmethod
    def from_dict(cls, data: dict, count=None, sum=None, min=None, max=None,
                  max_buckets: int = MAX_BUCKETS) -> "ExpHistogram":
        """The histogram of a ``metrics`` record's ``hist`` (count/sum/min/max from the record; when
        absent, count from the buckets and min/max from the bucket bounds)."""
        h = cls(int(data.get("scale", DEFAULT_SCALE)), max_buckets)
        h.zero_count = int(data.get("zero_count") or 0)
        h.offset = int(data.get("offset") or 0)
        h.counts = [int(c) for c in data.get("counts") or ()]
        h.count = int(count) if count is not None else h.zero_count + sum_(h.counts)
        h.sum = float(sum) if sum is not None else 0.0
        if min is not None:
            h.min = float(min)
        elif h.zero_count:
            h.min = 0.0
        elif h.counts:
            h.min = lower_bound(h.offset, h.scale)
        if max is not None:
            h.max = float(max)
        elif h.counts:
            h.max = lower_bound(h.offset + len(h.counts), h.scale)
        elif h.zero_count:
            h.max = 0.0
        return h


sum_ = sum
