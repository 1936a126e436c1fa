"""The built-in data set: constellations of identical parts on clutter, generated in NumPy.

Each image shows `num_parts` copies of one small marker (a white ring around a black gap and a
white centre dot, 5x5 pixels at 48 px; a 3x3 ring below 44 px; the same for every class) on a
cluttered background of smooth colour, pixel noise, lines and solid blobs. The class is the
geometric arrangement of the parts: every class owns a fixed template constellation, and an
image places its class's template with a random translation, scale, rotation (up to
±`max_rotation_degrees`) and ±`jitter` pixels per part. Any one part, or any patch, looks the same
in every class; only the relative positions of parts far apart tell the class, which is what a
keypoint graph is meant to capture and what a local CNN feature cannot.

The templates depend on `template_seed` only, so every data `seed` draws images of the same
classes. Generation is vectorised: 6,000 images of 48x48 take about a second on one core.

Positions follow `keypoint_gnn.ops`: `(y, x)` in image pixels, pixel `(i, j)` centred at `(i, j)`.
"""
from __future__ import annotations

import dataclasses
import itertools
import typing

import numpy as np

MARKER_PATTERN = np.array(
    [
        [0, 1, 1, 1, 0],
        [1, 0, 0, 0, 1],
        [1, 0, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [0, 1, 1, 1, 0],
    ],
    dtype=np.uint8,
)
"""The part marker from 44 px up, 1 = white, 0 = black; enlarged by round(image_size / 48)."""

SMALL_MARKER_PATTERN = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.uint8)
"""The part marker below 44 px, where a 5x5 one leaves too little room between parts."""

MIN_IMAGE_SIZE = 32
_CHUNK = 512  # images rendered at once: bounds the (chunk, k, S, S) mask arrays


@dataclasses.dataclass(frozen=True)
class BuiltinOptions:
    """What the generated data set looks like; `load_dataset(builtin_options=...)` takes it, and
    `parse_options` makes it from a spec such as `builtin:num_classes=10,scale_range=0.4-0.8`.

    Attributes:
      num_examples: images over all splits, divided by `load_dataset`'s fractions.
      num_classes: constellation classes, >= 2.
      num_parts: parts per image (P), in [3, 6].
      num_distractors: solid blobs per image, a different shape from the part marker.
      num_lines: clutter line segments per image.
      max_rotation_degrees: each image's constellation turns by U(-r, r) degrees. The default,
        180, shows every class in every orientation: where a part lies in the image then says
        nothing about the class, only the parts' positions relative to each other do. (With
        45 degrees, every model reached 98-99% in 8 epochs, the "CNN only" baseline included:
        a classifier head that sees absolute positions learnt the few orientations directly.)
      scale_range: (low, high) side of the constellation's bounding box as a fraction of the
        image side; capped so that every part stays inside the margin.
      jitter: each part moves by U(-jitter, jitter) image pixels, independently in y and x.
      template_seed: seed of the class templates, separate from the data seed.
    """

    num_examples: int = 6000
    num_classes: int = 6
    num_parts: int = 4
    num_distractors: int = 6
    num_lines: int = 3
    max_rotation_degrees: float = 180.0
    scale_range: tuple[float, float] = (0.45, 0.85)
    jitter: float = 1.5
    template_seed: int = 2021

    def __post_init__(self):
        _require(self.num_examples >= 1, f"num_examples={self.num_examples} must be >= 1")
        _require(self.num_classes >= 2, f"num_classes={self.num_classes} must be >= 2")
        # Two parts make one shape up to rotation; beyond six, matching parts costs P! steps.
        _require(3 <= self.num_parts <= 6, f"num_parts={self.num_parts} must be in [3, 6]")
        _require(self.num_distractors >= 0, f"num_distractors={self.num_distractors} must be >= 0")
        _require(self.num_lines >= 0, f"num_lines={self.num_lines} must be >= 0")
        _require(
            0 <= self.max_rotation_degrees <= 180,
            f"max_rotation_degrees={self.max_rotation_degrees} must be in [0, 180]",
        )
        low, high = self.scale_range
        _require(
            0.2 <= low <= high <= 1.0,
            f"scale_range={self.scale_range} must satisfy 0.2 <= low <= high <= 1",
        )
        _require(0 <= self.jitter <= 3, f"jitter={self.jitter} must be in [0, 3] pixels")


@dataclasses.dataclass
class ConstellationImages:
    """Generated images with their ground truth.

    Attributes:
      images: (N, S, S, 3) uint8 RGB.
      labels: (N,) int32 class indices in [0, num_classes).
      part_positions: (N, P, 2) float32 (y, x) of each marker's centre in image pixels.
      templates: (num_classes, P, 2) float64 class constellations, (y, x) in a unit box
        centred on 0.
    """

    images: np.ndarray
    labels: np.ndarray
    part_positions: np.ndarray
    templates: np.ndarray


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def parse_options(text: str) -> BuiltinOptions:
    """`BuiltinOptions` from the `KEY=VALUE,...` text after `builtin:` in a `--dataset` spec.

    Keys are `BuiltinOptions` fields, each at most once; the others keep their defaults. Values
    are converted by the field's type: int fields take integers only ("4.5" is an error), float
    fields any number, and `scale_range` takes "LOW-HIGH", e.g.
    `max_rotation_degrees=45,num_classes=10,scale_range=0.4-0.8`. `BuiltinOptions` then checks
    the ranges.

    Raises:
      ValueError: empty text, an item without "=", an unknown or repeated key, or a value that
        does not convert or is out of range; the message names the key or value and lists the
        valid keys.
    """
    types = typing.get_type_hints(BuiltinOptions)
    valid = ", ".join(types)
    if not text.strip():
        raise ValueError(f"builtin options are empty; give KEY=VALUE pairs separated by commas, "
                         f"e.g. 'builtin:num_classes=10', with keys from {valid}")
    values = {}
    for item in text.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key or not value:
            raise ValueError(f"builtin option {item.strip()!r} must be KEY=VALUE with a key from "
                             f"{valid}")
        if key not in types:
            raise ValueError(f"builtin option {key!r} is not one of {valid}")
        if key in values:
            raise ValueError(f"builtin option {key} is given twice")
        values[key] = _convert_option(key, value, types[key])
    return BuiltinOptions(**values)


def _convert_option(key: str, value: str, kind):
    """`value` as a `kind` (int, float or tuple[float, float]) for `parse_options`."""
    try:
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        low, high = value.split("-")  # ValueError unless exactly one "-"
        return (float(low), float(high))
    except ValueError:
        expected = {int: "an integer", float: "a number"}.get(kind, "LOW-HIGH, e.g. 0.4-0.8")
        raise ValueError(f"builtin option {key}={value!r} must be {expected}") from None


def marker(image_size: int) -> np.ndarray:
    """(m, m) uint8 part marker drawn at `image_size`, 1 = white, 0 = black, m odd."""
    if image_size < 44:
        return SMALL_MARKER_PATTERN
    scale = max(1, round(image_size / 48))
    return np.kron(MARKER_PATTERN, np.ones((scale, scale), dtype=np.uint8))


def part_margin(image_size: int) -> int:
    """Smallest distance in pixels from a part centre to the image border.

    Half a marker, one pixel, and the largest shift of the pipeline's crop augmentation
    (`image_size // 12`), so that a shifted crop never cuts a part.
    """
    return marker(image_size).shape[0] // 2 + 1 + image_size // 12


def _normalised(points: np.ndarray) -> np.ndarray:
    """(P, 2) points centred on their mean and scaled to unit root-mean-square radius."""
    centred = points - points.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1).mean())


def constellation_distance(a: np.ndarray, b: np.ndarray, max_rotation_degrees: float) -> float:
    """How far apart two (P, 2) constellations are under the images' transformations.

    Both are normalised for translation and scale; the distance is the root-mean-square part
    distance, minimised over the matchings of identical parts and over the relative rotations
    that two images can show (up to twice `max_rotation_degrees`). 0 means indistinguishable.
    For a matching, the squared distance is 2 - 2 |c| cos(angle - arg c) with
    c = sum(conj(a) b) over parts in complex form, so the best allowed angle is arg c clipped
    to the allowed range.
    """
    a, b = _normalised(a), _normalised(b)
    a_complex, b_complex = a[:, 1] + 1j * a[:, 0], b[:, 1] + 1j * b[:, 0]
    orders = np.array(list(itertools.permutations(range(len(b)))))  # (P!, P)
    overlap = (np.conj(a_complex) * b_complex[orders]).mean(axis=1)  # (P!,)
    limit = np.deg2rad(min(2 * max_rotation_degrees, 180.0))
    angle = np.clip(np.angle(overlap), -limit, limit)
    squared = 2 - 2 * np.real(overlap * np.exp(-1j * angle))
    return float(np.sqrt(max(squared.min(), 0.0)))


def _spread_out_points(num_parts: int, rng: np.random.Generator) -> np.ndarray:
    """(P, 2) uniform points stretched to the unit box centred on 0 (side 1), redrawn until
    every two are at least 0.8 / sqrt(P) apart."""
    min_distance = 0.8 / np.sqrt(num_parts)
    upper = np.triu_indices(num_parts, 1)
    while True:
        points = rng.uniform(0.0, 1.0, size=(num_parts, 2))
        extent = points.max(axis=0) - points.min(axis=0)
        points = (points - points.min(axis=0) - extent / 2) / extent.max()
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1)[upper]
        if gaps.min() >= min_distance:
            return points


def class_templates(options: BuiltinOptions) -> np.ndarray:
    """(num_classes, P, 2) constellations, each in the unit box [-0.5, 0.5]^2 with side 1.

    Drawn by rejection from `options.template_seed`: parts of one template are at least
    0.8 / sqrt(P) apart (so markers never overlap), and templates differ pairwise by at least a
    `constellation_distance` threshold that starts at 0.6 and is relaxed when no more fit.
    """
    rng = np.random.default_rng(options.template_seed)
    threshold, failures = 0.6, 0
    templates: list[np.ndarray] = []
    while len(templates) < options.num_classes:
        points = _spread_out_points(options.num_parts, rng)
        if all(constellation_distance(points, other, options.max_rotation_degrees) >= threshold
               for other in templates):
            templates.append(points)
            continue
        failures += 1
        if failures % 300 == 0:
            threshold *= 0.85
            _require(
                threshold >= 0.15,
                f"cannot make num_classes={options.num_classes} distinguishable constellations "
                f"of num_parts={options.num_parts} parts; use fewer classes or more parts",
            )
    return np.stack(templates)


def _min_part_distance(points: np.ndarray) -> np.ndarray:
    """(N,) smallest distance between two parts of each (N, P, 2) constellation."""
    gaps = np.linalg.norm(points[:, :, None] - points[:, None], axis=-1)
    upper = np.triu_indices(points.shape[1], 1)
    return gaps[:, upper[0], upper[1]].min(axis=1)


def _place_parts(labels, templates, image_size, rng, options):
    """(N, P, 2) integer part centres: templates turned, scaled, shifted and jittered.

    Markers never touch: each constellation is scaled up, if needed, until its closest parts
    are a marker side plus a pixel apart after rounding; an image whose jitter would bring two
    parts closer than that keeps its parts unjittered.
    """
    count, jitter = len(labels), options.jitter
    margin = part_margin(image_size)
    room = image_size - 1 - 2 * margin - 2 * jitter
    min_gap = marker(image_size).shape[0] + 1
    angles = np.deg2rad(rng.uniform(-1, 1, count) * options.max_rotation_degrees)
    cos, sin = np.cos(angles), np.sin(angles)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    points = np.einsum("nij,npj->npi", rotation, templates[labels])
    extent = (points.max(axis=1) - points.min(axis=1)).max(axis=1)  # (N,)
    needed = (min_gap + 1.5) * extent / _min_part_distance(points)  # 1.5 > rounding's sqrt(2)
    if np.any(needed > room):
        raise ValueError(
            f"image_size={image_size} is too small to keep the {options.num_parts} parts of "
            f"every class {min_gap} pixels apart; use a larger image_size or a smaller jitter "
            f"(jitter={jitter})")
    side = np.clip(rng.uniform(*options.scale_range, count) * image_size, needed, room)
    points = points * (side / extent)[:, None, None]
    low = margin + jitter - points.min(axis=1)  # (N, 2) range of the shift
    high = image_size - 1 - margin - jitter - points.max(axis=1)
    points = points + rng.uniform(low, np.maximum(low, high))[:, None, :]
    jittered = np.round(points + rng.uniform(-jitter, jitter, points.shape))
    too_close = _min_part_distance(jittered) < min_gap
    jittered[too_close] = np.round(points[too_close])
    return np.clip(jittered, margin, image_size - 1 - margin).astype(np.int64)


def _background(count, image_size, rng):
    """(N, S, S, 3) float smooth colour field from a 4x4 grid, plus pixel noise."""
    grid = rng.uniform(0.1, 0.7, size=(count, 4, 4, 3))
    coords = np.linspace(0, 3, image_size)
    lower = np.minimum(np.floor(coords).astype(int), 2)
    weight = coords - lower
    interp = np.zeros((image_size, 4))
    interp[np.arange(image_size), lower] = 1 - weight
    interp[np.arange(image_size), lower + 1] = weight
    smooth = (interp @ grid.transpose(0, 3, 1, 2) @ interp.T).transpose(0, 2, 3, 1)  # (N, S, S, 3)
    noise = rng.standard_normal(size=smooth.shape, dtype=np.float32) * 0.05
    return (smooth + noise).astype(np.float32)


def _draw_lines(images, rng, num_lines):
    """One-pixel line segments between random points, in random dark-to-mid colours."""
    count, size = images.shape[:2]
    rows = np.repeat(np.arange(count), 2 * size)
    steps = np.linspace(0, 1, 2 * size)
    for _ in range(num_lines):
        start = rng.uniform(0, size - 1, size=(count, 1, 2))
        end = rng.uniform(0, size - 1, size=(count, 1, 2))
        colour = rng.uniform(0.0, 0.8, size=(count, 3)).astype(np.float32)
        pixels = np.round(start + steps[None, :, None] * (end - start)).astype(np.int64)
        images[rows, pixels[..., 0].ravel(), pixels[..., 1].ravel()] = np.repeat(
            colour, 2 * size, axis=0)


def _draw_blobs(images, rng, num_blobs):
    """Solid discs and squares of radius 1.5-3.5 px (at 48 px) in colours never white."""
    count, size = images.shape[:2]
    scale = size / 48
    reach = int(np.ceil(3.5 * scale))
    rows = np.arange(count)
    for _ in range(num_blobs):
        centre = rng.uniform(0, size - 1, size=(count, 2))
        radius = rng.uniform(1.5, 3.5, size=count) * scale
        colour = rng.uniform(0.0, 0.85, size=(count, 3)).astype(np.float32)
        is_square = rng.random(count) < 0.5
        anchor = np.round(centre).astype(np.int64)
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                y, x = anchor[:, 0] + dy, anchor[:, 1] + dx
                off_y, off_x = np.abs(y - centre[:, 0]), np.abs(x - centre[:, 1])
                inside = np.where(is_square, np.maximum(off_y, off_x) <= radius,
                                  off_y**2 + off_x**2 <= radius**2)
                inside &= (y >= 0) & (y < size) & (x >= 0) & (x < size)
                images[rows[inside], y[inside], x[inside]] = colour[inside]


def _draw_markers(images, part_positions):
    pattern = marker(images.shape[1]).astype(np.float32)
    half = pattern.shape[0] // 2
    rows = np.arange(len(images))
    for part in range(part_positions.shape[1]):
        for dy, dx in np.ndindex(pattern.shape):
            y = part_positions[:, part, 0] + dy - half
            x = part_positions[:, part, 1] + dx - half
            images[rows, y, x, :] = pattern[dy, dx]


def render_constellations(labels, image_size, rng, options=BuiltinOptions(), templates=None):
    """Draws one image per label.

    Args:
      labels: (N,) int class indices in [0, options.num_classes).
      image_size: side S of the square images in pixels, >= 32.
      rng: `np.random.Generator`, the only source of randomness.
      options: `BuiltinOptions`.
      templates: (num_classes, P, 2) from `class_templates(options)`; computed when None.

    Returns:
      `ConstellationImages` with images (N, S, S, 3) uint8 and part_positions (N, P, 2).
    """
    _require(image_size >= MIN_IMAGE_SIZE,
             f"image_size={image_size} is too small for the built-in set; use >= {MIN_IMAGE_SIZE}")
    labels = np.asarray(labels, dtype=np.int32)
    templates = class_templates(options) if templates is None else templates
    _require(labels.size == 0 or (labels.min() >= 0 and labels.max() < len(templates)),
             f"labels must be in [0, {len(templates)})")
    images = np.empty((len(labels), image_size, image_size, 3), dtype=np.uint8)
    positions = np.empty((len(labels), options.num_parts, 2), dtype=np.float32)
    for start in range(0, len(labels), _CHUNK):
        chunk = labels[start:start + _CHUNK]
        parts = _place_parts(chunk, templates, image_size, rng, options)
        canvas = _background(len(chunk), image_size, rng)
        _draw_lines(canvas, rng, options.num_lines)
        _draw_blobs(canvas, rng, options.num_distractors)
        _draw_markers(canvas, parts)
        images[start:start + len(chunk)] = np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
        positions[start:start + len(chunk)] = parts
    return ConstellationImages(images, labels, positions, templates)


def balanced_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(count,) int32 labels with every class count within one of the others, shuffled."""
    return rng.permutation(np.arange(count) % num_classes).astype(np.int32)


def generate_splits(
    image_size: int = 48,
    seed: int = 0,
    split_sizes: dict[str, int] | None = None,
    options: BuiltinOptions = BuiltinOptions(),
) -> dict[str, ConstellationImages]:
    """Generates class-balanced splits, deterministic for (seed, image_size, options).

    Args:
      image_size: side of the square images in pixels.
      seed: data seed; the class templates depend on `options.template_seed` only.
      split_sizes: {"train": n, "validation": n, "test": n}; by default 80/10/10% of
        `options.num_examples`.
      options: `BuiltinOptions`.

    Returns:
      {split name: `ConstellationImages`}; the splits are independent draws.
    """
    if split_sizes is None:
        held_out = round(options.num_examples * 0.1)
        split_sizes = {"train": options.num_examples - 2 * held_out,
                       "validation": held_out, "test": held_out}
    templates = class_templates(options)
    rng = np.random.default_rng(seed)
    splits = {}
    for name, count in split_sizes.items():
        labels = balanced_labels(count, options.num_classes, rng)
        splits[name] = render_constellations(labels, image_size, rng, options, templates)
    return splits
