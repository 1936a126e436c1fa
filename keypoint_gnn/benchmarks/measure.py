"""Wall-time measurement: medians over repeats, with compared variants interleaved.

On a machine shared with other jobs the load drifts over seconds; timing variant A fully, then
variant B, lets the drift masquerade as a difference. `time_interleaved` instead runs one call
of every variant per round, so each ratio compares calls made under the same load.
"""
import statistics
import time

import numpy as np


def summarize(seconds):
    """[seconds] -> {"median_ms", "p10_ms", "p90_ms", "repeats"}."""
    milliseconds = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "median_ms": float(statistics.median(milliseconds)),
        "p10_ms": float(np.percentile(milliseconds, 10)),
        "p90_ms": float(np.percentile(milliseconds, 90)),
        "repeats": int(milliseconds.size),
    }


def time_interleaved(calls, warmup, repeats):
    """Times every call of `calls` ({name: zero-argument callable}) round-robin.

    Args:
      calls: the callables; each must block until its work is done (return host values).
      warmup: untimed rounds first (tracing, XLA compilation, caches), >= 0.
      repeats: timed rounds, >= 1.

    Returns:
      {name: summarize(seconds)} plus "first_call_s", the first (warm-up) call's seconds
      (tracing and compilation included) when warmup >= 1.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    first = {}
    for round_index in range(warmup):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index == 0:
                first[name] = time.perf_counter() - start
    seconds = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    results = {}
    for name in calls:
        results[name] = summarize(seconds[name])
        if name in first:
            results[name]["first_call_s"] = first[name]
    return results


def time_calls(call, warmup, repeats):
    """`time_interleaved` of one call."""
    return time_interleaved({"call": call}, warmup, repeats)["call"]


def growth(sizes, values):
    """Growth between successive sizes: ratio of values and the fitted exponent.

    For each step i -> i+1: ratio = v[i+1] / v[i] and exponent = log(ratio) / log(s[i+1] / s[i])
    (1 is linear in the size, 2 quadratic). Steps with a missing or non-positive value give None.
    """
    steps = []
    for (size_a, value_a), (size_b, value_b) in zip(zip(sizes, values), zip(sizes[1:], values[1:])):
        if not value_a or not value_b or value_a <= 0 or value_b <= 0:
            steps.append({"from": size_a, "to": size_b, "ratio": None, "exponent": None})
            continue
        ratio = value_b / value_a
        steps.append({"from": size_a, "to": size_b, "ratio": ratio,
                      "exponent": float(np.log(ratio) / np.log(size_b / size_a))})
    return steps
