"""Frontier statistics for the trade-off study (:mod:`mosr.tradeoff.run`): per-prompt outcomes of one
evaluated model (:class:`Point`), paired bootstrap CIs, interpolation along a frontier, the
over-refusal difference of two methods at matched ASR, and seed spreads.

Every function takes the set groups as an object with ``harmful`` and ``overrefusal`` set-name lists
(a :class:`~mosr.tradeoff.plan.StudyPlan`, or :class:`Groups`). Rates are in %, macro means over sets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from mosr.errors import ConfigError
from mosr.stats import detectable_difference


class HasGroups(Protocol):
    @property
    def harmful(self) -> list[str]: ...

    @property
    def overrefusal(self) -> list[str]: ...


class Groups(NamedTuple):
    """The harmful sets (ASR) and the over-refusal sets (RR) of a comparison."""

    harmful: list[str]
    overrefusal: list[str]


@dataclass
class Point:
    """One evaluated model: its per-prompt outcomes by set (1 = answered)."""

    name: str
    method: str  # "base" for the untrained model
    seed: int | None
    step: int  # 0 for the base model
    answered: dict[str, np.ndarray]  # set -> 0/1 per prompt, in the order of ``ids``
    ids: dict[str, list[str]]
    nll: float | None = None

    def asr(self, sets: Sequence[str]) -> float:
        return 100 * float(np.mean([self.answered[s].mean() for s in sets]))

    def rr(self, sets: Sequence[str]) -> float:
        return 100 * float(np.mean([1 - self.answered[s].mean() for s in sets]))


def restrict_to_shared(points: Sequence[Point], sets: Sequence[str]) -> tuple[list[Point], dict[str, int]]:
    """Every point cut down to the prompt ids all points share, per set (in the points' id order), and the
    shared count per set; other sets are dropped. :class:`ConfigError` when a set has no shared prompt or a
    point repeats an id."""
    out = list(points)
    common_n = {}
    for s in sets:
        common = set.intersection(*(set(p.ids[s]) for p in points))
        if not common:
            raise ConfigError(f"the points share no prompt of set {s!r}")
        common_n[s] = len(common)
        for k, p in enumerate(out):
            keep = np.array([i in common for i in p.ids[s]], dtype=bool)
            ids = [i for i in p.ids[s] if i in common]
            if len(ids) != len(common):
                raise ConfigError(f"{p.name}: repeated prompt ids in set {s!r}")
            out[k] = dataclasses.replace(p, answered={**p.answered, s: p.answered[s][keep]}, ids={**p.ids, s: ids})
    return [dataclasses.replace(p, answered={s: p.answered[s] for s in sets}) for p in out], common_n


def envelope(points: Sequence[Point], g: HasGroups) -> list[Point]:
    """The points no other point of the same method beats on both ASR and RR (the lower-left Pareto
    envelope): a training trajectory that swings back and forth is compared by its best trade-offs."""
    rates = [(p.asr(g.harmful), p.rr(g.overrefusal)) for p in points]
    return [
        p for p, (a, r) in zip(points, rates) if not any(a2 <= a and r2 <= r and (a2, r2) != (a, r) for a2, r2 in rates)
    ]


def box_distance(asr: float, rr: float, box: dict[str, float]) -> float:
    """Euclidean distance (points) from (ASR, RR) to the box [0, box asr] × [0, box rr]; 0 inside."""
    return math.hypot(max(0.0, asr - box["asr"]), max(0.0, rr - box["rr"]))


def bootstrap_draws(points: Sequence[Point], sets: Sequence[str], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per set, ``n`` bootstrap index draws over its prompts (shared by every point: paired)."""
    rng = np.random.default_rng(seed)
    sizes = {s: len(points[0].answered[s]) for s in sets}
    for p in points:
        bad = [s for s in sets if len(p.answered.get(s, ())) != sizes[s] or p.ids[s] != points[0].ids[s]]
        if bad:
            raise ConfigError(f"study: point {p.name} was evaluated on other prompts of {bad}; re-evaluate it")
    return {s: rng.integers(0, k, size=(n, k)) for s, k in sizes.items()}


def boot_rate(p: Point, sets: Sequence[str], draws: dict[str, np.ndarray], refuse: bool) -> np.ndarray:
    """Bootstrap replicates (``n``) of the macro-mean ASR (``refuse=False``) or RR, in %."""
    per = [p.answered[s][draws[s]].mean(axis=1) for s in sets]
    mean = np.mean(per, axis=0)
    return 100 * (1 - mean if refuse else mean)


def interpolate(asr: np.ndarray, rr: np.ndarray, at: float) -> float:
    """Over-refusal of a frontier at ASR ``at`` (piecewise linear in ASR; NaN outside its range, and for a
    NaN ``at``: frontiers that share no ASR range)."""
    order = np.argsort(asr, kind="stable")
    a, r = asr[order], rr[order]
    if not np.isfinite(at) or at < a[0] or at > a[-1]:
        return float("nan")
    return float(np.interp(at, a, r))


def matched_difference(
    curve: Sequence[Point], ref: Sequence[Point], at: float, plan: HasGroups, draws: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Over-refusal of ``curve`` minus ``ref``, both interpolated at ASR ``at``; bootstrap 95% CI
    (replicates where ``at`` falls outside either frontier are dropped and counted)."""

    def rates(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.stack([boot_rate(p, plan.harmful, draws, False) for p in points]),
            np.stack([boot_rate(p, plan.overrefusal, draws, True) for p in points]),
        )

    (a1, r1), (a0, r0) = rates(curve), rates(ref)
    point = interpolate(
        np.array([p.asr(plan.harmful) for p in curve]), np.array([p.rr(plan.overrefusal) for p in curve]), at
    ) - interpolate(np.array([p.asr(plan.harmful) for p in ref]), np.array([p.rr(plan.overrefusal) for p in ref]), at)
    reps = np.array(
        [interpolate(a1[:, b], r1[:, b], at) - interpolate(a0[:, b], r0[:, b], at) for b in range(a1.shape[1])]
    )
    ok = reps[np.isfinite(reps)]
    ci = (float(np.percentile(ok, 2.5)), float(np.percentile(ok, 97.5))) if len(ok) >= 20 else (float("nan"),) * 2
    return {
        "at_asr": round(at, 2),
        "difference": round(point, 2),
        "ci": [round(c, 2) for c in ci],
        "replicates": int(len(ok)),
        "dropped": int(len(reps) - len(ok)),
    }


def matched_asr(curve: Sequence[Point], ref: Sequence[Point], target: float, plan: HasGroups) -> tuple[float, str]:
    """The ASR at which two frontiers are compared: ``target`` (the reference's operating point) if
    both frontiers reach it, else the ASR nearest to it that both reach, else NaN."""
    lo = max(min(p.asr(plan.harmful) for p in pts) for pts in (curve, ref))
    hi = min(max(p.asr(plan.harmful) for p in pts) for pts in (curve, ref))
    if lo > hi:
        return float("nan"), "the frontiers share no ASR range"
    at = min(max(target, lo), hi)
    if abs(at - target) <= 0.01:  # the operating point may come rounded to 2 decimals
        return at, "the reference's operating point"
    return at, f"nearest ASR both frontiers reach (the reference's operating point, {target:.1f}, is outside)"


def verdict(diff: dict[str, Any]) -> str:
    """'wins' / 'loses' / 'ties' (CI covers 0) / 'not comparable' for an over-refusal difference."""
    lo, hi = diff["ci"]
    if not np.isfinite(diff["difference"]) or not np.isfinite(lo):
        return "not comparable (no overlap in ASR)"
    return "wins" if hi < 0 else "loses" if lo > 0 else "ties"


def seed_spread(points: Sequence[Point], plan: HasGroups) -> dict[str, Any]:
    """Mean ± sd over seeds of the final-step points of one method."""
    asr = np.array([p.asr(plan.harmful) for p in points])
    rr = np.array([p.rr(plan.overrefusal) for p in points])
    nll = [p.nll for p in points if p.nll is not None]

    def sd(x: Sequence[float] | np.ndarray) -> float:
        return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")

    return {
        "seeds": [p.seed for p in points],
        "asr_mean": round(float(asr.mean()), 2),
        "asr_sd": round(sd(asr), 2),
        "rr_mean": round(float(rr.mean()), 2),
        "rr_sd": round(sd(rr), 2),
        "nll_mean": round(float(np.mean(nll)), 4) if nll else None,
    }


def seed_difference(
    a: Sequence[Point], b: Sequence[Point], plan: HasGroups, draws: dict[str, np.ndarray], seed: int = 0
) -> dict[str, Any]:
    """Over-refusal and ASR of ``a`` minus ``b`` at their final steps, averaged over seeds; 95% CI from a
    bootstrap over prompts (paired) and seeds (resampled with replacement within each method)."""
    rng = np.random.default_rng(seed)
    ra = np.stack([boot_rate(p, plan.overrefusal, draws, True) for p in a])
    rb = np.stack([boot_rate(p, plan.overrefusal, draws, True) for p in b])
    aa = np.stack([boot_rate(p, plan.harmful, draws, False) for p in a])
    ab = np.stack([boot_rate(p, plan.harmful, draws, False) for p in b])
    n = ra.shape[1]
    ia, ib = rng.integers(0, len(a), size=(n, len(a))), rng.integers(0, len(b), size=(n, len(b)))
    cols = np.arange(n)[:, None]
    d_rr = ra[ia, cols].mean(axis=1) - rb[ib, cols].mean(axis=1)
    d_asr = aa[ia, cols].mean(axis=1) - ab[ib, cols].mean(axis=1)
    est_rr = float(np.mean([p.rr(plan.overrefusal) for p in a]) - np.mean([p.rr(plan.overrefusal) for p in b]))
    est_asr = float(np.mean([p.asr(plan.harmful) for p in a]) - np.mean([p.asr(plan.harmful) for p in b]))

    def pct(x: np.ndarray) -> list[float]:
        return [round(float(np.percentile(x, 2.5)), 2), round(float(np.percentile(x, 97.5)), 2)]

    return {
        "rr_difference": round(est_rr, 2),
        "rr_ci": pct(d_rr),
        "asr_difference": round(est_asr, 2),
        "asr_ci": pct(d_asr),
    }


def detectable(curve: Sequence[Point], ref: Sequence[Point], at: float, g: HasGroups) -> dict[str, Any] | None:
    """The smallest over-refusal difference (points; 80% power, two-sided 5%) the design detects, from the
    two points nearest the matched ASR: per over-refusal set :func:`mosr.stats.detectable_difference` at the
    reference point's refusal rate, paired (McNemar, the share of prompts on which the two disagree) and
    unpaired, combined for the macro mean as ``sqrt(Σ δ_s²) / k``."""
    if not math.isfinite(at):
        return None
    c = min(curve, key=lambda p: abs(p.asr(g.harmful) - at))
    r = min(ref, key=lambda p: abs(p.asr(g.harmful) - at))
    paired, unpaired = [], []
    for s in g.overrefusal:
        n, p = len(r.answered[s]), 1 - float(r.answered[s].mean())
        d = float((c.answered[s] != r.answered[s]).mean())
        paired.append(detectable_difference(n, p, discordant=d))
        unpaired.append(detectable_difference(n, p))
    k = len(g.overrefusal)
    return {
        "points": [c.name, r.name],
        "paired": round(100 * math.sqrt(sum(x * x for x in paired)) / k, 2),
        "unpaired": round(100 * math.sqrt(sum(x * x for x in unpaired)) / k, 2),
    }
