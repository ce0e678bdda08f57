"""More seeds where a claim is too uncertain to say anything: a claim whose paired 95 %
interval is wider than ±`half_width` pp trains the rows it compares on more seeds, up to
`max_seeds`; the other rows keep the notebook's seeds.

How many: the fewest n with t_{1−α/2, n−1} · s_d / √n ≤ half_width, s_d the spread of the
claim's paired differences so far. Three seeds estimate s_d roughly, so the claims are
measured again with the new seeds and the step repeats until each is narrow enough or at
`max_seeds`. The number of seeds follows the spread, never the difference itself, so the
difference is estimated without a bias toward any verdict; a claim's interval uses all of the
seeds its two rows share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from vipnb.eval.t_distribution import t_quantile
from vipnb.study.claims import Claim
from vipnb.study.seed_groups import SeedGroup, on_common_seeds, train_seeds

# A claim and the recipes whose runs it compares.
ClaimRows = tuple[Claim, Sequence[str]]

CPU_MAX_SEEDS = 10


def resolve_max_seeds(max_seeds: int | None, profile: str, seeds: Sequence[int]) -> int:
    """A notebook's `max_seeds`: as given; else 10 at `cpu`, and no more seeds at `smoke`
    (its numbers mean nothing) or `paper` (each seed is a GPU run `vipnb plan` did not count)."""
    if max_seeds is not None:
        return max_seeds
    return CPU_MAX_SEEDS if profile == "cpu" else len(seeds)


def step_claims(groups: dict[str, SeedGroup], steps: Sequence[tuple[str, str, str]],
                paper_top1: Callable[[str], float | None]) -> list[ClaimRows]:
    """Each (step, before, after) of `steps` as a test top-1 claim over the seeds its two
    rows share, with the two rows; `paper_top1(recipe)` is the paper's number for a row."""
    claims = []
    for step, a, b in steps:
        before, after = on_common_seeds(groups[a], groups[b])
        claims.append((Claim(step, paper_top1(a), paper_top1(b), before.top1("test"),
                             after.top1("test"), test_images=after.scored_images("test")),
                       (a, b)))
    return claims


def seeds_needed(claim: Claim, half_width: float, max_seeds: int, alpha: float = 0.05) -> int:
    """Seeds for `claim`'s paired (1 − alpha) interval to be at most ±`half_width` pp if its
    differences keep the spread they show, capped at `max_seeds` (never fewer than it has;
    with one seed there is no spread to go by)."""
    differences = [a - b for a, b in zip(claim.after, claim.before, strict=True)]
    n = len(differences)
    if n < 2:
        return n
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    while n < max_seeds and t_quantile(1 - alpha / 2, n - 1) * sd / math.sqrt(n) > half_width:
        n += 1
    return n


def first_seeds(seeds: Sequence[int], n: int) -> list[int]:
    """The notebook's `seeds`, then the next whole numbers above them, `n` in all."""
    extra = range(max(seeds) + 1, max(seeds) + 1 + max(0, n - len(seeds)))
    return [*seeds, *extra][:n]


def add_seeds_to_wide_claims(groups: dict[str, SeedGroup],
                             claims_of: Callable[[dict[str, SeedGroup]], list[ClaimRows]],
                             seeds: Sequence[int], max_seeds: int, half_width: float = 1.5, *,
                             train: Callable[[dict[str, list[int]]], dict[str, SeedGroup]]
                             ) -> dict[str, SeedGroup]:
    """`groups` with the rows of every claim wider than ±`half_width` pp trained on more of
    `first_seeds(seeds, ·)`, up to `max_seeds` (see the module's docstring).

    `claims_of(groups)` builds the claims from the groups, pairing each claim's rows over the
    seeds they share; `train({recipe: seeds})` returns those recipes' groups over those seeds
    (reusing finished runs)."""
    groups = dict(groups)
    while True:
        wanted: dict[str, int] = {}
        for claim, rows in claims_of(groups):
            n = seeds_needed(claim, half_width, max_seeds)
            if n > len(claim.before):
                for row in rows:
                    wanted[row] = max(wanted.get(row, 0), n)
        grow = {}
        for row, n in wanted.items():
            missing = [seed for seed in first_seeds(seeds, n) if seed not in groups[row].seeds]
            if missing:  # keep every seed the row has, add the missing ones
                grow[row] = [*groups[row].seeds, *missing]
        if not grow:
            return groups
        groups.update(train(grow))


def add_seeds_where_wide(groups: dict[str, SeedGroup],
                         claims_of: Callable[[dict[str, SeedGroup]], list[ClaimRows]],
                         seeds: Sequence[int], max_seeds: int | None, profile: str,
                         overrides: dict, processes: int | None, *,
                         runs_root) -> dict[str, SeedGroup]:
    """A notebook's call of `add_seeds_to_wide_claims`: `max_seeds` as `resolve_max_seeds`
    reads it, the runs trained as `train_seeds` trains them; prints the rows that grew."""
    groups = add_seeds_to_wide_claims(
        groups, claims_of, seeds, resolve_max_seeds(max_seeds, profile, seeds),
        train=lambda seeds_of: train_seeds(seeds_of, profile, overrides, processes,
                                           runs_root=runs_root))
    wider = {name: len(g.runs) for name, g in groups.items() if len(g.runs) > len(seeds)}
    print("more seeds for the rows of wide claims:", wider or "none")
    return groups
