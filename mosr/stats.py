"""Confidence intervals and ranking statistics used by every report of the toolkit.

* :func:`wilson` — Wilson score 95% interval of a proportion ``k / n``; :class:`Rate` is ``k / n``
  with that interval;
* :func:`t_critical` and :class:`MeanCI` — mean of per-prompt values with a Student-t interval;
* :func:`mean_rate` / :class:`MeanRate` — mean of several independent proportions, ``± sqrt(Σ h_i²)/k``
  with ``h_i`` each Wilson half-width;
* :func:`auroc` / :func:`auroc_ci` — area under the ROC curve with DeLong's 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from mosr.errors import MosrError

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n < 0 or k < 0 or k > n:
        raise MosrError(f"wilson: need 0 ≤ k ≤ n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """``k / n`` with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_dict(self) -> dict[str, float | int]:
        lo, hi = self.ci
        return {"k": self.k, "n": self.n, "value": self.value, "ci_low": lo, "ci_high": hi}

    def fmt(self, digits: int = 1) -> str:
        """``12.3 [9.8, 15.2]`` in percent."""
        if not self.n:
            return "–"
        lo, hi = self.ci
        return f"{100 * self.value:.{digits}f} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided Student-t critical value (normal ``z`` when scipy is missing)."""
    try:
        from scipy.stats import t
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return Z95
    return float(t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` per-prompt values with a 95% t-interval (``sd`` = sample standard deviation)."""

    value: float
    low: float
    high: float
    n: int
    sd: float

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> MeanCI:
        if n == 0:
            nan = float("nan")
            return cls(nan, nan, nan, 0, nan)
        mean = total / n
        if n == 1:
            return cls(mean, float("nan"), float("nan"), 1, float("nan"))  # no interval from one value
        var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
        sd = math.sqrt(var)
        half = t_critical(n - 1) * sd / math.sqrt(n)
        return cls(mean, mean - half, mean + half, n, sd)

    def fmt(self, digits: int = 3) -> str:
        """``1.234 [1.180, 1.288]``."""
        if not self.n:
            return "–"
        if self.n == 1:
            return f"{self.value:.{digits}f} [–]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "n": self.n,
            "sd": self.sd,
            "ci": "95% Student-t interval over prompts",
        }


@dataclass
class MeanRate:
    """Mean of several subsets' rates with a normal-approximation 95% interval."""

    value: float
    low: float
    high: float
    parts: list[str] = field(default_factory=list)

    def fmt(self, digits: int = 1) -> str:
        if not self.parts:
            return "–"
        return f"{100 * self.value:.{digits}f} [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"


def mean_rate(rates: Mapping[str, Rate]) -> MeanRate:
    """Mean of ``k`` independent proportions, ``± sqrt(Σ h_i²)/k`` with ``h_i`` each Wilson half-width
    (non-zero even at p = 0 or 1), clipped to [0, 1]."""
    items = {k: r for k, r in rates.items() if r.n}
    if not items:
        return MeanRate(float("nan"), float("nan"), float("nan"), [])
    k = len(items)
    mean = sum(r.value for r in items.values()) / k
    half = math.sqrt(sum(((r.ci[1] - r.ci[0]) / 2) ** 2 for r in items.values())) / k
    return MeanRate(mean, max(0.0, mean - half), min(1.0, mean + half), sorted(items))


def auroc(scores: Sequence[float] | np.ndarray | Tensor, positive: Sequence[bool] | np.ndarray | Tensor) -> float:
    """Area under the ROC curve (ties count one half); nan unless both classes are present. Its interval,
    :func:`auroc_ci`, needs two members in each class."""
    return _delong(scores, positive)[0]


def auroc_ci(
    scores: Sequence[float] | np.ndarray | Tensor, positive: Sequence[bool] | np.ndarray | Tensor, z: float = 1.959964
) -> tuple[float, float, float]:
    """AUROC with a DeLong 95% confidence interval: ``(auc, low, high)``.

    Undefined (three nans) when the smaller class has fewer than :data:`MIN_AUROC_CLASS` (2) members:
    one refused prompt scored above the rest read as "1.000 [1.000, 1.000]", an interval estimated from
    nothing. DeLong's variance is also 0 when larger classes are perfectly separated, so the interval then
    collapses to ``(1, 1)``. Print it with :func:`fmt_auroc` ("n/a" when undefined).
    """
    auc, var, smaller = _delong(scores, positive)
    if smaller < MIN_AUROC_CLASS:
        return (math.nan, math.nan, math.nan)
    half = z * math.sqrt(max(var, 0.0))
    return (auc, max(0.0, auc - half), min(1.0, auc + half))


#: fewer members than this in the smaller class leave the AUROC undefined (:func:`auroc_ci`)
MIN_AUROC_CLASS = 2


def _delong(
    scores: Sequence[float] | np.ndarray | Tensor, positive: Sequence[bool] | np.ndarray | Tensor
) -> tuple[float, float, int]:
    """``(AUROC, DeLong variance, size of the smaller class)``; ``(nan, nan, 0)`` when a class is missing."""
    from scipy.stats import rankdata

    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    y = np.asarray(positive.detach().cpu() if isinstance(positive, Tensor) else positive).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise MosrError(f"scores and labels must be 1-D of the same length, got {s.shape} and {y.shape}")
    x, v = s[y], s[~y]
    m, n = len(x), len(v)
    if m == 0 or n == 0:
        return (math.nan, math.nan, 0)
    tz = rankdata(np.concatenate([x, v]))
    tx, ty = rankdata(x), rankdata(v)
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    return auc, float(var), min(m, n)


def fmt_auroc(auc: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``0.750 [0.500, 0.900]``, or ``n/a`` for an AUROC :func:`auroc_ci` left undefined (nan or None)."""
    if any(v is None or math.isnan(v) for v in (auc, low, high)):
        return "n/a"
    return f"{auc:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def detectable_difference(
    n: int, p: float, discordant: float | None = None, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest difference between two refusal rates that a comparison on the same ``n`` prompts detects with
    probability ``power`` at two-sided level ``alpha`` (normal approximation).

    Unpaired (``discordant`` None): ``(z_{1-α/2} + z_power) · sqrt(2 p (1 − p) / n)`` at base rate ``p``.
    Paired (McNemar): ``(z_{1-α/2} + z_power) · sqrt(d / n)`` with ``d`` the share of prompts on which the two
    models disagree; pairing helps when ``d < 2 p (1 − p)``."""
    from statistics import NormalDist

    if n < 1 or not 0 <= p <= 1 or (discordant is not None and not 0 <= discordant <= 1):
        raise MosrError(f"detectable_difference: need n ≥ 1 and rates in [0, 1], got n={n}, p={p}, d={discordant}")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    spread = 2 * p * (1 - p) if discordant is None else discordant
    return z * math.sqrt(spread / n)


def paired_difference(
    plain: Sequence[bool] | np.ndarray, treated: Sequence[bool] | np.ndarray, draws: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Two models' outcomes on the same prompts (``plain[i]``, ``treated[i]``: e.g. refused or not): each rate
    in % with its Wilson 95% interval, the paired difference ``treated − plain`` in points with a 95% bootstrap
    interval over prompts, and how many prompts flip each way."""
    a, b = np.asarray(plain, dtype=float), np.asarray(treated, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise MosrError(f"paired_difference: need two equally long non-empty outcome lists, got {a.shape}, {b.shape}")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))
    diffs = (b[idx] - a[idx]).mean(1)
    k_a, k_b, n = int(a.sum()), int(b.sum()), len(a)
    return {
        "n": n,
        "plain": 100 * k_a / n,
        "plain_ci": [100 * x for x in wilson(k_a, n)],
        "intervened": 100 * k_b / n,
        "intervened_ci": [100 * x for x in wilson(k_b, n)],
        "difference": 100 * float((b - a).mean()),
        "difference_ci": [100 * float(np.quantile(diffs, q)) for q in (0.025, 0.975)],
        "one_to_zero": int(((a == 1) & (b == 0)).sum()),
        "zero_to_one": int(((a == 0) & (b == 1)).sum()),
    }
