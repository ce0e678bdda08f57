"""A paper's claim against our runs: the paired difference over seeds, its 95 % interval, the
smallest effect the design could have detected, and a verdict.

A claim compares two results of the same seeds ("after" − "before", in percentage points):
seed s of both sides shares its data order and initialisation where the code allows, so the
difference of each seed removes the seed's own luck, and the interval is the paired t
interval  d̄ ± t_{1−α/2, n−1} · s_d / √n.

The minimum detectable effect at 80 % power is (t_{1−α/(2m), n−1} + t_{power, n−1}) · s_d / √n
for m claims judged together: a true difference of that size would be seen four times in five
even at Holm's strictest level, α/m, whatever the other claims do. A claim that reads *not
detected* says that, not that the idea does nothing. With few seeds and many claims this is
large (3 seeds, 31 claims: t_{1−α/(2m), 2} ≈ 25, six times t_{1−α/2, 2}); only more seeds
shrink it.

Multiple comparisons: the verdicts of one notebook's claims are made on Holm-adjusted p-values
(`assess`), so the chance of any false *reproduced* or *opposite* among them stays below α;
the intervals shown are the unadjusted 95 % ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vipnb.errors import VipnbError
from vipnb.eval.t_distribution import student_t_two_sided_p, t_quantile

REPRODUCED, OPPOSITE, NOT_DETECTED = "reproduced", "opposite", "not detected"


@dataclass(frozen=True)
class Claim:
    """A step a paper asserts, from `before` to `after`: top-1 in percent, the paper's two
    numbers (None where it gives none) and ours, one value per seed, the same seeds in the
    same order on both sides, scored on `test_images` test images. `paper_sign` (+1 or -1) is
    the direction the paper asserts in words or a figure where it gives no numbers for both
    sides."""

    name: str
    paper_before: float | None
    paper_after: float | None
    before: Sequence[float]
    after: Sequence[float]
    paper_sign: int | None = None
    test_images: int | None = None

    def __post_init__(self) -> None:
        if self.paper_sign not in (None, 1, -1):
            raise VipnbError(f"claim {self.name!r}: paper_sign is {self.paper_sign!r}; give +1, "
                             "-1 or None")

    @property
    def paper_difference(self) -> float | None:
        if self.paper_before is None or self.paper_after is None:
            return None
        return self.paper_after - self.paper_before

    @property
    def paper_direction(self) -> int | None:
        """+1 or -1: the sign the paper asserts, from its numbers or else its words."""
        difference = self.paper_difference
        if difference is None or difference == 0:
            return self.paper_sign
        return 1 if difference > 0 else -1


@dataclass(frozen=True)
class Result:
    """A final result or a baseline: top-1 in percent, the paper's (None where it has none)
    and ours, one value per seed, scored on `test_images` test images."""

    name: str
    paper: float | None
    ours: Sequence[float]
    test_images: int | None = None


def against_baselines(finals: Sequence[Result], baselines: Sequence[Result]) -> list[Claim]:
    """Every final result against every baseline, as claims: a paper that proposes a method
    asserts that it beats the plain model (+1 where the paper has no number for a side). A
    baseline must be scored on the final's test images."""
    for final in finals:
        for baseline in baselines:
            if final.test_images != baseline.test_images:
                raise VipnbError(f"{final.name!r} was scored on {final.test_images} test images "
                                 f"and {baseline.name!r} on {baseline.test_images}: score the "
                                 "baseline on the same images (SeedGroup.top1(split, ids))")
    return [Claim(f"{final.name} vs {baseline.name}", baseline.paper, final.paper,
                  baseline.ours, final.ours, paper_sign=1, test_images=final.test_images)
            for baseline in baselines for final in finals]


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    low: float
    high: float
    mde: float  # the smallest true difference seen with `power` at α/tests (nan with one seed)
    seeds: int
    p: float


def paired_difference(before: Sequence[float], after: Sequence[float], alpha: float = 0.05,
                      power: float = 0.8, tests: int = 1) -> PairedDifference:
    """The paired t interval of `after` − `before` (one value per seed on each side) at
    level `alpha`; the detectable effect at `alpha` / `tests`, Holm's strictest level over
    `tests` claims judged together."""
    if len(before) != len(after) or not before:
        raise VipnbError(f"a paired claim needs the same seeds on both sides, got {len(before)} "
                         f"and {len(after)} values")
    differences = [a - b for a, b in zip(after, before, strict=True)]
    n = len(differences)
    mean = sum(differences) / n
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, math.nan, 1, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    standard_error = sd / math.sqrt(n)
    critical = t_quantile(1 - alpha / 2, n - 1)
    if standard_error == 0.0:  # every seed moved by exactly the same amount
        p = 1.0 if mean == 0 else 0.0
    else:
        p = student_t_two_sided_p(mean / standard_error, n - 1)
    mde = (t_quantile(1 - alpha / (2 * tests), n - 1) + t_quantile(power, n - 1)) * standard_error
    return PairedDifference(mean, mean - critical * standard_error,
                            mean + critical * standard_error, mde, n, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (nan stays nan, untested)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(paper_direction: float | None, ours: float, p: float, alpha: float = 0.05) -> str:
    """*reproduced* (same sign, significant), *opposite* (significant, other sign) or *not
    detected* (not significant, one seed, or a paper that asserts no direction)."""
    if math.isnan(p) or p >= alpha or paper_direction is None or paper_direction == 0:
        return NOT_DETECTED
    return REPRODUCED if (ours > 0) == (paper_direction > 0) else OPPOSITE


def assess(claims: Sequence[Claim], alpha: float = 0.05) -> list[dict]:
    """One row per claim: the paper's difference, our paired difference with its interval, the
    detectable effect, the means of both sides and the verdict on Holm-adjusted p over all of
    `claims` (pass a notebook's claims together)."""
    tests = sum(len(c.before) > 1 for c in claims)  # the claims Holm's correction spans
    results = [paired_difference(c.before, c.after, alpha, tests=max(tests, 1)) for c in claims]
    adjusted = holm([r.p for r in results])
    return [{"claim": c.name, "paper_difference": c.paper_difference,
             "paper_direction": c.paper_direction, "ours_difference": r.mean, "ci_low": r.low, "ci_high": r.high, "mde": r.mde,
             "seeds": r.seeds, "p": r.p, "p_holm": p_holm,
             "verdict": verdict(c.paper_direction, r.mean, p_holm, alpha),
             "ours_before": sum(c.before) / len(c.before),
             "ours_after": sum(c.after) / len(c.after), "test_images": c.test_images}
            for c, r, p_holm in zip(claims, results, adjusted, strict=True)]
