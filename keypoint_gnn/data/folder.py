"""Image folders: one sub-folder of images per class, optionally under train/val/test folders.

Layouts, checked in this order:
  - `PATH/train/<class>/`, with `PATH/val/` (or `validation/`) and/or `PATH/test/` beside it:
    those folders are the splits. A missing test split is replaced by the validation folder
    (Imagenette2's `val/` is its published held-out set, so it becomes the test split) and the
    validation split is then carved from `train/`; a missing validation split is carved from
    `train/` as well. Carving is class-stratified and seeded.
  - `PATH/<class>/`: all three splits are carved, class-stratified and seeded.

Every file is opened once with Pillow before training; files that fail are logged (count and
names), listed in `SourceData.skipped_files`, and left out. JPEG and PNG files are decoded by
TensorFlow in the pipeline; other formats (PGM, BMP, GIF, ...) by Pillow.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import re

import numpy as np
from PIL import Image

from keypoint_gnn._backend import tf
from keypoint_gnn.data.sources import SourceData, SourceSplit
from keypoint_gnn.data.splitting import limit_examples, stratified_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".gif")
_TENSORFLOW_FORMATS = ("JPEG", "PNG")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_VALIDATION_NAMES = ("val", "validation")
_MAX_NAMES_LOGGED = 20

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ScannedImage:
    """One image file that decoded.

    Attributes:
      path: the file.
      label: class index.
      grey: whether its pixels are single-channel.
      tensorflow_decodable: JPEG or PNG content, decoded by `tf.io.decode_image`.
    """

    path: str
    label: int
    grey: bool
    tensorflow_decodable: bool


def _check_image(path: str) -> tuple[bool, str, str]:
    """(grey, Pillow format, "") for a decodable file, else (False, "", error message)."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image_format, mode = image.format, image.mode
            if image_format == "JPEG":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return mode in _GREY_MODES, image_format, ""
    except Exception as error:  # noqa: BLE001  (Pillow raises many types on corrupt files)
        return False, "", f"{type(error).__name__}: {error}"


def _image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, name)))


def _natural_key(name: str) -> list:
    """Sort key that puts "s2" before "s10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _class_folders(folder: str) -> list[str]:
    return sorted((name for name in os.listdir(folder)
                   if not name.startswith(".") and os.path.isdir(os.path.join(folder, name))),
                  key=_natural_key)


def scan_class_folders(folder: str, class_names: list[str]) -> tuple[list[ScannedImage], list[str]]:
    """Opens every image under `folder/<class>/`; returns (decodable images, skipped files).

    Raises:
      FileNotFoundError: a class folder holds no file with an image extension.
      ValueError: no file under `folder` decodes.
    """
    candidates = []
    for label, name in enumerate(class_names):
        class_folder = os.path.join(folder, name)
        files = _image_files(class_folder) if os.path.isdir(class_folder) else []
        if not files and os.path.isdir(class_folder):
            raise FileNotFoundError(
                f"class folder {class_folder!r} has no images with extensions "
                f"{', '.join(IMAGE_EXTENSIONS)}")
        candidates.extend((path, label) for path in files)
    if not candidates:
        raise FileNotFoundError(f"{folder!r} holds no images with extensions "
                                f"{', '.join(IMAGE_EXTENSIONS)} in its class folders")
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        checks = list(pool.map(_check_image, [path for path, _ in candidates]))
    scanned, skipped = [], []
    for (path, label), (grey, image_format, error) in zip(candidates, checks):
        if error:
            skipped.append(f"{path} ({error})")
        else:
            scanned.append(ScannedImage(path, label, grey, image_format in _TENSORFLOW_FORMATS))
    if not scanned:
        raise ValueError(f"none of the {len(candidates)} image files under {folder!r} could be "
                         f"decoded, for example {skipped[0]}")
    return scanned, skipped


def _pillow_decode(path, channels):
    with Image.open(path.decode()) as image:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)


def _decode_dataset(images: list[ScannedImage], channels: int) -> tf.data.Dataset:
    """Dataset of (image uint8 (H, W, channels), label int32) decoded from the files."""
    paths = tf.constant([image.path for image in images], dtype=tf.string)
    labels = tf.constant([image.label for image in images], dtype=tf.int32)
    with_tensorflow = tf.constant([image.tensorflow_decodable for image in images])

    def decode(path, label, tensorflow_decodable):
        def tensorflow_branch():
            return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                      expand_animations=False, dtype=tf.uint8)

        def pillow_branch():
            return tf.numpy_function(lambda p: _pillow_decode(p, channels), [path], tf.uint8,
                                     stateful=False)

        image = tf.cond(tensorflow_decodable, tensorflow_branch, pillow_branch)
        image = tf.ensure_shape(tf.reshape(image, tf.concat([tf.shape(image)[:2], [channels]], 0)),
                                [None, None, channels])
        return image, label

    return tf.data.Dataset.from_tensor_slices((paths, labels, with_tensorflow)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE)


def _find_split_folders(root: str) -> dict[str, str] | None:
    """{"train": path, "validation": path?, "test": path?} when `root` has split folders."""
    children = _class_folders(root)
    if "train" not in children:
        return None
    folders = {"train": os.path.join(root, "train")}
    for name in _VALIDATION_NAMES:
        if name in children:
            folders["validation"] = os.path.join(root, name)
            break
    if "test" in children:
        folders["test"] = os.path.join(root, "test")
    return folders


def load_folder_source(root: str, *, seed: int, validation_fraction: float,
                       test_fraction: float, max_examples: int | None) -> SourceData:
    """Scans `root`, checks every image, and divides the images into the three splits.

    Class names are the sub-folder names of `root/train/` (or `root/`) in natural order
    (s1, s2, ..., s10). The source is greyscale (1 channel) only when every file is, else 3.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"folder:{root} is not a folder; give a folder with one "
                                "sub-folder of images per class")
    split_folders = _find_split_folders(root) or {}
    class_root = split_folders.get("train", root)
    class_names = _class_folders(class_root)
    if not class_names:
        raise FileNotFoundError(f"{class_root!r} has no class sub-folders; put each class's "
                                "images in a sub-folder named after the class")
    for name, folder in split_folders.items():
        unknown = sorted(set(_class_folders(folder)) - set(class_names))
        if unknown:
            raise ValueError(f"{folder!r} has class folders {unknown} that {class_root!r} lacks")

    scanned, skipped = {}, []
    for name, folder in (split_folders or {"all": root}).items():
        scanned[name], skipped_here = scan_class_folders(folder, class_names)
        skipped.extend(skipped_here)
    if skipped:
        logger.warning("skipped %d image files that could not be decoded: %s%s", len(skipped),
                       "; ".join(skipped[:_MAX_NAMES_LOGGED]),
                       " ..." if len(skipped) > _MAX_NAMES_LOGGED else "")

    pool_name = "train" if split_folders else "all"
    carved = {}
    origin = {name: f"{os.path.basename(split_folders[name])}/" for name in split_folders}
    if "test" not in scanned and "validation" in scanned:
        scanned["test"] = scanned.pop("validation")
        origin["test"] = origin.pop("validation")
    for name, fraction in (("validation", validation_fraction), ("test", test_fraction)):
        if name not in scanned:
            carved[name] = fraction
            origin[name] = (f"{origin.get(pool_name, 'all folders')} ({fraction:.0%}, "
                            f"class-stratified, seed {seed})")
    pool = scanned.pop(pool_name)
    if carved:
        indices = stratified_split(np.array([image.label for image in pool], np.int64), carved,
                                   seed, allow_empty=True)
        for name, index in indices.items():
            scanned[name] = [pool[i] for i in index]
    else:
        scanned["train"] = pool
    origin.setdefault("train", "all folders")

    channels = 1 if all(image.grey for images in scanned.values() for image in images) else 3
    splits = {}
    for name in ("train", "validation", "test"):
        keep = limit_examples(np.arange(len(scanned[name])), max_examples, seed)
        images = [scanned[name][i] for i in keep]
        splits[name] = SourceSplit(
            _decode_dataset(images, channels), len(images),
            labels=np.array([image.label for image in images], np.int64),
            uncapped_labels=np.array([image.label for image in scanned[name]], np.int64))
    return SourceData(
        name=f"folder:{root}",
        class_names=class_names,
        channels=channels,
        splits=splits,
        split_origin=origin,
        skipped_files=skipped,
        carved_fractions=carved,
    )

