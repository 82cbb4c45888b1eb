"""The bootstrap engine: a statistic evaluated on rows of resample weights.

Hand-written: scikit-learn has no bootstrap, and ``scipy.stats.bootstrap``
resamples values (one sort per resample for an AUC). Here a resample is a
row of counts (how often each case is drawn; multinomial within its class,
so the bootstrap is stratified), and a statistic maps a ``(b, n)`` matrix of
weights to ``b`` values at once. The point estimate is the same statistic on
the row of unit weights, so no metric is written twice; and statistics that
share one weights matrix are paired by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import NamedTuple

import numpy as np

#: A statistic: (b, n) weights -> {name: (b,) values}.
Statistic = Callable[[np.ndarray], Mapping[Hashable, np.ndarray]]

# Elements of one chunk of bootstrap weights (resamples x cases): 32 MB of float64.
_CHUNK_ELEMENTS = 2**22


def fmt(x: float | None) -> str:
    """A metric value with three decimals; ``n/a`` when undefined."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


class Estimate(NamedTuple):
    """A point estimate with the bounds of its confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{fmt(self.value)} ({fmt(self.low)}-{fmt(self.high)})"


def stratified_weights(
    strata: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_resamples, n) counts of each case per resample, stratified.

    Each resample draws, with replacement, as many cases of each stratum
    (class) as the data hold.
    """
    weights = np.zeros((n_resamples, len(strata)))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        m = len(members)
        weights[:, members] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples)
    return weights


def bootstrap(
    statistic: Statistic,
    strata: np.ndarray,
    *,
    n_resamples: int,
    random_state: int | np.random.Generator | None,
) -> tuple[dict[Hashable, float], dict[Hashable, np.ndarray]]:
    """Point estimates and stratified bootstrap replicates of a statistic.

    Parameters
    ----------
    statistic : callable
        ``(b, n)`` weights to ``{name: (b,) values}``.
    strata : ndarray of shape (n,)
        The stratum (class index) of each case.
    n_resamples : int
    random_state : int, Generator or None

    Returns
    -------
    point : dict
        Each value of the statistic with unit weights (the data as they are).
    replicates : dict
        Each value on every resample, as arrays of shape (n_resamples,).
    """
    n = len(strata)
    point = {k: float(v[0]) for k, v in statistic(np.ones((1, n))).items()}
    rng = np.random.default_rng(random_state)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    parts: dict[Hashable, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, n_resamples, chunk):
        weights = stratified_weights(strata, min(chunk, n_resamples - start), rng)
        for key, values in statistic(weights).items():
            parts[key].append(values)
    replicates = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    return point, replicates


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite replicates; NaN when there are none."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def estimate(value: float, replicates: np.ndarray, confidence: float) -> Estimate:
    """``Estimate(value, low, high)`` from a point value and its replicates."""
    return Estimate(float(value), *percentile_interval(replicates, confidence))
