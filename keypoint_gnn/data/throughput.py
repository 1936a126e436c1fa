"""How fast an input pipeline delivers batches on its own, with no model consuming them.

Set beside a training run's images/s (`metrics.json`: `images_per_second`), it says whether the
pipeline could be the bottleneck: when the pipeline alone delivers images several times faster
than the step consumes them, it is not.
"""
import time

from keypoint_gnn._backend import tf


def _batch_size(element):
    """Examples in one pipeline element: (images, labels) or images, batch first."""
    images = element[0] if isinstance(element, (tuple, list)) else element
    return int(tf.shape(images)[0])


def pipeline_images_per_second(dataset, batches=20, warmup=2):
    """Images per second `dataset` yields when nothing else runs: `warmup` batches are drawn
    first (start-up, shuffle buffer, file cache opening), then `batches` more are timed.

    Args:
      dataset: a batched tf.data.Dataset of images or (images, labels); a dataset shorter
        than warmup + batches is repeated.
      batches: timed batches, >= 1.
      warmup: untimed batches drawn first, >= 0.

    Returns:
      {"images_per_second", "images", "batches", "seconds"} of the timed batches.
    """
    if not isinstance(batches, int) or batches < 1:
        raise ValueError(f"batches={batches!r} must be an integer >= 1")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be an integer >= 0")
    iterator = iter(dataset.repeat().take(warmup + batches))
    try:
        for _ in range(warmup):
            next(iterator)
    except StopIteration:
        raise ValueError("the dataset yields no batches") from None
    images = 0
    start = time.perf_counter()
    for element in iterator:
        images += _batch_size(element)
    seconds = time.perf_counter() - start
    if not images:
        raise ValueError("the dataset yields no batches")
    return {"images_per_second": images / seconds if seconds > 0 else float("inf"),
            "images": images, "batches": batches, "seconds": seconds}
