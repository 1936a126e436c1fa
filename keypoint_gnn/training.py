"""Training machinery shared by the trainers: strategies, precision, callbacks, fitting or
restoring a run, evaluation and report of keypoints, the run's summary. No argument parsing
here (that is `trainers/`)."""
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from keypoint_gnn import metrics as keypoint_metrics
from keypoint_gnn import viz
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.models import keypoint_model
from keypoint_gnn.recipe import images_per_epoch
from keypoint_gnn.run_directory import TRAINED_FILES

STRATEGIES = ("auto", "mirrored", "multiworker", "one_device")


def make_strategy(name="auto", devices=None):
    """A `tf.distribute` strategy.

    Args:
      name: "auto" (MirroredStrategy over all visible GPUs when there are several, one
        device otherwise), "mirrored" (MirroredStrategy over `devices`, default all GPUs, or
        the CPU), "multiworker" (MultiWorkerMirroredStrategy configured by TF_CONFIG), or
        "one_device" (the first GPU, else the CPU). "auto" with at most one GPU is TensorFlow's
        default strategy (one device).
      devices: device names for "mirrored", e.g. ["/cpu:0", "/cpu:1"] on logical CPUs.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {', '.join(STRATEGIES)}")
    # Physical, not logical, devices: listing logical ones initialises the runtime, after
    # which MultiWorkerMirroredStrategy can no longer configure its collectives.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multiworker' needs the TF_CONFIG environment variable describing the "
                'cluster, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    # A one-device MirroredStrategy rather than OneDeviceStrategy: Keras's BackupAndRestore
    # does not support the latter.
    return tf.distribute.MirroredStrategy(devices=["/gpu:0" if gpus else "/cpu:0"])


def is_chief(strategy):
    """Whether this process writes the run's outputs (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())


def set_precision(mixed):
    """float32, or mixed float16 (GPU) / bfloat16 (CPU, where float16 matmuls are slow)."""
    if not mixed:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


class KeypointImages(keras.callbacks.Callback):
    """Writes validation images with their keypoints drawn to TensorBoard after each epoch."""

    def __init__(self, log_dir, images, stride, max_images=8):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(pathlib.Path(log_dir) / "keypoints"))
        self.images = np.asarray(images[:max_images])
        self.stride = stride
        self._detector = None

    def on_epoch_end(self, epoch, logs=None):
        if self._detector is None:  # shares the model's layers: build it once
            # An OffsetAnchoredTrainer trains its `classifier`.
            self._detector = keypoint_model(getattr(self.model, "classifier", self.model))
        positions, _, _ = self._detector(self.images, training=False)
        pixels = keypoint_metrics.feature_to_image_pixels(positions.numpy(), self.stride)
        drawn = viz.keypoints_image_summary(self.images, pixels)
        with self.writer.as_default():
            tf.summary.image("validation_keypoints", drawn, step=epoch, max_outputs=len(drawn))
        self.writer.flush()


def standard_callbacks(out_dir, monitor, mode, chief=True, keypoint_images=None, stride=None):
    """Progress bar (from `fit(verbose=...)`), TensorBoard, best-epoch checkpoint,
    BackupAndRestore (a killed run restarted with the same out_dir resumes from its last
    finished epoch), TerminateOnNaN and, given `keypoint_images`, validation images with their
    keypoints in TensorBoard.

    Every worker of a multi-worker run gets the same callbacks (they must run the same ops in
    the same order); the non-chief ones write into a temporary directory.
    """
    out_dir = pathlib.Path(out_dir)
    work_dir = out_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="worker-"))
    extra = [] if keypoint_images is None else [KeypointImages(work_dir / "logs", keypoint_images, stride)]
    return extra + [
        keras.callbacks.BackupAndRestore(str(out_dir / "backup")),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(str(work_dir / "logs"), write_graph=False, profile_batch=0),
        keras.callbacks.ModelCheckpoint(
            str(work_dir / "checkpoints" / "best.weights.h5"),
            monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True),
    ]


def fit_or_restore(model, run_dir, fit, strategy, raw=None):
    """Runs `fit()` and keeps the trained weights in the run folder until its metrics.json is
    written; a run killed after training (while it evaluated) loads them instead of training
    again. BackupAndRestore cannot do this: it deletes its backup when `fit` ends, so the
    resumed run would start again from epoch 1.

    Under MultiWorkerMirroredStrategy it only runs `fit`: every worker would have to make the
    same choice from files that a non-chief worker may not see, and reading the weights to save
    them is a collective operation that all workers must join.

    Args:
      model: the compiled model `fit` trains.
      run_dir: the run's `RunDirectory`.
      fit: a callable running `model.fit(...)`.
      strategy: the `tf.distribute` strategy the model was built under.
      raw: an EMA run's `recipe.KeepRawWeights`; its raw weights are kept and restored too.

    Returns:
      (seconds `fit` took, 0.0 for restored weights; whether the weights were restored).
    """
    keep = not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if keep and run_dir.has_trained(with_raw=raw is not None):
        print(f"--out {run_dir.path}: training had finished; evaluating its trained weights "
              f"({TRAINED_FILES[0]})")
        raw_weights = run_dir.load_trained(model, with_raw=raw is not None)
        if raw is not None:
            raw.raw_weights = raw_weights
        return 0.0, True
    start = time.perf_counter()
    fit()
    seconds = time.perf_counter() - start
    if raw is not None and raw.raw_weights is None:
        raise RuntimeError(
            f"--out {run_dir.path}: fit ran no last epoch, so the EMA run's raw weights were "
            "not kept (resumed from a backup of its last epoch?); pass --overwrite to train again")
    if keep:
        run_dir.save_trained(model, None if raw is None else raw.raw_weights)
    return seconds, False


def unreplicated(model, strategy, build):
    """The trained model for single-process use after `fit`.

    Under a multi-worker strategy, calling the distributed model would start collective ops
    that the other workers (already finished) never join; `build()` makes the same
    architecture outside the strategy and the trained weights are copied into it.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    copy = build()
    copy.set_weights(model.get_weights())
    return copy


def dataset_arrays(dataset, max_batches=None):
    """Concatenates a finite dataset of (x, y) batches into numpy arrays."""
    xs, ys = [], []
    for i, (x, y) in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def predict_keypoints(model, images, batch_size=128):
    """Keypoints of `images` as numpy: positions (B, N, 2) feature-map pixels, scores (B, N)."""
    detector = keypoint_model(model)
    positions, scores = [], []
    for start in range(0, len(images), batch_size):
        p, s, _ = detector(images[start:start + batch_size], training=False)
        positions.append(p.numpy())
        scores.append(s.numpy())
    return np.concatenate(positions), np.concatenate(scores)


def keypoint_quality(model, config, images, parts=None):
    """Keypoint metrics in image pixels: redundancy (share of keypoint pairs closer than 1.5
    feature-map cells, so that keypoints in neighbouring cells, diagonals included, count as
    redundant), mean nearest-neighbour distance and, with true `parts`, hit rate and coverage
    within a radius of one cell (`feature_stride` pixels), and the share of keypoints at the
    detector's N most frequent positions (1-pixel bins; 1 = the same keypoints in every
    image)."""
    positions, _ = predict_keypoints(model, images)
    pixels = keypoint_metrics.feature_to_image_pixels(positions, config.feature_stride)
    radius = float(config.feature_stride)
    min_distance = 1.5 * radius
    report = keypoint_metrics.keypoint_report(pixels, parts, radius=radius,
                                              min_distance=min_distance, position_bin=1.0)
    report.update(radius_pixels=radius, min_distance_pixels=min_distance)
    return report, pixels


def report_keypoints(model, config, data, test_images, out, test_labels=None):
    """`keypoint_quality` on the test images (with the grid regressor's `offset_quality`), and
    keypoints.png (and offsets.png) in `out`; given `test_labels` (integer classes), the 16
    images of keypoints.png are taken class by class (`spread_over_classes`) and captioned with
    the model's predicted and the true class, else they are the first 16. Returns the
    quality dict and the keypoints in image pixels."""
    quality, pixels = keypoint_quality(model, config, test_images, data.test_parts)
    if config.detector.kind == "grid":
        offset_measures, offsets = offset_quality(model, config, test_images)
        quality.update(offset_measures)
        viz.plot_offset_histogram(offsets.reshape(-1, 2), pathlib.Path(out) / "offsets.png")
    shown = np.arange(min(16, len(test_images)))
    captions = None
    if test_labels is not None:
        labels = np.asarray(test_labels).reshape(-1)
        shown = spread_over_classes(labels, 16)
        names = data.info.class_names
        predicted = np.argmax(model.predict(test_images[shown], verbose=0), axis=-1)
        captions = [f"pred {names[p]}\ntrue {names[t]}" for p, t in zip(predicted, labels[shown])]
    parts = None if data.test_parts is None else data.test_parts[shown]
    viz.draw_keypoints(test_images[shown], pixels[shown], pathlib.Path(out) / "keypoints.png",
                       parts=parts, captions=captions, title=f"{config.detector.kind} keypoints"
                       + (" (red) and true parts (green)" if parts is not None else ""))
    return quality, pixels


def spread_over_classes(labels, count):
    """Indices of up to `count` examples taking the classes in turn: the first example of
    each class (classes in order of first appearance), then the second of each, and so on;
    a test split sorted by class then shows every class, not only the first."""
    labels = np.asarray(labels).reshape(-1)
    by_class = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    chosen = []
    for rank in range(max((len(v) for v in by_class.values()), default=0)):
        chosen += [indices[rank] for indices in by_class.values() if rank < len(indices)]
        if len(chosen) >= count:
            break
    return np.asarray(chosen[:count], dtype=np.int64)


def cell_predictions(model, images, batch_size=128):
    """The grid regressor's (y offset, x offset, confidence logit) for every point slot, as
    numpy (B, L, M, h, 3)."""
    backbone = model.get_layer("detector_backbone")
    detector = model.get_layer("detector")
    return np.concatenate([
        detector(backbone(images[start:start + batch_size], training=False),
                 return_cells=True).numpy()
        for start in range(0, len(images), batch_size)])


def most_confident_slots(cells, num_keypoints):
    """(B, L, M, h, 3) cell predictions -> (B, N) flat indices (row-major over L, M, h) of the
    N most confident point slots per image, the ones the grid regressor selects."""
    flat = cells.reshape(len(cells), -1, 3)
    return np.argsort(-flat[..., 2], axis=1, kind="stable")[:, :num_keypoints]


def most_confident_offsets(cells, num_keypoints):
    """(B, L, M, h, 3) cell predictions -> (B, N, 2) offsets (y, x) of the N most confident
    point slots per image, the ones the grid regressor selects."""
    offsets = cells[..., :2].reshape(len(cells), -1, 2)
    order = most_confident_slots(cells, num_keypoints)
    return np.take_along_axis(offsets, order[..., None], axis=1)


def input_dependence(model, config, images, seed=0):
    """How much the grid regressor's output depends on the image.

    Returns a dict:
      noise_selection_overlap: share of the N slots selected in each image that are also
        selected in an image of uniform noise (same value range, one per image, `seed`); 1
        means the selection ignores the image.
      offset_std_across_images: standard deviation of each slot's (y, x) offsets over the
        images, averaged over slots and axes (cell units); 0 means fixed offsets.
      offset_std_across_slots: standard deviation over slots of each slot's mean offset; how
        much the fixed part differs from slot to slot.
    """
    images = np.asarray(images, dtype=np.float32)
    noise = np.random.default_rng(seed).uniform(
        images.min(), images.max(), images.shape).astype(np.float32)
    cells = cell_predictions(model, images)
    slots = most_confident_slots(cells, config.detector.num_keypoints)
    noise_slots = most_confident_slots(cell_predictions(model, noise),
                                       config.detector.num_keypoints)
    offsets = cells[..., :2].reshape(len(cells), -1, 2)
    return {
        "noise_selection_overlap": keypoint_metrics.selection_overlap(slots, noise_slots),
        "offset_std_across_images": float(offsets.std(axis=0).mean()),
        "offset_std_across_slots": float(offsets.mean(axis=0).std(axis=0).mean()),
    }


def offset_quality(model, config, images):
    """The grid regressor's offset measures on `images`, and its selected offsets.

    Returns ({"border_fraction" of the selected keypoints, "border_fraction_all_slots" of every
    point slot of every cell (selected or not), and `input_dependence`'s measures}, offsets
    (B, N, 2) of the selected keypoints in cell units).
    """
    cells = cell_predictions(model, images)
    offsets = most_confident_offsets(cells, config.detector.num_keypoints)
    quality = {
        "border_fraction": keypoint_metrics.border_fraction(offsets),
        "border_fraction_all_slots": keypoint_metrics.border_fraction(cells[..., :2]),
        **input_dependence(model, config, images),
    }
    return quality, offsets


def command_line():
    return " ".join([os.path.basename(sys.executable), "-m", _module_name()] + sys.argv[1:])


def _module_name():
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]


def run_summary(*, args, strategy, precision, info, run, run_dir, epoch_log, train_seconds):
    """What every trainer records about a run besides its task metrics: speed, set-up, the
    resolved RunConfig `run`, the command line, and the history and epoch times of every
    epoch, those of earlier processes of a resumed run included (`run_dir`)."""
    epoch_seconds = run_dir.epoch_seconds()
    return {
        **speed_summary(epoch_seconds, images_per_epoch(run.train, info.num_examples["train"])),
        "epoch_seconds": epoch_seconds,
        "epochs_run_this_session": len(epoch_log.seconds),
        "train_seconds_this_session": train_seconds,
        "precision": precision,
        "xla": args.xla,
        "xla_mode": getattr(args, "xla_mode", args.xla),
        "strategy": args.strategy,
        "strategy_class": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "dataset": info.name,
        "num_examples": info.num_examples,
        "skipped_files": info.skipped_files,
        "data_warnings": list(getattr(info, "warnings", [])),
        "preset": getattr(args, "preset", None),
        "seed": args.seed,
        "config": run.to_dict(),
        "command": command_line(),
        "history": run_dir.history(),
    }


def speed_summary(epoch_seconds, num_train_examples):
    """Seconds per epoch (mean over epochs after the first, which includes tracing and XLA
    compilation, when there are several) and training images per second."""
    steady = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    per_epoch = float(np.mean(steady)) if steady else float("nan")
    return {
        "seconds_per_epoch": per_epoch,
        "first_epoch_seconds": float(epoch_seconds[0]) if epoch_seconds else float("nan"),
        "images_per_second": num_train_examples / per_epoch if per_epoch else float("nan"),
    }
