"""The machine a benchmark ran on: CPU model, cores, memory, TensorFlow version, GPU, load."""
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


def machine_info():
    """A JSON-ready description of this machine and software stack."""
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(memory.total / 2**30, 1),
        "memory_available_gib": round(memory.available / 2**30, 1),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpus": gpu_names(),
        "load_average": load_average(),
    }


def format_machine(info):
    """One line per fact, for the terminal."""
    gpus = ", ".join(info["gpus"]) or "none"
    one, five, fifteen = info["load_average"]
    return "\n".join([
        f"CPU:        {info['cpu_model']} ({info['logical_cores']} logical cores, "
        f"{info['physical_cores']} physical)",
        f"memory:     {info['memory_gib']} GiB ({info['memory_available_gib']} GiB available)",
        f"TensorFlow: {info['tensorflow']} (Python {info['python']})",
        f"GPU:        {gpus}",
        f"load avg:   {one} / {five} / {fifteen} (1 / 5 / 15 min)",
    ])


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))
