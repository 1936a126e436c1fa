"""Performance benchmarks: `python -m trainers.benchmark [PART] [flags]`.

PART: interconnects | training | presets | graphs | inference | scale | all (default). Each
part times what it compares in interleaved groups in this process (one call of each per round,
random order, an A/A copy per group), and every ratio it reports is between two calls of one
group of this run; memory is measured for each measurement alone in a subprocess under
--memory-limit-gb. Writes OUT/benchmarks.json and OUT/benchmarks.md, prints the machine, the
tables and the goals as PASS/MISS lines; where a goal is missed it profiles what dominates.
With --docs it also rewrites docs/BENCHMARKS.md and the README's performance table.
"""
import datetime
import json
import pathlib
import sys
import time

from keypoint_gnn import atomic
from keypoint_gnn import presets as presets_lib
from keypoint_gnn.benchmarks import goals as goals_lib
from keypoint_gnn.benchmarks import (
    graphs,
    inference,
    interconnect,
    isolation,
    machine,
    measure,
    profile,
    real_data,
    report,
    scale,
    training,
)
from trainers import common

PARTS = ("interconnects", "training", "presets", "graphs", "inference", "scale", "all")
DEFAULT_REPEATS = {"interconnects": 30, "training": 20, "presets": 10, "graphs": 10,
                   "inference": 30, "scale": 5}
QUICK_REPEATS = 3
PROFILES = ("auto", "always", "never")
REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
DOCS_PATH = REPOSITORY / "docs" / "BENCHMARKS.md"
README_PATH = REPOSITORY / "README.md"


def build_parser():
    parser = common.parser_for(__doc__, "benchmark")
    parser.add_argument("part", nargs="?", default="all", choices=PARTS,
                        help="which benchmark to run (default: %(default)s)")
    parser.add_argument("--out", default="runs/benchmark",
                        help="directory for benchmarks.json and benchmarks.md "
                             "(default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="few rounds, small sizes, one model (for tests and smoke runs)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds of every group (default: per part, "
                             f"{DEFAULT_REPEATS}; {QUICK_REPEATS} with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed rounds first (tracing, XLA compilation) (default 3, 1 "
                             "with --quick)")
    parser.add_argument("--memory-limit-gb", type=float, default=6.0,
                        help="cap on one measurement process's resident memory; larger "
                             "measurements are skipped (estimated) or killed (default 6)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="memory-only worker processes run at once (default 2)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the per-measurement memory subprocesses (scale always uses them)")
    parser.add_argument("--presets", default=None, metavar="NAMES",
                        help="comma-separated presets for the presets part (default: the "
                             "real-data presets, keypoint_gnn.presets.real_data_presets)")
    parser.add_argument("--profile", choices=PROFILES, default="auto",
                        help="per-layer time breakdown: auto (when a goal is missed, not with "
                             "--quick), always or never (default %(default)s)")
    parser.add_argument("--trace", action="store_true",
                        help="also write a TensorFlow profiler trace of training steps to OUT/trace")
    parser.add_argument("--docs", action="store_true",
                        help="after a run of every part, rewrite docs/BENCHMARKS.md and the "
                             "README's performance table from it")
    parser.add_argument("--docs-from", default=None, metavar="JSON",
                        help="rewrite docs/BENCHMARKS.md and the README table from a saved "
                             "benchmarks.json, without timing anything")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be at least 1")
    if args.warmup is not None and args.warmup < 1:
        parser.error(f"--warmup={args.warmup} must be at least 1 (the first call compiles)")
    if not args.memory_limit_gb > 0:
        parser.error(f"--memory-limit-gb={args.memory_limit_gb} must be positive")
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs} must be at least 1")
    if args.docs and args.part != "all":
        parser.error(f"--docs writes the docs from a run of every part, not only {args.part!r}: "
                     "leave out the part, or use --docs-from OUT/benchmarks.json")
    if args.docs_from is not None and not pathlib.Path(args.docs_from).is_file():
        parser.error(f"--docs-from {args.docs_from}: no such file")
    if args.presets is not None:
        args.presets = [name.strip() for name in args.presets.split(",") if name.strip()]
        for name in args.presets:
            try:
                presets_lib.preset(name, "classify")
            except ValueError as error:
                parser.error(str(error))
    return args


def _settings(args, part):
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS[part])
    warmup = args.warmup or (1 if args.quick else 3)
    return dict(warmup=warmup, repeats=repeats)


def _measure_part(part, args):
    limit = int(args.memory_limit_gb * isolation.GIB)
    memory = dict(memory=not args.no_memory, memory_limit_bytes=limit, jobs=args.jobs)
    timing = _settings(args, part)
    if part == "interconnects":
        return interconnect.benchmark_interconnects(**timing, **memory)
    if part == "training":
        if args.quick:
            return training.benchmark_training(**timing, **memory, workload={"batch": 8,
                                               "image_size": 48}, detectors=("maxpool_nms",),
                                               gnns=("gcn",))
        return training.benchmark_training(**timing, **memory)
    if part == "presets":
        return real_data.benchmark_presets(**timing, names=args.presets,
                                           batch=4 if args.quick else None)
    if part == "graphs":
        return graphs.benchmark_graphs(**timing, batch=4 if args.quick else None)
    if part == "inference":
        quantizations = ("none",) if args.quick else inference.QUANTIZATIONS
        return inference.benchmark_inference_formats(**timing, **memory,
                                                     quantizations=quantizations)
    sizes = (16, 32) if args.quick else scale.GRID_SIZES
    counts = (16, 64) if args.quick else scale.KEYPOINT_COUNTS
    return {
        "grid_graphs": scale.benchmark_grid_graphs(sizes=sizes, memory_limit_bytes=limit,
                                                   **timing),
        "keypoint_counts": scale.benchmark_keypoint_counts(counts=counts,
                                                           memory_limit_bytes=limit, **timing),
    }


def run_part(part, args):
    """One part's results, with the load before and after it, the thread settings and
    "aa_flag": whether any of its groups' A/A checks is flagged (None: none judged)."""
    load_before = machine.load_average()
    result = _measure_part(part, args)
    result["conditions"] = {"load_before": load_before, "load_after": machine.load_average(),
                            "threads": machine.thread_settings()}
    flags = [group["aa_flag"] for group in measure.groups_in(result).values()]
    judged = [flag for flag in flags if flag is not None]
    result["aa_flag"] = any(judged) if judged else None
    return result


def run_profiles(results, goals, args):
    """Per-layer / per-sub-step breakdowns for the parts whose goals were missed."""
    if args.profile == "never" or (args.profile == "auto" and args.quick):
        return []
    missed = {g["goal"] for g in goals if g["status"] == "MISS"}
    always = args.profile == "always"
    timing = dict(warmup=2, repeats=3 if args.quick else 7)
    profiles = []
    parts = results["parts"]
    if "interconnects" in parts and (always or any("interconnects" in g for g in missed)):
        breakdown = profile.time_parts(interconnect.interconnect_parts(), **timing)
        profiles.append({"name": "interconnect sub-steps (one tf.function each)", **breakdown})
    if "training" in parts and (always or any("training" in g for g in missed)):
        train = parts["training"]
        workload = train["workload"]
        for name in (train["reference_model"], training.PLAIN):
            target = train["plain_cnn_target_params"] if name == training.PLAIN else None
            print(f"profiling {name} ...", flush=True)
            profiles.append(profile.layer_breakdown(name, workload["batch"],
                                                    workload["image_size"],
                                                    target_params=target, **timing))
    return profiles


def write_trace(results, out):
    train = results["parts"].get("training")
    if train is None:
        return None
    workload = train["workload"]
    step, _ = training.setup_training(train["reference_model"], workload["batch"],
                                      workload["image_size"], xla_mode="off")
    logdir = out / "trace"
    profile.trace_steps(step, logdir)
    return str(logdir)


def write_docs(results, docs_path=None, readme_path=None):
    docs_path, readme_path = docs_path or DOCS_PATH, readme_path or README_PATH
    report.write_docs(results, docs_path, readme_path)
    print(f"wrote {docs_path} and the table of {readme_path}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.docs_from is not None:
        write_docs(json.loads(pathlib.Path(args.docs_from).read_text()))
        return None
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine.machine_info()
    print(machine.format_machine(info), flush=True)
    if not info["gpus"]:
        print("no GPU detected: the GPU sections (mixed precision) are skipped", flush=True)
    parts = [p for p in PARTS if p != "all"] if args.part == "all" else [args.part]
    results = {"command": " ".join(["python -m trainers.benchmark", *argv]),
               "date": datetime.datetime.now().isoformat(timespec="minutes"),
               "machine": info, "settings": {**vars(args), "quick": args.quick}, "parts": {},
               "seconds": {}}
    for part in parts:
        print(f"\n== {part} ==", flush=True)
        start = time.perf_counter()
        results["parts"][part] = run_part(part, args)
        results["seconds"][part] = time.perf_counter() - start
        print(f"{part}: {results['seconds'][part]:.0f} s (load average "
              f"{machine.load_average()[0]})", flush=True)
    results["goals"] = goals_lib.evaluate_goals(results["parts"])
    results["profiles"] = run_profiles(results, results["goals"], args)
    if args.trace:
        results["trace_dir"] = write_trace(results, out)
    results["load_average_end"] = machine.load_average()
    results["aa_warnings"] = goals_lib.aa_warnings(results)
    problems = measure.check_ratios(results)
    if problems:
        raise RuntimeError("ratios without a common group (a benchmark bug): "
                           + "; ".join(problems))
    atomic.write_text(out / "benchmarks.json", json.dumps(results, indent=2, default=str) + "\n")
    text = report.markdown(results)
    atomic.write_text(out / "benchmarks.md", text)
    print("\n" + text)
    print(goals_lib.format_goals(results["goals"]))
    for warning in results["aa_warnings"]:
        print(f"WARN  {warning}")
    print(f"\nwrote {out / 'benchmarks.json'} and {out / 'benchmarks.md'}")
    if args.docs:
        write_docs(results)
    return results


if __name__ == "__main__":
    common.run_main(main)
