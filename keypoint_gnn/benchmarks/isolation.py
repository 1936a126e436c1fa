"""One measurement per subprocess: its own peak resident memory, under a memory cap.

A process's peak resident memory only ever grows, so the honest per-measurement peak is that of
a fresh process that makes just that measurement (`keypoint_gnn.benchmarks.worker`, which reads
the kernel's VmHWM after resetting it past the imports). The cap protects a shared machine
three ways: a measurement whose estimated peak exceeds the limit is not started ("skipped:
needs X GiB"); inside the worker, RLIMIT_AS stops address-space growth beyond the limit (an
allocation then fails); and the parent kills a worker whose resident memory passes the limit.
"""
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import psutil

GIB = 2**30
# Resident memory of a worker after importing TensorFlow, Spektral and keypoint_gnn (measured
# 0.7 GiB here); the estimators add it to the tensors of a measurement.
PROCESS_BASELINE_BYTES = int(0.8 * GIB)
_OOM_MARKERS = ("ResourceExhausted", "bad_alloc", "MemoryError", "Cannot allocate memory",
                "OOM when allocating", "out of memory")


def memory_cap_verdict(estimated_bytes, limit_bytes):
    """None when a measurement estimated to peak at `estimated_bytes` fits under `limit_bytes`,
    else the reason it is skipped: "skipped: needs X GiB (estimated), over the Y GiB limit"."""
    if limit_bytes is not None and estimated_bytes is not None and estimated_bytes > limit_bytes:
        return (f"skipped: needs {estimated_bytes / GIB:.1f} GiB (estimated), over the "
                f"{limit_bytes / GIB:.1f} GiB memory limit")
    return None


def _looks_out_of_memory(text):
    return any(marker in text for marker in _OOM_MARKERS)


def run_isolated(setup, params, *, mode="memory", calls=3, warmup=1, repeats=5,
                 memory_limit_bytes=None, estimated_bytes=None, timeout_s=600, poll_s=0.02):
    """Runs `setup(**params)` in a fresh worker process and measures it there.

    Args:
      setup: "module:function" inside `keypoint_gnn.benchmarks`; the function takes `params`
        and returns (zero-argument call, info dict).
      params: JSON-serialisable keyword arguments.
      mode: "memory" (call it `calls` times) or "time" (`warmup` untimed calls, then the median
        of `repeats` timed calls, as well as the memory).
      memory_limit_bytes: cap on the worker's resident memory (None: no cap).
      estimated_bytes: expected peak; over the cap, the worker is not started.
      timeout_s: wall-clock limit of the worker.

    Returns:
      dict with "status": "ok" | "skipped" | "out of memory" | "timeout" | "error"; with "ok":
      "peak_rss_bytes" (the worker's peak resident memory), "baseline_rss_bytes" (after imports),
      "peak_rss_delta_bytes", "gpu_peak_bytes" (None without GPU), "info" and, in "time" mode,
      "timing"; otherwise "reason".
    """
    verdict = memory_cap_verdict(estimated_bytes, memory_limit_bytes)
    record = {"setup": setup, "params": params, "estimated_bytes": estimated_bytes}
    if verdict is not None:
        return {**record, "status": "skipped", "reason": verdict}
    spec = {"setup": setup, "params": params, "mode": mode, "calls": calls, "warmup": warmup,
            "repeats": repeats, "memory_limit_bytes": memory_limit_bytes}
    with tempfile.TemporaryDirectory(prefix="benchmark-worker-") as scratch:
        scratch = pathlib.Path(scratch)
        spec_path, result_path, log_path = (scratch / "spec.json", scratch / "result.json",
                                            scratch / "stderr.txt")
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        start = time.perf_counter()
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "keypoint_gnn.benchmarks.worker", str(spec_path),
                 str(result_path)],
                stdout=subprocess.DEVNULL, stderr=log, env=env)
            status, reason, watched_peak = _watch(process, memory_limit_bytes, timeout_s, poll_s)
        record["wall_s"] = time.perf_counter() - start
        stderr_tail = log_path.read_text()[-2000:]
        if status is None and process.returncode != 0:
            if _looks_out_of_memory(stderr_tail):
                status, reason = "out of memory", _last_line(stderr_tail)
            else:
                status, reason = "error", _last_line(stderr_tail) or f"exit {process.returncode}"
        if status is None and not result_path.is_file():
            status, reason = "error", "worker wrote no result"
        if status is not None:
            return {**record, "status": status, "reason": reason,
                    "watched_peak_rss_bytes": watched_peak}
        return {**record, **json.loads(result_path.read_text()), "status": "ok"}


def _last_line(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _watch(process, limit_bytes, timeout_s, poll_s):
    """Polls the worker's resident memory; kills it past the limit or the timeout.

    Returns (status or None, reason, largest RSS seen)."""
    watched = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout_s
    largest = 0
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.Error:
            rss = 0
        largest = max(largest, rss)
        if limit_bytes is not None and rss > limit_bytes:
            process.kill()
            process.wait()
            return ("out of memory", f"killed at {rss / GIB:.1f} GiB resident, over the "
                    f"{limit_bytes / GIB:.1f} GiB memory limit", largest)
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            return "timeout", f"killed after {timeout_s} s", largest
        time.sleep(poll_s)
    return None, None, largest


def run_isolated_many(jobs, max_workers=1):
    """`run_isolated(**job)` for each job dict, `max_workers` at a time, results in order.

    Only for memory-mode jobs: concurrent workers share the CPU, which spoils timings but not
    each worker's own peak memory.
    """
    if max_workers <= 1:
        return [run_isolated(**job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
        return list(pool.map(lambda job: run_isolated(**job), jobs))


def memory_summary(record):
    """The memory fields of a `run_isolated` record, for the results tables."""
    if record.get("status") != "ok":
        return {"status": record.get("status"), "reason": record.get("reason"),
                "estimated_bytes": record.get("estimated_bytes")}
    return {"status": "ok", "peak_rss_bytes": record["peak_rss_bytes"],
            "peak_rss_delta_bytes": record["peak_rss_delta_bytes"],
            "gpu_peak_bytes": record.get("gpu_peak_bytes"),
            "estimated_bytes": record.get("estimated_bytes")}
