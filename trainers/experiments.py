"""Reproduce the paper's Table 1 (classification) or Table 2 (reconstruction):
`python -m trainers.experiments --table 1 --dataset folder:../shared/data/imagenette2 --image-size 64 --epochs 10`.

Every row trains with the same data, seed, epochs and image size through `trainers.classify` or
`trainers.reconstruct`, in its own run directory under --out/rows/. Rows already finished are
not run again, and a row cut short resumes from its last finished epoch, so a long table can be
run in pieces. After each row: results.json, results.md (the paper's layout) and results.png.
"""
import dataclasses
import json
import pathlib
import re

from keypoint_gnn import training, xla
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


def table_2_rows():
    return [Row(label, ("--preset", preset)) for label, preset in TABLE_2_PRESETS.items()]


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "experiments")
    parser.add_argument("--table", type=int, choices=(1, 2), required=True,
                        help="the paper's Table 1 (classification) or 2 (reconstruction)")
    parser.add_argument("--dataset", default="builtin", help="default %(default)s")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--image-size", type=int, default=64, help="default %(default)s")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="convert images to 1 or 3 channels (default: the data set's)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="cap on each split's examples (default: all)")
    parser.add_argument("--epochs", type=int, default=10, help="default %(default)s")
    parser.add_argument("--batch-size", type=int, default=64, help="default %(default)s")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="default %(default)s")
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
    if args.epochs < 1:
        raise common.UserError(f"--epochs={args.epochs} must be at least 1")
    if args.out is None:
        args.out = f"runs/table{args.table}_{re.sub(r'[^A-Za-z0-9]+', '_', args.dataset).strip('_')}"
    return args


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


def base_flags(args):
    flags = ["--dataset", args.dataset, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
             "--seed", str(args.seed), "--verbose", "2"]
    if args.data_dir is not None:
        flags += ["--data-dir", args.data_dir]
    for field, value in (("data.channels", args.channels), ("data.max_examples", args.max_examples)):
        if value is not None:
            flags += ["--set", f"{field}={value}"]
    if args.xla != "off":
        flags += ["--xla", args.xla]
    if args.table == 1:
        flags += ["--detector", args.detector, "--no-export"]
    return flags + args.extra.split()


def run_row(args, row, out):
    """Trains one row unless its metrics.json exists; returns its metrics."""
    run_dir = out / "rows" / row.slug
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        print(f"[done before] {row.label}")
        return json.loads(metrics_path.read_text())
    print(f"[running] {row.label}")
    trainer = classify if args.table == 1 else reconstruct
    keras.backend.clear_session()
    flags = base_flags(args) + list(row.flags) + ["--out", str(run_dir)]
    if args.table == 1 and "--detector" in row.flags:  # the row's own detector wins
        index = flags.index("--detector")
        del flags[index:index + 2]
    return trainer.main(flags)


def summarise(args, results):
    """results.md (the paper's layout), results.json and a bar chart."""
    out = pathlib.Path(args.out)
    metric, unit = ("test_accuracy", "test accuracy (%)") if args.table == 1 else ("test_mse", "test MSE")
    lines = [
        f"| architecture | graph layers | keypoints | score activation | parameters | {unit} | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, result in results.items():
        model = result["config"]["model"]
        plain = result.get("architecture") == "plain_cnn"
        layers = "-" if plain or model["graph"]["kind"] == "none" else model["graph"]["layers"]
        keypoints = "-" if plain else model["detector"]["num_keypoints"]
        activation = "-" if plain else model["detector"]["score_activation"]
        if args.table == 1:
            value = f"{100 * result[metric]:.2f}"
        else:
            value = f"{result[metric]:.4f} ({result.get('loss', 'mse')})"
        lines.append(f"| {label} | {layers} | {keypoints} | {activation} | {result['parameters']:,} | "
                     f"{value} | {result['seconds_per_epoch']:.1f} |")
    header = (f"Table {args.table} on `{args.dataset}`, {args.image_size} px, {args.epochs} epochs, "
              f"seed {args.seed}.\n\nCommand: `python -m trainers.experiments "
              f"{' '.join(_argv_of(args))}`\n\n")
    (out / "results.md").write_text(header + "\n".join(lines) + "\n")
    training.write_json(out / "results.json", {"table": args.table, "dataset": args.dataset,
                                               "image_size": args.image_size, "epochs": args.epochs,
                                               "rows": results})
    _plot(results, metric, unit, out / "results.png", scale=100 if args.table == 1 else 1)


def _argv_of(args):
    flags = [f"--table {args.table}", f"--dataset {args.dataset}", f"--image-size {args.image_size}",
             f"--epochs {args.epochs}"]
    for name in ("max_examples", "rows", "data_dir", "channels"):
        if getattr(args, name):
            flags.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
    if args.keypoints != 64:
        flags.append(f"--keypoints {args.keypoints}")
    if args.batch_size != 64:
        flags.append(f"--batch-size {args.batch_size}")
    if args.extra:
        flags.append(f"--extra '{args.extra}'")
    return flags


def _plot(results, metric, unit, path, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    values = [scale * results[label][metric] for label in labels]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    axes.barh(range(len(labels)), values, color="tab:blue")
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(unit)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.table == 1:
        rows = _selected(table_1_rows(args.keypoints), args.rows)
        for row in rows:
            results[row.label] = run_row(args, row, out)
            summarise(args, results)
        gnn_rows = [row for row in rows if "--plain-cnn" not in row.flags
                    and row.label != "CNN only (no GNN)"]
        if not args.rows and gnn_rows:
            best = max(gnn_rows, key=lambda row: results[row.label]["test_accuracy"])
            for row in detector_rows(best, args.detector):
                results[row.label] = run_row(args, row, out)
                summarise(args, results)
    else:
        for row in _selected(table_2_rows(), args.rows):
            results[row.label] = run_row(args, row, out)
            summarise(args, results)
    print((out / "results.md").read_text())
    return results


if __name__ == "__main__":
    common.run_main(main)
