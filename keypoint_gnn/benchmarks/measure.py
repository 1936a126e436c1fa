"""Wall-time measurement in interleaved groups, and ratios between two members of one group.

On a machine shared with other jobs the load drifts over seconds; timing variant A fully, then
variant B, lets the drift masquerade as a difference. `time_group` instead runs one call of
every variant per round, in a new random order each round (so that no variant always runs
first, or always after the same neighbour: a call that follows a long single-threaded one
finds TensorFlow's thread pool asleep), and keeps every round's times. A ratio is then computed round by round, from two calls made under
the same load, and only between two members of the same group:

    ratio = median over rounds r of  scale * t_numerator[r] / t_denominator[r]
    spread = interquartile range (p75 - p25) of those per-round ratios

`paired_ratio` refuses two timings of different groups (ValueError), so no ratio can compare
this run's calls with a figure from elsewhere.

Each group also times one of its calls twice (the A/A copy, "<name> (A/A)"): the same
computation, whose true ratio is 1. The group is flagged when its A/A ratio differs from 1 by
more than its own spread: then the run's timings have a bias (an order effect, a load change)
larger than their noise, and the group's ratios deserve no trust. With fewer than
`MIN_AA_ROUNDS` rounds (smoke runs) the check is not judged.
"""
import os
import statistics
import time
import uuid

import numpy as np

AA_SUFFIX = " (A/A)"
MIN_AA_ROUNDS = 5
ORDER = "shuffled each round"


def summarize(milliseconds):
    """[milliseconds] -> median, quartiles, p10/p90 and the count."""
    values = np.asarray(milliseconds, dtype=np.float64)
    p10, p25, p75, p90 = np.percentile(values, [10, 25, 75, 90])
    return {
        "median_ms": float(statistics.median(values)),
        "p25_ms": float(p25),
        "p75_ms": float(p75),
        "iqr_ms": float(p75 - p25),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "repeats": int(values.size),
    }


def timing_record(name, group, rounds_ms, first_call_s=None):
    """One member of a group: its name, the group's id, every round's milliseconds (in round
    order) and their summary."""
    record = {"name": name, "group": group, "rounds_ms": [float(v) for v in rounds_ms],
              **summarize(rounds_ms)}
    if first_call_s is not None:
        record["first_call_s"] = float(first_call_s)
    return record


def new_group_id(label):
    """A group id unique across processes and runs: the label and 8 random hex digits."""
    return f"{label}#{uuid.uuid4().hex[:8]}"


def _round_orders(names, rounds, seed):
    rng = np.random.default_rng(seed)
    return [[names[i] for i in rng.permutation(len(names))] for _ in range(rounds)]


def _load():
    return [round(value, 2) for value in os.getloadavg()]


def time_group(calls, warmup, repeats, *, label="group", aa=None, seed=0):
    """Times every call of `calls` ({name: zero-argument callable}) in interleaved rounds.

    Args:
      calls: the callables; each must block until its work is done (return host values).
      warmup: untimed rounds first (tracing, XLA compilation, caches), >= 0.
      repeats: timed rounds, >= 1.
      label: a readable name of the group; its id is the label and a random suffix.
      aa: the name of the call to time twice; None: the first call.
      seed: of the rounds' random orders.

    Returns:
      {"group": id, "label", "warmup", "repeats", "order", "load_before", "load_after"
      (1/5/15-minute load averages), "timings": {name: timing_record}, "aa": the A/A ratio
      (`paired_ratio` of the copy over the original), "aa_flag": `aa_flagged`}.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    if not calls:
        raise ValueError("calls is empty: a group needs at least one call")
    aa = next(iter(calls)) if aa is None else aa
    if aa not in calls:
        raise ValueError(f"aa={aa!r} is not one of the calls {list(calls)}")
    copy = aa + AA_SUFFIX
    calls = {**calls, copy: calls[aa]}
    names = list(calls)
    orders = _round_orders(names, warmup + repeats, seed)
    group = new_group_id(label)
    load_before = _load()
    first = {}
    for round_index in range(warmup):
        for name in orders[round_index]:
            start = time.perf_counter()
            calls[name]()
            if round_index == 0:
                first[name] = time.perf_counter() - start
    rounds = {name: [] for name in names}
    for round_index in range(warmup, warmup + repeats):
        for name in orders[round_index]:
            start = time.perf_counter()
            calls[name]()
            rounds[name].append((time.perf_counter() - start) * 1000.0)
    return make_group(label, rounds, aa, group=group, warmup=warmup, first_call_s=first,
                      load_before=load_before, load_after=_load())


def make_group(label, rounds, aa, *, group=None, warmup=0, first_call_s=None,
               load_before=None, load_after=None):
    """A `time_group` result from per-round milliseconds ({name: [ms per round]}, the A/A copy
    "<aa> (A/A)" among them): what `time_group` returns, and how tests build one by hand."""
    group = group or new_group_id(label)
    first_call_s = first_call_s or {}
    copy = aa + AA_SUFFIX
    if copy not in rounds or aa not in rounds:
        raise ValueError(f"rounds must hold {aa!r} and its A/A copy {copy!r}")
    timings = {name: timing_record(name, group, values, first_call_s.get(name))
               for name, values in rounds.items()}
    aa_ratio = paired_ratio(timings[copy], timings[aa])
    return {"group": group, "label": label, "warmup": warmup,
            "repeats": len(rounds[aa]), "order": ORDER,
            "load_before": load_before if load_before is not None else _load(),
            "load_after": load_after if load_after is not None else _load(),
            "timings": timings, "aa": aa_ratio, "aa_flag": aa_flagged(aa_ratio)}


def paired_ratio(numerator, denominator, *, scale=1.0):
    """The ratio of two timings of one group, round by round.

    Args:
      numerator, denominator: `timing_record`s (of `time_group`'s "timings").
      scale: a constant factor of every per-round ratio (a unit conversion, such as bytes
        moved per batch over bytes copied).

    Returns:
      {"value": median of scale * t_numerator[r] / t_denominator[r], "spread": interquartile
      range of those per-round ratios, "low", "high" (their p25 and p75), "numerator",
      "denominator" (names), "group", "rounds", "scale"}.

    Raises:
      ValueError: the two timings come from different groups, or have different round counts.
    """
    if numerator["group"] != denominator["group"]:
        raise ValueError(
            f"{numerator['name']!r} (group {numerator['group']}) and {denominator['name']!r} "
            f"(group {denominator['group']}) were not timed in the same interleaved group: "
            "their ratio would compare different loads")
    top = np.asarray(numerator["rounds_ms"], dtype=np.float64)
    bottom = np.asarray(denominator["rounds_ms"], dtype=np.float64)
    if top.shape != bottom.shape or top.size == 0:
        raise ValueError(f"{numerator['name']!r} has {top.size} rounds and "
                         f"{denominator['name']!r} {bottom.size}: not paired")
    per_round = scale * top / bottom
    low, high = np.percentile(per_round, [25, 75])
    return {"value": float(statistics.median(per_round)), "spread": float(high - low),
            "low": float(low), "high": float(high), "numerator": numerator["name"],
            "denominator": denominator["name"], "group": numerator["group"],
            "rounds": int(per_round.size), "scale": float(scale)}


def group_ratio(group, numerator, denominator, *, scale=1.0):
    """`paired_ratio` of two calls of a `time_group` result, by name."""
    return paired_ratio(group["timings"][numerator], group["timings"][denominator], scale=scale)


def aa_flagged(aa_ratio):
    """Whether an A/A ratio differs from 1 by more than its own spread; None (not judged)
    with fewer than `MIN_AA_ROUNDS` rounds, whose quartiles say little."""
    if aa_ratio["rounds"] < MIN_AA_ROUNDS:
        return None
    return bool(abs(aa_ratio["value"] - 1.0) > aa_ratio["spread"])


def noise(group):
    """The group's timing noise as a fraction: the larger of the A/A ratio's distance from 1
    and its spread. A difference within it is no difference."""
    aa_ratio = group["aa"]
    return max(abs(aa_ratio["value"] - 1.0), aa_ratio["spread"])


def time_interleaved(calls, warmup, repeats, label="group"):
    """`time_group`'s timings alone ({name: timing_record}), the A/A copy left out."""
    timings = time_group(calls, warmup, repeats, label=label)["timings"]
    return {name: timing for name, timing in timings.items() if not name.endswith(AA_SUFFIX)}


def time_calls(call, warmup, repeats):
    """The timing of one call repeated alone (no group, no ratio: for absolute figures)."""
    for _ in range(warmup):
        call()
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        rounds.append((time.perf_counter() - start) * 1000.0)
    return summarize(rounds)


def growth(sizes, values):
    """Growth between successive sizes: ratio of values and the fitted exponent.

    For each step i -> i+1: ratio = v[i+1] / v[i] and exponent = log(ratio) / log(s[i+1] / s[i])
    (1 is linear in the size, 2 quadratic). Steps with a missing or non-positive value give None.
    Values may also be `paired_ratio`s of each size's time over the previous size's (then
    `values[0]` is ignored and each ratio is the growth itself).
    """
    steps = []
    for index, ((size_a, value_a), (size_b, value_b)) in enumerate(
            zip(zip(sizes, values), zip(sizes[1:], values[1:]))):
        if isinstance(value_b, dict):
            ratio = value_b["value"]
        elif not value_a or not value_b or value_a <= 0 or value_b <= 0:
            ratio = None
        else:
            ratio = value_b / value_a
        if ratio is None or ratio <= 0:
            steps.append({"from": size_a, "to": size_b, "ratio": None, "exponent": None})
            continue
        steps.append({"from": size_a, "to": size_b, "ratio": ratio,
                      "exponent": float(np.log(ratio) / np.log(size_b / size_a))})
    return steps


def groups_in(results):
    """{group id: group} of every `time_group` result nested anywhere in `results`."""
    found = {}

    def visit(value):
        if isinstance(value, dict):
            if "timings" in value and "group" in value and "aa" in value:
                found[value["group"]] = value
            for child in value.values():
                visit(child)
        elif isinstance(value, (list, tuple)):
            for child in value:
                visit(child)

    visit(results)
    return found


def ratios_in(results):
    """[(path, ratio)] of every `paired_ratio` nested anywhere in `results`."""
    found = []

    def visit(value, path):
        if isinstance(value, dict):
            if {"value", "numerator", "denominator", "group", "spread"} <= set(value):
                found.append((path, value))
                return
            for key, child in value.items():
                visit(child, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for index, child in enumerate(value):
                visit(child, f"{path}[{index}]")

    visit(results, "")
    return found


def check_ratios(results, rel=1e-9):
    """The provenance of every ratio in `results`: [problem] (empty when all hold).

    Each ratio must name a group recorded in `results`, both of its sides must be timings of
    that group, and its value must be the median of the per-round ratios of those timings.
    """
    groups = groups_in(results)
    problems = []
    for path, ratio in ratios_in(results):
        group = groups.get(ratio["group"])
        if group is None:
            problems.append(f"{path}: group {ratio['group']} is not in the results")
            continue
        missing = [side for side in (ratio["numerator"], ratio["denominator"])
                   if side not in group["timings"]]
        if missing:
            problems.append(f"{path}: {missing} not timed in group {ratio['group']}")
            continue
        again = group_ratio(group, ratio["numerator"], ratio["denominator"],
                            scale=ratio.get("scale", 1.0))
        if not np.isclose(again["value"], ratio["value"], rtol=rel, atol=0.0):
            problems.append(f"{path}: value {ratio['value']} is not the median of its "
                            f"per-round ratios ({again['value']})")
    return problems
