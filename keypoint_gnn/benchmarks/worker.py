"""Subprocess entry point of `isolation.run_isolated`: one measurement, then its peak memory.

After the imports the kernel's peak-RSS mark is reset (/proc/self/clear_refs), so the reported
peak is that of the measurement (setup included), and the increase is over the resident memory
of the imported libraries.

  python -m keypoint_gnn.benchmarks.worker SPEC.json RESULT.json
"""
import gc
import importlib
import json
import resource
import sys

import psutil

from keypoint_gnn._backend import tf
from keypoint_gnn.benchmarks import measure

# Headroom over the memory limit for address space that is reserved but never touched
# (thread stacks, malloc arenas): RLIMIT_AS counts it, resident memory does not.
_ADDRESS_SPACE_SLACK = 2 * 2**30
_PACKAGE = "keypoint_gnn.benchmarks."


def _resolve(setup):
    module_name, _, function_name = setup.partition(":")
    if not module_name.startswith(_PACKAGE) or not function_name:
        raise ValueError(f"setup={setup!r} must be 'keypoint_gnn.benchmarks.<module>:<function>'")
    return getattr(importlib.import_module(module_name), function_name)


def _cap_address_space(limit_bytes):
    current = psutil.Process().memory_info().vms
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = current + limit_bytes + _ADDRESS_SPACE_SLACK
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _reset_peak_rss():
    """Resets the kernel's peak-RSS mark (Linux >= 4.0), so that ru_maxrss measures from now
    rather than from the imports' transient peak. Returns whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes():
    """The kernel's peak-RSS mark of this process (VmHWM), else ru_maxrss.

    Not ru_maxrss first: a child's ru_maxrss starts at its parent's resident size at fork
    time, so it would report the benchmark process's memory, not the worker's."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _gpu_peak(reset=False):
    if not tf.config.list_physical_devices("GPU"):
        return None
    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def main(argv):
    spec_path, result_path = argv
    with open(spec_path) as spec_file:
        spec = json.load(spec_file)
    setup = _resolve(spec["setup"])
    gc.collect()
    peak_reset = _reset_peak_rss()
    baseline = psutil.Process().memory_info().rss if peak_reset else _peak_rss_bytes()
    if spec.get("memory_limit_bytes"):
        _cap_address_space(spec["memory_limit_bytes"])
    _gpu_peak(reset=True)
    call, info = setup(**spec["params"])
    result = {"info": info}
    if spec["mode"] == "time":
        result["timing"] = measure.time_calls(call, spec["warmup"], spec["repeats"])
    else:
        for _ in range(spec["calls"]):
            call()
    peak = _peak_rss_bytes()
    result.update(peak_rss_bytes=peak, baseline_rss_bytes=baseline, peak_reset=peak_reset,
                  peak_rss_delta_bytes=peak - baseline, gpu_peak_bytes=_gpu_peak())
    with open(result_path, "w") as result_file:
        json.dump(result, result_file)


if __name__ == "__main__":
    main(sys.argv[1:])
