"""The benchmark's interval arithmetic (pure; no kernel)."""

import random

import pytest

from tests.bench.stats import paired_ratio, ratio_interval


def test_constant_ratio_has_a_point_interval():
    without = [1000.0, 1100.0, 900.0, 1050.0, 950.0]
    lo, hi = ratio_interval([x * 0.9 for x in without], without)
    # resampled medians of both samples differ, but every draw of a scaled copy lies in the same spread
    assert lo <= 0.9 <= hi
    assert paired_ratio([x * 0.9 for x in without], without) == pytest.approx(0.9)


def test_interval_narrows_with_more_runs():
    rng = random.Random(7)

    def runs(n, mean):
        return [rng.gauss(mean, mean * 0.05) for _ in range(n)]

    few = ratio_interval(runs(5, 960.0), runs(5, 1000.0))
    many = ratio_interval(runs(200, 960.0), runs(200, 1000.0))
    assert many[1] - many[0] < (few[1] - few[0]) / 2
    assert many[0] < 0.96 < many[1]
    assert many[1] < 0.99  # 200 runs each tell a 4% loss from none


def test_identical_samples_cover_one():
    same = [10.0, 12.0, 11.0, 9.0, 13.0]
    lo, hi = ratio_interval(same, list(same))
    assert lo < 1.0 < hi


def test_bad_input():
    with pytest.raises(ValueError):
        ratio_interval([], [1.0])
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])
