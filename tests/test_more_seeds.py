"""More seeds only for the rows of claims wider than the half-width asked for."""

import math

import numpy as np
import pytest

from vipnb.engine.recipe import from_dict
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.eval.t_distribution import t_quantile
from vipnb.study.claims import Claim, paired_difference
from vipnb.study.more_seeds import (
    add_seeds_to_wide_claims,
    first_seeds,
    resolve_max_seeds,
    seeds_needed,
    step_claims,
)
from vipnb.study.seed_groups import SeedGroup, common_seeds, on_common_seeds


def claim(before, after):
    return Claim("c", None, None, before, after)


def test_seeds_needed_is_the_fewest_seeds_whose_interval_fits():
    before, after = [70.0, 71.0, 72.0], [71.0, 73.5, 72.5]  # differences 1, 2.5, 0.5
    sd = float(np.std([1.0, 2.5, 0.5], ddof=1))
    n = seeds_needed(claim(before, after), 0.5, max_seeds=50)
    assert t_quantile(0.975, n - 1) * sd / math.sqrt(n) <= 0.5
    assert t_quantile(0.975, n - 2) * sd / math.sqrt(n - 1) > 0.5


def test_a_narrow_claim_or_a_single_seed_asks_for_nothing_more():
    narrow = claim([70.0, 71.0, 72.0], [71.0, 72.1, 73.0])
    assert paired_difference(narrow.before, narrow.after).high - 1.1 < 1.5
    assert seeds_needed(narrow, 1.5, max_seeds=10) == 3
    assert seeds_needed(claim([70.0], [90.0]), 1.5, max_seeds=10) == 1


def test_seeds_needed_stops_at_max_seeds():
    hopeless = claim([70.0, 70.0, 70.0], [60.0, 80.0, 70.0])
    assert seeds_needed(hopeless, 1.5, max_seeds=10) == 10


def test_first_seeds_continues_after_the_notebooks_seeds():
    assert first_seeds([0, 1, 2], 5) == [0, 1, 2, 3, 4]
    assert first_seeds([0, 1, 2], 2) == [0, 1]
    assert first_seeds([3, 7], 4) == [3, 7, 8, 9]


class FakeGroup:
    """A recipe's top-1 per seed, as a SeedGroup would read it from its runs."""

    def __init__(self, name, seeds):
        self.name, self.seeds = name, list(seeds)

    def top1(self):
        return [ACCURACY[self.name](seed) for seed in self.seeds]


# Row b differs from a by 1 pp give or take 3 (wide at 3 seeds); c by 0.2 ± 0.05 (narrow);
# d from a by 5 ± 40 (never narrow enough).
ACCURACY = {"a": lambda s: 70 + (s % 3),
            "b": lambda s: 71 + (s % 3) + 3 * math.sin(s),
            "c": lambda s: 70.2 + (s % 3) + 0.05 * math.cos(s),
            "d": lambda s: 75 + (s % 3) + 40 * math.sin(3 * s)}


def claims_of(pairs):
    def build(groups):
        out = []
        for before, after in pairs:
            common = [s for s in groups[before].seeds if s in groups[after].seeds]
            out.append((claim(FakeGroup(before, common).top1(), FakeGroup(after, common).top1()),
                        (before, after)))
        return out
    return build


def widen(pairs, max_seeds, half_width=1.5):
    calls = []

    def train(seeds_of):
        calls.append(seeds_of)
        return {name: FakeGroup(name, seeds) for name, seeds in seeds_of.items()}

    groups = {name: FakeGroup(name, [0, 1, 2]) for name in ACCURACY}
    grown = add_seeds_to_wide_claims(groups, claims_of(pairs), [0, 1, 2], max_seeds, half_width,
                                     train=train)
    return grown, calls


def test_only_the_rows_of_a_wide_claim_train_more_seeds_until_it_fits():
    grown, calls = widen([("a", "b"), ("a", "c")], max_seeds=20)
    assert calls and all(set(step) == {"a", "b"} for step in calls)
    assert grown["c"].seeds == [0, 1, 2]
    assert grown["a"].seeds == grown["b"].seeds == first_seeds([0, 1, 2], len(grown["b"].seeds))
    final, _ = claims_of([("a", "b")])(grown)[0]
    interval = paired_difference(final.before, final.after)
    assert (interval.high - interval.low) / 2 <= 1.5
    three_seeds, _ = claims_of([("a", "b")])({n: FakeGroup(n, [0, 1, 2]) for n in "ab"})[0]
    assert len(calls[0]["b"]) == seeds_needed(three_seeds, 1.5, 20) > 3  # as its spread asks


def test_a_claim_that_never_fits_stops_at_max_seeds():
    grown, calls = widen([("a", "d")], max_seeds=8)
    assert grown["a"].seeds == grown["d"].seeds == list(range(8))
    assert grown["b"].seeds == [0, 1, 2]
    assert max(len(seeds) for step in calls for seeds in step.values()) == 8


def test_nothing_trains_when_every_claim_is_narrow_or_max_seeds_is_reached():
    assert widen([("a", "c")], max_seeds=10)[1] == []
    assert widen([("a", "d")], max_seeds=3)[1] == []


def run_of_seed(root, name, seed, correct=0):
    """A finished run of `seed` whose first `correct` of 10 test images are right."""
    run = RunDir(root / f"{name}-s{seed}")
    run.path.mkdir(parents=True)
    run.write_recipe(from_dict({"name": name, "seed": seed}, source="test", written=()))
    labels = np.zeros(10, dtype=np.int64)
    logits = np.zeros((10, 2), dtype=np.float32)
    logits[correct:, 1] = 1.0
    run.write_logits("test", logits, labels, [f"img_{i}" for i in range(10)], ["a", "b"])
    return run


def test_step_claims_pair_the_rows_on_their_shared_seeds(tmp_path):
    groups = {"a": SeedGroup("a", [run_of_seed(tmp_path, "a", s, s) for s in (0, 1, 2, 3)]),
              "b": SeedGroup("b", [run_of_seed(tmp_path, "b", s, s + 5) for s in (2, 1, 0)])}
    [(claim, rows)] = step_claims(groups, [("a → b", "a", "b")], {"a": 70.0, "b": None}.get)
    assert rows == ("a", "b")
    assert (claim.name, claim.paper_before, claim.paper_after) == ("a → b", 70.0, None)
    assert list(claim.before) == [0.0, 10.0, 20.0] and list(claim.after) == [50.0, 60.0, 70.0]
    assert claim.test_images == 10


def test_max_seeds_defaults_to_ten_at_cpu_and_to_the_seeds_given_elsewhere():
    assert resolve_max_seeds(None, "cpu", [0, 1, 2]) == 10
    assert resolve_max_seeds(None, "paper", [0, 1, 2]) == 3
    assert resolve_max_seeds(None, "smoke", [0]) == 1
    assert resolve_max_seeds(6, "paper", [0, 1, 2]) == 6


def test_seed_groups_pair_on_the_seeds_they_share(tmp_path):
    wide = SeedGroup("a", [run_of_seed(tmp_path, "a", s) for s in (0, 1, 2, 3, 4)])
    narrow = SeedGroup("b", [run_of_seed(tmp_path, "b", s) for s in (2, 0, 1)])
    before, after = on_common_seeds(wide, narrow)
    assert before.seeds == after.seeds == [0, 1, 2]
    assert [run.path.name for run in after.runs] == ["b-s0", "b-s1", "b-s2"]
    with pytest.raises(VipnbError, match=r"b has no run of seed\(s\) \[3\].*train them first"):
        narrow.of_seeds([0, 3])


def test_common_seeds_of_three_groups_keep_the_first_groups_order(tmp_path):
    groups = [SeedGroup(name, [run_of_seed(tmp_path, name, s) for s in seeds])
              for name, seeds in (("a", (4, 0, 2, 1)), ("b", (0, 1, 2, 4)), ("c", (1, 4, 0)))]
    assert common_seeds(*groups) == [4, 0, 1]
    assert common_seeds(groups[0]) == [4, 0, 2, 1]


def test_a_row_keeps_the_seeds_it_already_has():
    groups = {"a": FakeGroup("a", [0, 1, 2, 7]), "b": FakeGroup("b", [0, 1, 2])}
    grown = add_seeds_to_wide_claims(groups, claims_of([("a", "b")]), [0, 1, 2], 6,
                                     train=lambda seeds_of: {n: FakeGroup(n, s)
                                                             for n, s in seeds_of.items()})
    assert grown["a"].seeds[:4] == [0, 1, 2, 7] and {3, 4, 5} <= set(grown["a"].seeds)
    assert grown["b"].seeds == [0, 1, 2, 3, 4, 5]
