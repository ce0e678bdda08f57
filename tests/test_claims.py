"""Paired claims: intervals and detectable effects against hand-computed values, Holm's
adjustment, and the verdicts on constructed examples."""

from __future__ import annotations

import math

import pytest

from vipnb.errors import VipnbError
from vipnb.eval.t_distribution import t_quantile
from vipnb.study.claims import (
    NOT_DETECTED,
    OPPOSITE,
    REPRODUCED,
    Claim,
    Result,
    against_baselines,
    assess,
    holm,
    paired_difference,
    verdict,
)


def test_t_quantiles_match_the_tables():
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    assert t_quantile(0.8, 2) == pytest.approx(1.060660, abs=1e-5)
    assert t_quantile(0.025, 10) == pytest.approx(-2.228139, abs=1e-5)


def test_paired_interval_and_mde_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3)
    result = paired_difference([70.0, 71.0, 72.0], [71.0, 73.0, 75.0])
    se = 1 / math.sqrt(3)
    assert result.mean == pytest.approx(2.0) and result.seeds == 3
    assert result.low == pytest.approx(2 - 4.302653 * se, abs=1e-5)
    assert result.high == pytest.approx(2 + 4.302653 * se, abs=1e-5)
    assert result.mde == pytest.approx((4.302653 + 1.060660) * se, abs=1e-5)
    # t = 2 / se = 3.4641 with 2 df: two-sided p = 0.07418
    assert result.p == pytest.approx(0.07418, abs=1e-4)


def test_detectable_effect_is_at_holms_strictest_level_over_the_claims_judged_together():
    # three claims with the differences 1, 2, 3: Holm's first step tests at α/3, so the
    # detectable effect uses t_{1-α/6, 2} = 7.648804, not t_{1-α/2, 2} = 4.302653
    se = 1 / math.sqrt(3)
    claims = [Claim(f"step {i}", 70.0, 72.0, [70.0, 71.0, 72.0], [71.0, 73.0, 75.0])
              for i in range(3)]
    for row in assess(claims):
        assert row["mde"] == pytest.approx((7.648804 + 1.060660) * se, abs=1e-5)
        assert row["ci_low"] == pytest.approx(2 - 4.302653 * se, abs=1e-5)  # interval: 95 %
    # one-seed claims are not tested, so they do not raise the others' level
    alone, _ = assess([claims[0], Claim("one seed", 70.0, 72.0, [70.0], [71.0])])
    assert alone["mde"] == pytest.approx((4.302653 + 1.060660) * se, abs=1e-5)


def test_an_interval_that_misses_zero_can_read_not_detected_and_the_detectable_effect_says_why():
    # differences 1.8, 2.0, 2.2 (p = 0.0033) among 20 such claims: Holm needs p < 0.0025
    claims = [Claim(f"step {i}", 70.0, 72.0, [70.0, 71.0, 72.0], [71.8, 73.0, 74.2])
              for i in range(20)]
    for row in assess(claims):
        assert row["ci_low"] > 1.4 and row["p"] < 0.005
        assert row["verdict"] == NOT_DETECTED and row["ours_difference"] < row["mde"]
    assert assess(claims[:3])[0]["verdict"] == REPRODUCED  # three of them pass Holm


def test_pairing_removes_the_seeds_luck():
    before, after = [60.0, 70.0, 80.0], [61.0, 71.1, 80.9]  # seeds differ a lot, the step not
    result = paired_difference(before, after)
    assert result.low > 0 and result.p < 0.01


def test_identical_recipes_read_not_detected_around_zero():
    seeds = [71.2, 69.8, 70.5]
    [row] = assess([Claim("same recipe twice", 70.0, 71.5, seeds, list(seeds))])
    assert row["verdict"] == NOT_DETECTED
    assert row["ci_low"] == row["ci_high"] == row["ours_difference"] == 0.0


def test_one_seed_has_no_interval_and_no_verdict():
    result = paired_difference([70.0], [75.0])
    assert result.mean == 5.0 and math.isnan(result.low) and math.isnan(result.p)
    assert verdict(2.0, result.mean, result.p) == NOT_DETECTED


def test_unpaired_sides_are_refused():
    with pytest.raises(VipnbError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


def test_verdicts_on_constructed_examples():
    assert verdict(+2.0, +1.0, 0.01) == REPRODUCED
    assert verdict(+2.0, -1.0, 0.01) == OPPOSITE
    assert verdict(-0.5, -3.0, 0.001) == REPRODUCED
    assert verdict(+2.0, +5.0, 0.2) == NOT_DETECTED
    assert verdict(None, +5.0, 0.001) == NOT_DETECTED  # the paper gives no number


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)


def test_holm_turns_a_lone_significant_claim_among_many_into_not_detected():
    clear = Claim("clear", 70.0, 71.0, [70.0, 71.0, 72.0], [72.0, 73.1, 73.9])  # p = 0.00083
    noise = [Claim(f"noise {i}", 70.0, 71.0, [70.0, 71.0, 72.0], [70.5, 70.5, 72.6]) for i in range(99)]  # x100 > 0.05
    assert assess([clear])[0]["verdict"] == REPRODUCED
    assert assess([clear, *noise])[0]["verdict"] == NOT_DETECTED


def test_a_claim_without_the_papers_numbers_has_no_paper_difference():
    assert Claim("step", None, 71.0, [1.0], [2.0]).paper_difference is None
    assert Claim("step", 70.0, 71.5, [1.0], [2.0]).paper_difference == pytest.approx(1.5)


def test_a_direction_in_words_counts_where_the_paper_gives_no_numbers():
    faster = Claim("transfer learns faster", None, None, [30.0, 31.0, 32.0], [55.0, 56.5, 57.0],
                   paper_sign=+1)
    harms = Claim("freezing harms", None, None, [30.0, 31.0, 32.0], [55.0, 56.5, 57.0],
                  paper_sign=-1)
    silent = Claim("no direction", None, None, [30.0, 31.0, 32.0], [55.0, 56.5, 57.0])
    rows = assess([faster, harms, silent])
    assert [r["paper_direction"] for r in rows] == [1, -1, None]
    assert [r["verdict"] for r in rows] == [REPRODUCED, OPPOSITE, NOT_DETECTED]
    assert rows[0]["paper_difference"] is None


def test_the_papers_numbers_outrank_its_words():
    claim = Claim("step", 70.0, 69.0, [1.0], [2.0], paper_sign=+1)
    assert claim.paper_direction == -1


def test_a_paper_sign_other_than_plus_or_minus_one_is_refused():
    with pytest.raises(VipnbError, match="paper_sign"):
        Claim("step", None, None, [1.0], [2.0], paper_sign=2)


def test_every_final_is_a_claim_against_every_baseline():
    finals = [Result("best single model", 74.03, [70.0, 71.0], 2000),
              Result("ensemble", 75.46, [72.0, 72.5], 2000)]
    baselines = [Result("matched ResNeSt", None, [68.0, 69.0], 2000),
                 Result("notebook 00's ResNet", 26.39, [80.0, 81.0], 2000)]
    claims = against_baselines(finals, baselines)
    assert [c.name for c in claims] == [
        "best single model vs matched ResNeSt", "ensemble vs matched ResNeSt",
        "best single model vs notebook 00's ResNet", "ensemble vs notebook 00's ResNet"]
    assert [c.paper_difference for c in claims[2:]] == pytest.approx([47.64, 49.07])
    assert [c.paper_direction for c in claims] == [1, 1, 1, 1]
    assert claims[1].before == [68.0, 69.0] and claims[1].after == [72.0, 72.5]
    assert {c.test_images for c in claims} == {2000}


def test_a_baseline_scored_on_other_images_is_refused():
    with pytest.raises(VipnbError, match="same images"):
        against_baselines([Result("ensemble", 75.46, [72.0], 2000)],
                          [Result("notebook 00's ResNet", 26.39, [80.0], 10000)])
