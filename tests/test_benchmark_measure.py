"""Interleaved timing groups and paired ratios: only two calls of one group make a ratio.

The expected values are worked out by hand from the per-round times, not from the code.
"""
import pytest

from keypoint_gnn.benchmarks import measure


def _group(label, rounds, aa):
    return measure.make_group(label, rounds, aa, load_before=[0.0] * 3, load_after=[0.0] * 3)


def test_ratio_is_the_median_of_the_per_round_ratios():
    # Per-round ratios a/b: 10/5, 20/10, 30/10, 40/10 = 2, 2, 3, 4 -> median 2.5. The ratio of
    # the medians would be 25/10 = 2.5 here too, so also check the quartiles: with linear
    # interpolation p25 = 2 + 0.75 * 0 = 2.0 and p75 = 3 + 0.25 * 1 = 3.25, spread 1.25.
    group = _group("hand", {"a": [10, 20, 30, 40], "b": [5, 10, 10, 10],
                            "b (A/A)": [5, 10, 10, 10]}, aa="b")
    ratio = measure.group_ratio(group, "a", "b")
    assert ratio["value"] == pytest.approx(2.5)
    assert (ratio["low"], ratio["high"]) == (pytest.approx(2.0), pytest.approx(3.25))
    assert ratio["spread"] == pytest.approx(1.25)
    assert (ratio["numerator"], ratio["denominator"], ratio["group"]) == ("a", "b", group["group"])
    assert ratio["rounds"] == 4


def test_paired_ratio_differs_from_the_ratio_of_medians():
    # Round 1: 1/1, round 2: 3/1, round 3: 2/4 -> ratios 1, 3, 0.5, median 1; medians 2 and 1
    # would give 2.
    group = _group("pairs", {"a": [1, 3, 2], "b": [1, 1, 4], "b (A/A)": [1, 1, 4]}, aa="b")
    assert measure.group_ratio(group, "a", "b")["value"] == pytest.approx(1.0)


def test_scaled_ratio():
    group = _group("scaled", {"a": [2, 4], "b": [1, 1], "b (A/A)": [1, 1]}, aa="b")
    ratio = measure.group_ratio(group, "a", "b", scale=0.5)
    assert ratio["value"] == pytest.approx(1.5) and ratio["scale"] == 0.5


def test_timings_of_different_groups_make_no_ratio():
    first = _group("first", {"a": [1, 2], "a (A/A)": [1, 2]}, aa="a")
    second = _group("second", {"b": [1, 2], "b (A/A)": [1, 2]}, aa="b")
    with pytest.raises(ValueError, match="not timed in the same interleaved group"):
        measure.paired_ratio(first["timings"]["a"], second["timings"]["b"])


def test_unpaired_round_counts_make_no_ratio():
    a = measure.timing_record("a", "g#1", [1, 2, 3])
    b = measure.timing_record("b", "g#1", [1, 2])
    with pytest.raises(ValueError, match="not paired"):
        measure.paired_ratio(a, b)


@pytest.mark.parametrize("value,spread,rounds,flag", [
    (1.20, 0.10, 9, True),    # 0.20 from 1, spread 0.10: biased beyond the noise
    (1.05, 0.10, 9, False),   # within its spread
    (0.85, 0.10, 9, True),
    (1.20, 0.10, 3, None),    # too few rounds to judge
])
def test_aa_flag(value, spread, rounds, flag):
    ratio = {"value": value, "spread": spread, "rounds": rounds}
    assert measure.aa_flagged(ratio) is flag


def test_noise_is_the_larger_of_bias_and_spread():
    group = {"aa": {"value": 1.04, "spread": 0.02}}
    assert measure.noise(group) == pytest.approx(0.04)
    group = {"aa": {"value": 0.99, "spread": 0.05}}
    assert measure.noise(group) == pytest.approx(0.05)


def test_time_group_calls_each_member_every_round_with_an_aa_copy():
    counts = {"a": 0, "b": 0}

    def counter(name):
        def call():
            counts[name] += 1
        return call

    group = measure.time_group({"a": counter("a"), "b": counter("b")}, warmup=2, repeats=6,
                               label="count", aa="b")
    # b runs twice per round (itself and its A/A copy): (2 + 6) * 2
    assert counts == {"a": 8, "b": 16}
    assert set(group["timings"]) == {"a", "b", "b (A/A)"}
    for timing in group["timings"].values():
        assert timing["group"] == group["group"] and len(timing["rounds_ms"]) == 6
        assert "first_call_s" in timing
    assert group["aa"]["numerator"] == "b (A/A)" and group["aa"]["denominator"] == "b"
    assert group["aa_flag"] in (True, False)
    assert len(group["load_before"]) == 3 and len(group["load_after"]) == 3
    assert group["group"].startswith("count#")


def test_rounds_run_in_changing_orders():
    orders = []
    calls = {name: (lambda name=name: orders.append(name)) for name in "abcd"}
    measure.time_group(calls, warmup=0, repeats=8, aa="a")
    rounds = [tuple(orders[i:i + 5]) for i in range(0, len(orders), 5)]
    # Five calls a round: a, b, c, d and a's A/A copy (which records "a" too).
    assert len(rounds) == 8 and all(sorted(r) == list("aabcd") for r in rounds)
    assert len({r[0] for r in rounds}) > 1 and len(set(rounds)) > 1


def test_group_ids_are_unique():
    assert len({measure.new_group_id("x") for _ in range(100)}) == 100


def test_time_group_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeats=0"):
        measure.time_group({"a": lambda: None}, warmup=0, repeats=0)
    with pytest.raises(ValueError, match="aa='c'"):
        measure.time_group({"a": lambda: None}, warmup=0, repeats=1, aa="c")


def test_growth_from_paired_ratios():
    group = _group("sizes", {"16": [1, 1], "32": [4, 4], "32 (A/A)": [4, 4]}, aa="32")
    steps = measure.growth([256, 1024], [None, measure.group_ratio(group, "32", "16")])
    assert steps[0]["ratio"] == pytest.approx(4.0)
    assert steps[0]["exponent"] == pytest.approx(1.0)  # log 4 / log 4


def test_check_ratios_finds_ratios_without_a_common_group():
    group = _group("g", {"a": [2, 4], "b": [1, 2], "b (A/A)": [1, 2]}, aa="b")
    other = _group("h", {"c": [1, 1], "c (A/A)": [1, 1]}, aa="c")
    good = {"part": {"group": group, "ratio": measure.group_ratio(group, "a", "b")}}
    assert measure.check_ratios(good) == []
    tampered = {"part": {"group": group,
                         "ratio": {**measure.group_ratio(group, "a", "b"), "value": 3.0}}}
    assert "not the median" in measure.check_ratios(tampered)[0]
    foreign = {"part": {"group": group, "ratio": measure.group_ratio(other, "c", "c (A/A)")}}
    assert "is not in the results" in measure.check_ratios(foreign)[0]
    crossed = {"part": {"group": group, "other": other,
                        "ratio": {**measure.group_ratio(group, "a", "b"), "numerator": "c"}}}
    assert "not timed in group" in measure.check_ratios(crossed)[0]
