"""The paper's Table 1 (classification) or Table 2 (reconstruction, `--preset` the base its
rows change, e.g. faces-64), or the comparisons a user asks for: `--table compare` (a
preset's keypoint GNN, its "CNN only" row and the matched plain network) and `--table graphs`
(the preset with no graph, GCN, DiffPool, GAT and ViG at equal parameters), over seeds:

  python -m trainers.experiments --table 1 --dataset folder:../shared/data/imagenette2 \
      --image-size 64 --epochs 10
  python -m trainers.experiments --table compare --preset imagenette-64 --seeds 0,1 \
      --dataset folder:../shared/data/imagenette2
  python -m trainers.experiments --table graphs --preset imagenette-64 --seeds 0,1 \
      --dataset folder:../shared/data/imagenette2
  python -m trainers.experiments --table 2 --preset faces-64 --dataset folder:../shared/data/att_faces

Every row trains with the same data, seed, epochs and image size through `trainers.classify` or
`trainers.reconstruct`, in its own run directory under --out/rows/. Rows already finished are
not run again, and a row cut short resumes from its last finished epoch, so a long table can be
run in pieces. After each row: results.json, results.md and results.png. Accuracy columns are
means +- standard deviations over the seeds (one seed: the value); with flip test-time
augmentation where the data set allows flips or the rows train with them; the raw weights'
beside the EMA's for EMA runs.
"""
import dataclasses
import json
import pathlib
import re

import numpy as np

from keypoint_gnn import atomic, models, presets, xla
from keypoint_gnn._backend import keras
from trainers import classify, common, reconstruct

PAPER_TABLE_1 = {  # "10 classes of ImageNet", test accuracy (%), as the paper reports it
    "CNN only (no GNN)": 51.60,
    "GCN, 4 layers": 78.15,
    "DiffPool": 98.10,
    "GCN, 5 layers, sigmoid scores": 98.40,
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: a label and the trainer flags that differ from the table's base."""

    label: str
    flags: tuple

    @property
    def slug(self):
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")


TABLE_1_PRESETS = {  # row label -> preset (keypoint_gnn.presets)
    "CNN only (no GNN)": "paper-t1-cnn-only",
    "GCN, 4 layers": "paper-t1-gcn4",
    "GCN, 4 layers, sigmoid scores": "paper-t1-gcn4-sigmoid",
    "GCN, 5 layers": "paper-t1-gcn5",
    "GCN, 5 layers, sigmoid scores": "paper-t1-gcn5-sigmoid",
    "DiffPool": "paper-t1-diffpool",
    "DiffPool, sigmoid scores": "paper-t1-diffpool-sigmoid",
}
TABLE_2_PRESETS = {
    "GCN, 5 layers, 48 keypoints": "paper-t2-gcn5-48kp",
    "GCN, 5 layers, 64 keypoints": "paper-t2-gcn5-64kp",
    "GCN, 9 layers, 64 keypoints": "paper-t2-gcn9-64kp",
    "GCN, 5 layers, 64 keypoints, sigmoid scores": "paper-t2-gcn5-64kp-sigmoid",
    "DiffPool, 64 keypoints": "paper-t2-diffpool-64kp",
    "GCN, 5 layers, 64 keypoints, conf-MSE": "paper-t2-gcn5-64kp-conf-mse",
    "GCN, 5 layers, 64 keypoints, sigmoid scores, conf-MSE": "paper-t2-gcn5-64kp-sigmoid-conf-mse",
}


def table_1_rows(keypoints):
    k = ("--keypoints", str(keypoints))
    return [Row(label, ("--preset", preset) + k) for label, preset in TABLE_1_PRESETS.items()] + [
        Row("Plain CNN, matched parameters", ("--preset", "paper-t1-gcn4-sigmoid") + k
            + ("--plain-cnn",))]


def detector_rows(best, table_detector):
    """Each detector with the best GNN row's settings, except `table_detector`: the table's
    rows already use it, so the best row itself is that detector's row."""
    return [Row(f"{best.label}; {detector} keypoints", tuple(best.flags) + ("--detector", detector))
            for detector in ("attention", "maxpool_nms", "grid") if detector != table_detector]


def preset_sets(name):
    """The fields preset `name` sets, as --set flags (to apply them over another preset)."""
    flags = []

    def walk(prefix, values):
        for key, value in values.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                text = value if isinstance(value, str) else json.dumps(value)
                flags.extend(["--set", f"{prefix}{key}={text}"])
    walk("", presets.preset(name))
    return tuple(flags)


def table_2_rows(base="default"):
    """The paper's Table 2 rows, each as its preset's changes over the `base` preset (its
    recipe, backbone and decoder), then the references a user would compare: `base` itself
    and with the other detectors, and the convolutional autoencoder with at least and with at
    most as many bottleneck numbers as the keypoint graph. (The mean image and PCA references
    are in every row's metrics.)"""
    start = ("--preset", base)
    rows = [Row(label, start + preset_sets(preset)) for label, preset in TABLE_2_PRESETS.items()]
    plain = [Row(f"Convolutional autoencoder, {bound.replace('-', ' ')} the graph's numbers",
                 start + ("--plain-autoencoder", bound))
             for bound in models.PLAIN_BOTTLENECKS]
    if base == "default":
        return rows + plain
    detector = presets.preset(base).get("model", {}).get("detector", {}).get("kind",
                                                                              "maxpool_nms")
    rows.append(Row(f"{base} ({detector} keypoints)", start))
    rows += [Row(f"{base}, {other} keypoints", start + ("--detector", other))
             for other in ("attention", "maxpool_nms", "grid") if other != detector]
    return rows + plain


def compare_rows(preset):
    """The preset's keypoint GNN, the same without the GNN (the paper's "CNN only"), and the
    plain network matched to the keypoint GNN's parameters."""
    base = ("--preset", preset)
    return [Row(f"{preset}: keypoint GNN", base),
            Row(f"{preset}: CNN only (keypoints, no GNN)", base + ("--gnn", "none")),
            Row(f"{preset}: plain network, matched parameters", base + ("--plain-cnn",))]


GRAPH_KINDS = {"none": "CNN only (no graph)", "gcn": "GCN", "diffpool": "DiffPool",
               "gat": "GAT", "vig": "ViG"}


def graph_rows(preset):
    """The graph ablation (issue 23): the preset with each graph kind, every kind's units
    chosen so that the whole model has the parameter count closest to the preset's own GCN
    model (`keypoint_gnn.benchmarks.graphs.matched_graphs`; "none" has no graph to size)."""
    from keypoint_gnn.benchmarks.graphs import matched_graphs

    matched, _ = matched_graphs(preset, kinds=tuple(GRAPH_KINDS))
    rows = []
    for kind, name in GRAPH_KINDS.items():
        flags = ("--preset", preset, "--gnn", kind)
        if matched[kind]["units"] is not None:
            flags += ("--set", f"graph.units={matched[kind]['units']}")
        rows.append(Row(f"{preset}: {name}", flags))
    return rows


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "experiments")
    parser.add_argument("--table", choices=("1", "2", "compare", "graphs"), required=True,
                        help="the paper's Table 1 (classification) or 2 (reconstruction); "
                             "compare: --preset's keypoint GNN, CNN only and matched plain "
                             "network; graphs: --preset with each graph kind at equal parameters")
    parser.add_argument("--preset", default="default",
                        help="--table compare / graphs: the preset compared; --table 2: the preset the "
                             "paper's rows change (e.g. faces-64) (default %(default)s)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds, each row run once per seed (default: --seed)")
    parser.add_argument("--dataset", default="builtin", help="default %(default)s")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: the preset's, or 64 for --table 1 and for "
                             "--table 2 without --preset")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="convert images to 1 or 3 channels (default: the data set's)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="cap on each split's examples (default: all)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the preset's, or 10 for --table 1 and for "
                             "--table 2 without --preset")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the preset's, or 64 for --table 1 and for "
                             "--table 2 without --preset")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: the preset's, or 0.002 for --table 1 and for "
                             "--table 2 without --preset")
    parser.add_argument("--keypoints", type=int, default=64,
                        help="keypoints of the table 1 rows (default %(default)s)")
    parser.add_argument("--detector", default="maxpool_nms",
                        help="detector of the GNN rows (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument("--xla", nargs="?", const="auto", default="off", choices=xla.XLA_MODES,
                        help="passed to every row (see trainers.classify --help)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row numbers (1-based) to run, default all")
    parser.add_argument("--extra", default="", help="more trainer flags for every row, quoted")
    parser.add_argument("--out", default=None, help="default runs/table<N>_<dataset>")
    args = parser.parse_args(argv)
    args.table = args.table if args.table in ("compare", "graphs") else int(args.table)
    if args.table == 1 or (args.table == 2 and args.preset == "default"):
        for name, default in (("epochs", 10), ("batch_size", 64), ("learning_rate", 2e-3),
                              ("image_size", 64)):
            if getattr(args, name) is None:
                setattr(args, name, default)
    if args.epochs is not None and args.epochs < 1:
        raise common.UserError(f"--epochs={args.epochs} must be at least 1")
    args.seed_list = _seeds(args.seeds, args.seed)
    if args.out is None:
        table = (f"{args.table}_{args.preset}" if args.table in ("compare", "graphs")
                 else args.table)
        args.out = f"runs/table{table}_{re.sub(r'[^A-Za-z0-9]+', '_', args.dataset).strip('_')}"
    return args


def _seeds(spec, seed):
    if spec is None:
        return [seed]
    try:
        seeds = [int(n) for n in spec.split(",") if n.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise common.UserError(f"--seeds={spec!r} must be distinct comma-separated integers >= 0")
    return seeds


def _selected(rows, spec):
    if not spec:
        return rows
    try:
        numbers = [int(n) for n in spec.split(",")]
    except ValueError:
        raise common.UserError(f"--rows={spec!r} must be comma-separated row numbers") from None
    bad = [n for n in numbers if not 1 <= n <= len(rows)]
    if bad:
        raise common.UserError(f"--rows {bad} out of range: the table has rows 1..{len(rows)}")
    return [rows[n - 1] for n in numbers]


def base_flags(args, seed):
    flags = ["--dataset", args.dataset, "--seed", str(seed), "--verbose", "2"]
    for flag, value in (("--image-size", args.image_size), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size), ("--learning-rate", args.learning_rate)):
        if value is not None:
            flags += [flag, str(value)]
    for field, value in (("data.data_dir", args.data_dir), ("data.channels", args.channels),
                         ("data.max_examples", args.max_examples)):
        if value is not None:
            flags += ["--set", f"{field}={value}"]
    if args.xla != "off":
        flags += ["--xla", args.xla]
    if args.table == 1:
        flags += ["--detector", args.detector]
    if args.table != 2:
        flags += ["--no-export"]
    return flags


def run_row(args, row, out, seed=None):
    """Trains one row (for one seed) unless its metrics.json exists; returns its metrics."""
    seed = args.seed if seed is None else seed
    run_dir = out / "rows" / (row.slug if seed == args.seed and args.seeds is None
                              else f"{row.slug}_seed{seed}")
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        print(f"[done before] {row.label} (seed {seed})")
        return json.loads(metrics_path.read_text())
    print(f"[running] {row.label} (seed {seed})")
    trainer = reconstruct if args.table == 2 else classify
    keras.backend.clear_session()
    # --extra comes after the row's flags: what the user adds to every row wins.
    flags = base_flags(args, seed) + list(row.flags) + args.extra.split() + ["--out", str(run_dir)]
    if args.table == 1 and "--detector" in row.flags:  # the row's own detector wins
        index = flags.index("--detector")
        del flags[index:index + 2]
    return trainer.main(flags)


def _spread(values, scale=1.0, digits=2):
    """"m +- sd" over seeds (sample standard deviation), "m" for one, "" for none; where some
    seeds lack the value (a field added after their run), "(k of n seeds)" says so."""
    present = [scale * v for v in values if v is not None]
    if not present:
        return ""
    if len(present) == 1:
        text = f"{present[0]:.{digits}f}"
    else:
        text = f"{np.mean(present):.{digits}f} +- {np.std(present, ddof=1):.{digits}f}"
    return text if len(present) == len(values) else f"{text} ({len(present)} of {len(values)} seeds)"


def _column(runs, *keys):
    """The value at `keys` in each run's metrics (None where missing)."""
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return values


def row_summary(runs, metric):
    """Means and spreads of one row's seeds, as JSON."""
    summary = {"seeds": [run.get("seed") for run in runs]}
    for name, keys in ((metric, (metric,)), ("test_accuracy_flip_tta", ("test_accuracy_flip_tta",)),
                       ("test_accuracy_raw", ("test_accuracy_raw",)),
                       ("test_psnr", ("test_psnr",)), ("test_ssim", ("test_ssim",)),
                       ("test_unseen_mse", ("test_unseen_mse",)),
                       ("seconds_per_epoch", ("seconds_per_epoch",)),
                       ("images_per_second", ("images_per_second",)),
                       ("pipeline_images_per_second", ("pipeline_images_per_second",)),
                       ("redundancy", ("keypoints", "redundancy")),
                       ("fixed_position_share", ("keypoints", "fixed_position_share"))):
        column = _column(runs, *keys)
        values = [v for v in column if v is not None]
        if values:  # "values" in the order of "seeds", null where a seed's run lacks it
            summary[name] = {"mean": float(np.mean(values)),
                             "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                             "values": column}
    return summary


def summarise(args, results):
    """results.md (the paper's layout plus the recipe's columns), results.json and a bar chart.
    `results`: {row label: [metrics of each seed]}."""
    out = pathlib.Path(args.out)
    classify_table = args.table != 2
    metric, unit = ("test_accuracy", "test accuracy (%)") if classify_table else ("test_mse", "test MSE")
    header = ["architecture", "graph layers", "keypoints", "score activation", "parameters", unit]
    ema = any(run.get("test_accuracy_raw") is not None for runs in results.values() for run in runs)
    if classify_table:
        header += ["flip-TTA (%)"] + (["raw weights (%)"] if ema else [])
    else:
        header += ["PSNR (dB)", "SSIM", "unseen classes: MSE"]
    header += ["s/epoch", "images/s", "pipeline alone (images/s)", "redundancy",
               "fixed-position share", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, runs in results.items():
        first = runs[0]
        model = first["config"]["model"]
        plain = first.get("architecture") in ("plain_cnn", "plain_autoencoder")
        layers = "-" if plain or model["graph"]["kind"] == "none" else model["graph"]["layers"]
        keypoints = "-" if plain else model["detector"]["num_keypoints"]
        activation = "-" if plain else model["detector"]["score_activation"]
        if classify_table:
            values = [_spread(_column(runs, metric), 100),
                      _spread(_column(runs, "test_accuracy_flip_tta"), 100)]
            if ema:  # EMA runs: the raw weights of the last epoch beside the EMA's
                values.append(_spread(_column(runs, "test_accuracy_raw"), 100))
        else:
            values = [f"{_spread(_column(runs, metric), digits=5)} ({first.get('loss', 'mse')})",
                      _spread(_column(runs, "test_psnr"), digits=2),
                      _spread(_column(runs, "test_ssim"), digits=3),
                      _spread(_column(runs, "test_unseen_mse"), digits=5)]
        cells = [label, layers, keypoints, activation, f"{first['parameters']:,}", *values,
                 _spread(_column(runs, "seconds_per_epoch"), digits=1),
                 _spread(_column(runs, "images_per_second"), digits=0),
                 _spread(_column(runs, "pipeline_images_per_second"), digits=0),
                 _spread(_column(runs, "keypoints", "redundancy"), digits=3),
                 _spread(_column(runs, "keypoints", "fixed_position_share"), digits=3),
                 ",".join(str(run.get("seed")) for run in runs)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    first = next(iter(results.values()))[0]
    config = first["config"]
    title = (f"Table {args.table} on `{args.dataset}`, {config['model']['image_size']} px, "
             f"{config['train']['epochs']} epochs, seeds {','.join(map(str, args.seed_list))}; "
             f"{'accuracy columns' if classify_table else 'figures'}: mean +- sample standard "
             "deviation (ddof 1) over the seeds.\n\nCommand: "
             f"`python -m trainers.experiments {' '.join(_argv_of(args))}`\n\n")
    references = "" if classify_table else _references_text(results)
    atomic.write_text(out / "results.md", title + "\n".join(lines) + "\n" + references)
    atomic.write_json(out / "results.json", {
        "table": args.table, "dataset": args.dataset, "seeds": args.seed_list,
        "summary": {label: row_summary(runs, metric) for label, runs in results.items()},
        "rows": results})
    _plot(results, metric, unit, out / "results.png", scale=100 if classify_table else 1)


def _references_text(results):
    """The mean-image and PCA references of each seed's split (every row of a seed shares
    it), as lines under Table 2."""
    by_seed = {}
    for runs in results.values():
        for run in runs:
            if "references" in run:
                by_seed.setdefault(run.get("seed"), run)
    if not by_seed:
        return ""
    heading = ("References on the same splits (mean +- sd over the seeds): MSE / PSNR (dB) / "
               "SSIM.")
    lines = ["", heading, ""]
    for split, name in (("test", "held-out images"), ("test_unseen", "unseen classes")):
        runs = [run["references"][split] for run in by_seed.values()
                if split in run["references"]]
        if not runs:
            continue
        for key, text in (("mean_image", "the mean training image"), ("pca", "PCA")):
            figures = " / ".join(_spread([run[key][m] for run in runs], digits=d)
                                 for m, d in (("mse", 5), ("psnr", 2), ("ssim", 3)))
            if key == "pca":
                asked = runs[0][key]["components_requested"]
                used = sorted({run[key]["components_used"] for run in runs})
                text += f" ({asked} components, as many as the graph's numbers"
                if used != [asked]:  # fewer: the training images' rank (or their duplicates)
                    text += f"; {', '.join(map(str, used))} used: the training images' rank"
                text += ")"
            lines.append(f"- {name}, {text}: {figures}")
    return "\n".join(lines) + "\n"


def _argv_of(args):
    flags = [f"--table {args.table}", f"--dataset {args.dataset}"]
    if args.table in ("compare", "graphs") or (args.table == 2 and args.preset != "default"):
        flags.append(f"--preset {args.preset}")
    for name in ("image_size", "epochs", "seeds", "max_examples", "rows", "data_dir", "channels"):
        if getattr(args, name):
            flags.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
    if args.keypoints != 64:
        flags.append(f"--keypoints {args.keypoints}")
    if args.batch_size not in (None, 64):
        flags.append(f"--batch-size {args.batch_size}")
    if args.extra:
        flags.append(f"--extra '{args.extra}'")
    return flags


def _plot(results, metric, unit, path, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    values = [scale * np.mean([run[metric] for run in results[label]]) for label in labels]
    errors = [scale * np.std([run[metric] for run in results[label]], ddof=1)
              if len(results[label]) > 1 else 0.0 for label in labels]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    axes.barh(range(len(labels)), values, xerr=errors, color="tab:blue")
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(unit)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_rows(args, rows, out, results):
    """Each row for each seed (seeds of a row together), summarising after every run."""
    for row in rows:
        for seed in args.seed_list:
            results.setdefault(row.label, []).append(run_row(args, row, out, seed))
            summarise(args, results)


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.table == "compare":
        run_rows(args, _selected(compare_rows(args.preset), args.rows), out, results)
    elif args.table == "graphs":
        run_rows(args, _selected(graph_rows(args.preset), args.rows), out, results)
    elif args.table == 1:
        rows = _selected(table_1_rows(args.keypoints), args.rows)
        run_rows(args, rows, out, results)
        gnn_rows = [row for row in rows if "--plain-cnn" not in row.flags
                    and row.label != "CNN only (no GNN)"]
        if not args.rows and gnn_rows:
            best = max(gnn_rows, key=lambda row: np.mean(
                [run["test_accuracy"] for run in results[row.label]]))
            run_rows(args, detector_rows(best, args.detector), out, results)
    else:
        run_rows(args, _selected(table_2_rows(args.preset), args.rows), out, results)
    print((out / "results.md").read_text())
    return results


if __name__ == "__main__":
    common.run_main(main)
