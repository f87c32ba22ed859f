"""How far a ratio of medians can be trusted: the machines are noisy (runs of one configuration spread 3-8%
under QEMU's TCG), so a ratio near its target says little without its interval."""

from __future__ import annotations

import random
import statistics


def ratio_interval(with_: list[float], without: list[float], level: float = 0.9, draws: int = 2000,
                   seed: int = 1) -> tuple[float, float]:
    """Bootstrap interval of median(with_) / median(without): both samples are resampled with replacement,
    independently (each run is one draw of its configuration; the rounds only interleave them in time)."""
    if not with_ or not without:
        raise ValueError("ratio_interval needs runs of both configurations")
    rng = random.Random(seed)
    ratios = sorted(statistics.median(rng.choices(with_, k=len(with_))) /
                    statistics.median(rng.choices(without, k=len(without))) for _ in range(draws))
    tail = (1.0 - level) / 2
    return ratios[int(tail * draws)], ratios[min(draws - 1, int((1.0 - tail) * draws))]


def paired_ratio(with_: list[float], without: list[float]) -> float:
    """Median of per-round ratios (each run against the run without nstrack of its own round): less
    sensitive to slow drifts of the machine than the ratio of medians, more to a single bad round."""
    if len(with_) != len(without) or not with_:
        raise ValueError("paired_ratio needs one run of each configuration per round")
    return statistics.median(w / o for w, o in zip(with_, without))
