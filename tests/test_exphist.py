"""Exponential histograms (autoperf.metrics.exphist) against exact statistics over known data."""
from __future__ import annotations

import math
import random

import pytest

from autoperf.analysis.stats import percentile
from autoperf.metrics.exphist import (DEFAULT_SCALE, ExpHistogram, bucket_index, lower_bound,
                                      relative_error)

QS = (0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)


def _datasets():
    rng = random.Random(20261206)
    yield "lognormal", [rng.lognormvariate(-4, 1.5) for _ in range(100_000)]
    # 95 % fast and 5 % slow with a gap: p95 interpolates across the gap
    yield "bimodal", [rng.uniform(0.001, 0.002) if i % 20 else rng.uniform(0.5, 0.6) for i in range(40_000)]
    yield "constant", [0.0123] * 1000
    yield "uniform", [rng.uniform(1e-6, 30.0) for _ in range(50_000)]
    yield "with zeros", [0.0] * 30 + [rng.expovariate(100) for _ in range(970)]
    yield "one", [0.25]


def _hist(values, **kw):
    h = ExpHistogram(**kw)
    for v in values:
        h.record(v)
    return h


class TestPercentiles:
    @pytest.mark.parametrize("name,values", list(_datasets()), ids=lambda x: x if isinstance(x, str) else "")
    def test_every_percentile_is_within_the_stated_error_of_the_exact_one(self, name, values):
        """Each percentile read from the histogram is within relative_error(scale) of numpy's linear one."""
        h = _hist(values)
        exact_sorted = sorted(values)
        bound = relative_error(DEFAULT_SCALE) * (1 + 1e-9)
        got = h.percentiles(QS)
        for q, estimate in zip(QS, got):
            exact = percentile(exact_sorted, q)
            if exact == 0:
                assert estimate == 0
            else:
                assert abs(estimate - exact) / exact <= bound, (name, q, estimate, exact)
        assert h.count == len(values)
        assert h.min == min(values) and h.max == max(values)
        assert math.isclose(h.sum, math.fsum(values), rel_tol=1e-9)

    def test_the_stated_error_at_the_default_scale_is_under_one_percent(self):
        """Scale 6 buckets are 1.09 % wide; read at their harmonic mid-point, 0.545 %."""
        assert relative_error(DEFAULT_SCALE) < 0.0055

    def test_empty_histogram_has_no_percentiles(self):
        """An empty histogram answers None, not 0."""
        assert ExpHistogram().percentiles((50, 95)) == [None, None]


class TestBuckets:
    def test_powers_of_two_are_the_upper_bound_of_their_bucket(self):
        """2**k lies in the bucket that ends at it, at positive, zero and negative scales (OTel)."""
        for scale in (-2, -1, 0, 1, 3, 6, 10):
            for k in range(-20, 21):
                v = 2.0 ** k
                i = bucket_index(v, scale)
                assert lower_bound(i, scale) < v <= lower_bound(i + 1, scale) * (1 + 1e-12), (scale, k)
                if scale >= 0 or k % (1 << -scale) == 0:    # then 2**k is a bucket boundary
                    assert math.isclose(lower_bound(i + 1, scale), v, rel_tol=1e-12), (scale, k)

    def test_any_value_lies_in_its_bucket(self):
        """lower_bound(i) < v <= lower_bound(i + 1) for random values at several scales."""
        rng = random.Random(7)
        for scale in (-1, 0, 2, 6, 8):
            for _ in range(5000):
                v = math.exp(rng.uniform(-30, 30))
                i = bucket_index(v, scale)
                assert lower_bound(i, scale) * (1 - 1e-12) < v <= lower_bound(i + 1, scale) * (1 + 1e-12)


class TestMergeAndDownscale:
    def test_a_wide_range_downscales_and_keeps_every_count(self):
        """Values spanning more than max_buckets buckets lower the scale; counts stay exact."""
        values = [2.0 ** e for e in range(-40, 40)] * 3
        h = _hist(values, max_buckets=64)
        assert h.scale < DEFAULT_SCALE
        assert len(h.counts) <= 64
        assert sum(h.counts) + h.zero_count == h.count == len(values)

    def test_merging_parts_equals_recording_everything_in_one(self):
        """Histograms of parts (at different scales) merge into the histogram of the whole."""
        rng = random.Random(3)
        values = [rng.lognormvariate(-3, 2) for _ in range(20_000)]
        whole = _hist(values, max_buckets=256)
        parts = [_hist(values[i::4], max_buckets=256 if i else 2048) for i in range(4)]
        merged = ExpHistogram(max_buckets=256)
        for part in parts:
            merged.merge(part)
        assert merged.count == whole.count
        assert merged.to_dict() == whole.to_dict()
        assert merged.min == whole.min and merged.max == whole.max

    def test_the_record_form_round_trips(self):
        """to_dict/from_dict keep the buckets; count, sum, min and max come from the record."""
        h = _hist([0.0, 0.001, 0.002, 0.5, 3.0])
        d = h.to_dict()
        back = ExpHistogram.from_dict(d, count=h.count, sum=h.sum, min=h.min, max=h.max)
        assert back.to_dict() == d
        assert back.percentiles(QS) == h.percentiles(QS)

    def test_count_above_is_an_upper_bound_exact_on_bucket_boundaries(self):
        """count_above counts the straddling bucket as above; at a boundary it is exact."""
        values = [0.001 * i for i in range(1, 1001)]
        h = _hist(values)
        exact = sum(v > 0.5 for v in values)
        assert exact <= h.count_above(0.5) <= exact + 10
        boundary = lower_bound(bucket_index(0.3, DEFAULT_SCALE) + 1, DEFAULT_SCALE)
        assert h.count_above(boundary) == sum(v > boundary for v in values)
