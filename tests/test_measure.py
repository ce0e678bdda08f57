"""Measurements that choose per machine: interleaving, the crop backends, the report."""

from vipnb.measure import (
    crop_flip_rates,
    expert_batching_rates,
    interleaved_medians,
    scoring_compile_rates,
    scoring_format_rates,
    write_choices_report,
)


def test_candidates_are_timed_in_turn_and_the_median_counts():
    calls = []
    values = {"a": iter([3.0, 1.0, 2.0]), "b": iter([10.0, 30.0, 20.0])}
    medians = interleaved_medians({name: lambda n=name: calls.append(n) or next(values[n])
                                   for name in values}, repeats=3)
    assert calls == ["a", "b"] * 3 and medians == {"a": 2.0, "b": 20.0}


def test_crop_backends_are_both_measured():
    rates = crop_flip_rates(batch=4, cache_size=12, input_size=10, repeats=1)
    assert set(rates) == {"roi_align, whole batch", "torchvision v2, image by image"}
    assert all(rate > 0 for rate in rates.values())


def test_choices_report_names_the_faster_format(tmp_path):
    choices = {"memory_format": {"moe_rs50": {"nchw": 100.0, "channels_last": 125.0}},
               "crop_flip": {"28 px (from 32 px)": {"roi_align, whole batch": 2000.0,
                                                    "torchvision v2, image by image": 300.0}}}
    text = write_choices_report(choices, 1.0, reports_root=tmp_path).read_text()
    assert "| moe_rs50 | 100 | 125 | channels_last (×1.25) |" in text
    assert "| 28 px (from 32 px) | 2000 | 300 |" in text and text.startswith("# Measured")
    assert "torch.compile of the training step" not in text  # not measured: no section


def test_choices_report_gives_the_compile_speed_up_and_its_cost(tmp_path):
    choices = {"memory_format": {}, "crop_flip": {"28 px (from 32 px)": {"a": 1.0, "b": 2.0}},
               "compile": {"moe_rs50": {"eager": 1800.0, "compiled": 2250.0,
                                        "compiled_first_steps_s": 52.96}}}
    text = write_choices_report(choices, 1.0, reports_root=tmp_path).read_text()
    assert "| moe_rs50 | 1800 | 2250 | ×1.25 | 53.0 |" in text


def test_scoring_formats_are_both_measured_on_a_stand_in():
    rates = scoring_format_rates("fc_regnetx120_ce", 28, repeats=1)
    assert set(rates) == {"nchw", "channels_last"} and all(r > 0 for r in rates.values())


def test_choices_report_gives_the_scoring_format_section_when_measured(tmp_path):
    choices = {"memory_format": {}, "crop_flip": {"28 px (from 32 px)": {"a": 1.0, "b": 2.0}},
               "scoring_format": {"fc_densenet161_ce at 48 px": {"nchw": 1300.0,
                                                                 "channels_last": 1950.0}}}
    text = write_choices_report(choices, 1.0, reports_root=tmp_path).read_text()
    assert "## Memory format of scoring" in text
    assert "| fc_densenet161_ce at 48 px | 1300 | 1950 | channels_last (×1.50) |" in text


def test_scoring_is_measured_eager_and_compiled_with_the_compile_time():
    rates = scoring_compile_rates("fc_regnetx120_ce", 28, repeats=1)
    assert set(rates) == {"eager", "compiled", "compiled_first_call_s"}
    assert all(r > 0 for r in rates.values())


def test_choices_report_gives_the_scoring_compile_section_when_measured(tmp_path):
    choices = {"memory_format": {}, "crop_flip": {"28 px (from 32 px)": {"a": 1.0, "b": 2.0}},
               "scoring_compile": {"fc_skresnext50_ce at 28 px": {
                   "eager": 3000.0, "compiled": 6900.0, "compiled_first_call_s": 8.04}}}
    text = write_choices_report(choices, 1.0, reports_root=tmp_path).read_text()
    assert "## torch.compile of scoring" in text
    assert "| fc_skresnext50_ce at 28 px | 3000 | 6900 | ×2.30 | 8.0 |" in text
    assert "torch.compile of the training step" not in text


def test_experts_are_timed_one_by_one_and_batched():
    rates = expert_batching_rates("moe_rs_sd101_n3", repeats=1, steps=1)
    assert set(rates) == {"one by one", "batched"} and all(r > 0 for r in rates.values())


def test_choices_report_gives_the_expert_batching_section_when_measured(tmp_path):
    choices = {"memory_format": {}, "crop_flip": {"28 px (from 32 px)": {"a": 1.0, "b": 2.0}},
               "expert_batching": {"moe_rs_sd50_n5": {"one by one": 450.0, "batched": 405.0}}}
    text = write_choices_report(choices, 1.0, reports_root=tmp_path).read_text()
    assert "| moe_rs_sd50_n5 | 450 | 405 | ×0.90 |" in text


def test_the_compile_footnote_follows_the_compile_tables_not_the_experts(tmp_path):
    choices = {"memory_format": {}, "crop_flip": {"28 px (from 32 px)": {"a": 1.0, "b": 2.0}},
               "compile": {"moe_rs50": {"eager": 1800.0, "compiled": 2250.0,
                                        "compiled_first_steps_s": 52.96}},
               "expert_batching": {"moe_rs_sd50_n5": {"one by one": 450.0, "batched": 405.0}}}
    text = write_choices_report(choices, 1.0, reports_root=tmp_path).read_text()
    assert (text.index("| moe_rs50 | 1800") < text.index("The first steps include compiling")
            < text.index("## Experts of one mixture"))
