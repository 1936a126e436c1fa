"""The machine a benchmark ran on: CPU model, cores, memory, TensorFlow version, GPU, load,
and the thread settings that decide how many cores a measurement may use."""
import os
import platform

import psutil

from keypoint_gnn._backend import tf


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# Vector instruction sets that decide how fast TensorFlow's CPU kernels (oneDNN, Eigen) run.
# The model name does not tell machines apart: two machines both reported as "AMD EPYC, 2
# cores" ran the fashion-mnist preset's training step in 391 ms (the benchmark of 2026-12-07
# 13:12) and in about 1.2 s (510-525 s an epoch of 422 steps in its training run of the same
# day, 18:40-20:00, AVX2 without AVX-512).
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw",
                     "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                     "amx_bf16", "neon", "asimd", "sve")


def cpu_vector_extensions(cpuinfo="/proc/cpuinfo"):
    """The `VECTOR_EXTENSIONS` the CPU has, in that order, from the first "flags" (x86) or
    "Features" (Arm) line of `cpuinfo`; None when it cannot be read (no /proc/cpuinfo: macOS,
    Windows) or has no such line."""
    try:
        with open(cpuinfo) as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    present = set(value.split())
                    return tuple(name for name in VECTOR_EXTENSIONS if name in present)
    except OSError:
        pass
    return None


def gpu_names():
    """Names of the visible GPUs ([] on a CPU-only machine)."""
    names = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        names.append(details.get("device_name", device.name))
    return names


def load_average():
    """(1, 5, 15)-minute load averages; other jobs on the machine raise them."""
    return tuple(round(value, 2) for value in os.getloadavg())


# Environment variables that set thread pools or kernels of TensorFlow, XLA and the BLAS
# libraries: recorded with every part when they are set.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
                    "TF_XLA_FLAGS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES")


def thread_settings():
    """How many threads this process's measurements may use.

    Returns {"cpu_count", "usable_cores" (this process's CPU affinity), "tf_intra_op",
    "tf_inter_op" (TensorFlow's pools; 0 = TensorFlow picks, one thread per usable core),
    "env": {variable: value} of the `THREAD_VARIABLES` that are set}.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "env": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
    }


def format_threads(threads):
    """One line: cores, TensorFlow's pools and the thread variables that are set."""
    def pool(value):
        return "default (one per core)" if value == 0 else str(value)
    env = ", ".join(f"{k}={v}" for k, v in threads["env"].items()) or "no thread variables set"
    return (f"{threads['usable_cores']} of {threads['cpu_count']} cores usable; TensorFlow "
            f"intra-op {pool(threads['tf_intra_op'])}, inter-op {pool(threads['tf_inter_op'])}; "
            f"{env}")


def machine_info():
    """A JSON-ready description of this machine and software stack."""
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "cpu_vector_extensions": cpu_vector_extensions(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(memory.total / 2**30, 1),
        "memory_available_gib": round(memory.available / 2**30, 1),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpus": gpu_names(),
        "load_average": load_average(),
        "threads": thread_settings(),
    }


def extensions_text(info):
    """The vector extensions of a `machine_info` dict, in words (results written before they
    were recorded say so)."""
    if "cpu_vector_extensions" not in info:
        return "vector extensions not recorded"
    if info["cpu_vector_extensions"] is None:
        return "vector extensions could not be read"
    return "vector extensions: " + (", ".join(info["cpu_vector_extensions"]) or "none found")


def format_machine(info):
    """One line per fact, for the terminal."""
    gpus = ", ".join(info["gpus"]) or "none"
    one, five, fifteen = info["load_average"]
    return "\n".join([
        f"CPU:        {info['cpu_model']} ({info['logical_cores']} logical cores, "
        f"{info['physical_cores']} physical; {extensions_text(info)})",
        f"memory:     {info['memory_gib']} GiB ({info['memory_available_gib']} GiB available)",
        f"TensorFlow: {info['tensorflow']} (Python {info['python']})",
        f"GPU:        {gpus}",
        f"load avg:   {one} / {five} / {fifteen} (1 / 5 / 15 min)",
        f"threads:    {format_threads(info['threads'])}",
    ])


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))
