"""Classify images and find their keypoints with an exported model:

  python -m trainers.predict --model saved_models/NAME [IMAGE ...]     newest version
  python -m trainers.predict --model saved_models/NAME/3 IMAGE ...      one version
  python -m trainers.predict --tflite tflite_models/NAME.tflite IMAGE ...
  python -m trainers.predict --server http://localhost:8501 --name NAME IMAGE ...   TF Serving REST
  python -m trainers.predict --grpc localhost:8500 --name NAME IMAGE ...            TF Serving gRPC

Images: PNG, JPEG, GIF, BMP files, or .npy uint8 arrays (H, W) or (H, W, C). Prints the top
classes (with names when the export has them, or --labels) and the keypoints (y, x) in pixels
of each image; --draw OUT.png draws the keypoints (OUT-<i>.png for several images).
"""
import io
import json
import pathlib
import sys

import numpy as np

from keypoint_gnn.export.client import (
    DEFAULT_TIMEOUT,
    ServingError,
    grpc_predict,
    rest_predict,
)
from keypoint_gnn.export.signatures import SERVING_BYTES, SERVING_DEFAULT
from trainers import common

MAX_PRINTED_KEYPOINTS = 8


def build_parser():
    parser = common.parser_for(__doc__, "predict")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, GIF, BMP) or .npy")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="saved_models/NAME (newest version) or saved_models/NAME/V")
    where.add_argument("--tflite", help="a .tflite file from trainers.export")
    where.add_argument("--server", help="TF Serving REST address, e.g. http://localhost:8501")
    where.add_argument("--grpc", help="TF Serving gRPC address, e.g. localhost:8500")
    parser.add_argument("--name", help="model name on the server (--server, --grpc; required "
                                       "with them)")
    parser.add_argument("--version", type=int, default=None,
                        help="model version on the server (default: the server's newest)")
    parser.add_argument("--signature", choices=(SERVING_BYTES, SERVING_DEFAULT),
                        default=SERVING_BYTES,
                        help="server signature: encoded files in one request (serving_bytes) "
                             "or decoded pixels, one request per image (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for the server (default %(default)s)")
    parser.add_argument("--labels", help="class names, one per line (default: the export's)")
    parser.add_argument("--top", type=int, default=3,
                        help="classes printed per image (default %(default)s)")
    parser.add_argument("--draw", help="PNG with the keypoints drawn on the image(s) "
                                       "(default: none drawn)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per image (default: readable text)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.server or args.grpc) and not args.name:
        raise common.UserError("--server and --grpc need --name, the model name on the server")
    if args.timeout <= 0:
        raise common.UserError(f"--timeout={args.timeout} must be a positive number of seconds")
    if args.top < 1:
        raise common.UserError(f"--top={args.top} must be at least 1")
    if args.grpc:
        require_serving_extra()
    if args.draw:
        _check_draw(args.draw)
    return args


SERVING_EXTRA_MODULES = ("grpc", "tensorflow_serving.apis.predict_pb2",
                         "tensorflow_serving.apis.prediction_service_pb2_grpc")


def require_serving_extra():
    """UserError unless the gRPC client's packages (the `serving` extra) import."""
    import importlib

    for module in SERVING_EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as error:  # ModuleNotFoundError, or a broken installation
            missing = getattr(error, "name", None) or module
            raise common.UserError("--grpc needs the serving extra: pip install -e "
                                   f"'.[serving]' (cannot import {missing})") from None


def _check_draw(draw):
    draw = pathlib.Path(draw)
    folder = draw.parent
    if draw.is_dir():
        raise common.UserError(f"--draw {str(draw)!r} is a folder; name a .png file")
    if not folder.is_dir():
        raise common.UserError(f"--draw {str(draw)!r}: folder {str(folder)!r} does not exist")


def _encode_png(pixels):
    from PIL import Image

    modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                            modes[pixels.shape[-1]])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_image(path):
    """An image file or .npy -> (uint8 (H, W, C) pixels, C in 1..4; encoded bytes).

    Raises UserError naming the file: missing, unreadable, wrong dtype or channel count.
    """
    from PIL import Image, UnidentifiedImageError

    path = pathlib.Path(path)
    if path.is_dir():
        raise common.UserError(f"image {str(path)!r} is a folder, not an image file")
    if not path.is_file():
        raise common.UserError(f"image {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            pixels = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise common.UserError(f"cannot read image {str(path)!r}: {error}") from None
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.dtype != np.uint8 or pixels.ndim != 3:
            raise common.UserError(f"image {str(path)!r} must be a uint8 (H, W) or (H, W, C) "
                                   f"array, got dtype {pixels.dtype} shape {pixels.shape}")
        if not 1 <= pixels.shape[-1] <= 4:
            raise common.UserError(
                f"image {str(path)!r} has {pixels.shape[-1]} channels; valid: 1 (grey), "
                "2 (grey+alpha), 3 (RGB) or 4 (RGBA)")
        if min(pixels.shape[:2]) < 1:
            raise common.UserError(f"image {str(path)!r} is empty: shape {pixels.shape}")
        return pixels, _encode_png(pixels)
    try:
        encoded = path.read_bytes()
    except OSError as error:
        raise common.UserError(f"cannot read image {str(path)!r}: {error.strerror or error}") \
            from None
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            if image.mode in ("L", "LA", "RGB", "RGBA"):
                converted = image
            elif image.mode in ("1", "I", "I;16", "F"):
                converted = image.convert("L")
            else:  # P, CMYK, YCbCr, ...
                converted = image.convert("RGBA" if "transparency" in image.info else "RGB")
            pixels = np.asarray(converted, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise common.UserError(_too_large(path, encoded)) from None
    except UnidentifiedImageError:
        raise common.UserError(f"cannot read image {str(path)!r}: not an image file Pillow "
                               "can read; valid: PNG, JPEG, GIF, BMP (and other formats Pillow "
                               "reads) or a .npy uint8 array") from None
    except Exception as error:  # noqa: BLE001  (Pillow raises many types on damaged files)
        raise common.UserError(f"cannot read image {str(path)!r}: "
                               f"{str(error) or type(error).__name__}") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".gif", ".bmp"):
        encoded = _encode_png(pixels)  # TF decodes these four formats only
    return pixels, encoded


def _too_large(path, encoded):
    """The message for an image over Pillow's decompression-bomb limit: its size, read from the
    header with the limit lifted (nothing is decoded)."""
    from PIL import Image

    limit = 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses above twice MAX_IMAGE_PIXELS
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
        size = f"{width * height:,} pixels ({width} x {height})"
    except Exception:  # noqa: BLE001 (only the message depends on it)
        size = "too many pixels"
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    return (f"image {str(path)!r} has {size}, over Pillow's limit of {limit:,} pixels against "
            "decompression bombs; downscale it (the model sees it at its own small size anyway)")


def _read_labels(path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise common.UserError(f"--labels {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise common.UserError(f"cannot read --labels {str(path)!r}: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


class LocalSavedModel:
    def __init__(self, path):
        from keypoint_gnn._backend import tf
        from keypoint_gnn.export.saved_model import (
            read_export_info,
            resolve_version_dir,
        )

        try:
            self.version_dir = resolve_version_dir(path)
        except FileNotFoundError as error:
            raise common.UserError(str(error)) from None
        info = read_export_info(self.version_dir)
        self.class_names = info.get("class_names")
        try:
            signatures = tf.saved_model.load(str(self.version_dir)).signatures
        except (OSError, ValueError, tf.errors.OpError) as error:  # a damaged version
            detail = (str(error).strip().splitlines() or [""])[0]
            raise common.UserError(f"cannot load the SavedModel {str(self.version_dir)!r}: "
                                   f"{detail}") from None
        if SERVING_DEFAULT not in signatures:
            raise common.UserError(f"SavedModel {str(self.version_dir)!r} has no "
                                   f"{SERVING_DEFAULT!r} signature (it has "
                                   f"{sorted(signatures)}): export it with trainers.export")
        self._signature = signatures[SERVING_DEFAULT]
        self._tf = tf

    def predict(self, pixels_list, encoded_list):
        rows = []
        for pixels in pixels_list:
            outputs = self._signature(images=self._tf.constant(pixels[None]))
            rows.append({key: value.numpy()[0] for key, value in outputs.items()})
        return rows


class LocalTFLite:
    def __init__(self, path):
        from keypoint_gnn.export.tflite import TFLiteClassifier

        try:
            self._classifier = TFLiteClassifier(path)
        except (FileNotFoundError, ValueError) as error:
            raise common.UserError(str(error)) from None
        self.class_names = self._classifier.class_names

    def predict(self, pixels_list, encoded_list):
        # All images in one invocation: each is preprocessed at its own size, then batched.
        if not pixels_list:
            return []
        outputs = self._classifier.predict(list(pixels_list))
        return [{key: value[i] for key, value in outputs.items()}
                for i in range(len(pixels_list))]


class RemoteServer:
    """TF Serving over REST (`call=rest_predict`) or gRPC (`call=grpc_predict`)."""

    def __init__(self, call, address, name, version, signature, timeout):
        self.class_names = None
        self._call = lambda payload, signature: call(address, name, payload, signature,
                                                     version=version, timeout=timeout)
        self._signature = signature

    def predict(self, pixels_list, encoded_list):
        try:
            if self._signature == SERVING_BYTES:
                outputs = self._call(encoded_list, SERVING_BYTES)
                return [{key: value[i] for key, value in outputs.items()}
                        for i in range(len(encoded_list))]
            rows = []
            for pixels in pixels_list:
                outputs = self._call([pixels], SERVING_DEFAULT)
                rows.append({key: value[0] for key, value in outputs.items()})
            return rows
        except ServingError as error:
            raise common.UserError(str(error)) from None


def make_backend(args):
    if args.model:
        return LocalSavedModel(args.model)
    if args.tflite:
        return LocalTFLite(args.tflite)
    if args.server:
        return RemoteServer(rest_predict, args.server, args.name, args.version, args.signature,
                            args.timeout)
    return RemoteServer(grpc_predict, args.grpc, args.name, args.version, args.signature,
                        args.timeout)


def describe(path, row, class_names, top):
    """One image's result as a JSON-ready dict."""
    probabilities = np.asarray(row["probabilities"], dtype=np.float64)
    order = [int(i) for i in np.asarray(row["top_classes"])][:top]

    def class_name(index):
        return class_names[index] if class_names and index < len(class_names) else str(index)

    return {
        "image": str(path),
        "top_classes": [{"class": index, "name": class_name(index),
                         "probability": float(probabilities[index])} for index in order],
        "keypoints": np.asarray(row["keypoints"], dtype=np.float64).round(2).tolist(),
        "keypoint_scores": np.asarray(row["keypoint_scores"], dtype=np.float64).round(4).tolist(),
    }


def format_result(result):
    classes = "  ".join(f"{c['name']} {c['probability']:.3f}" for c in result["top_classes"])
    points = [f"({y:.1f}, {x:.1f}) {s:.2f}" for (y, x), s in
              zip(result["keypoints"], result["keypoint_scores"])]
    shown = ", ".join(points[:MAX_PRINTED_KEYPOINTS])
    more = f", ... ({len(points)} in all)" if len(points) > MAX_PRINTED_KEYPOINTS else ""
    return f"{result['image']}: {classes}\n  keypoints (y, x) px, score: {shown}{more}"


def draw_paths(draw, count):
    draw = pathlib.Path(draw)
    if count == 1:
        return [draw]
    return [draw.with_name(f"{draw.stem}-{i}{draw.suffix or '.png'}") for i in range(count)]


def main(argv=None):
    args = parse_args(argv)
    images = [read_image(path) for path in args.images]
    backend = make_backend(args)
    class_names = _read_labels(args.labels) if args.labels else backend.class_names
    rows = backend.predict([pixels for pixels, _ in images], [encoded for _, encoded in images])
    results = [describe(path, row, class_names, args.top) for path, row in zip(args.images, rows)]
    for result in results:
        print(json.dumps(result) if args.json else format_result(result))
    if args.draw:
        from keypoint_gnn import viz

        for (pixels, _), row, out in zip(images, rows, draw_paths(args.draw, len(images))):
            shown = pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., :1]
            try:
                viz.draw_keypoints(shown[None], np.asarray(row["keypoints"])[None], out,
                                   scores=np.asarray(row["keypoint_scores"])[None], ncols=1)
            except OSError as error:
                raise common.UserError(f"cannot write --draw {str(out)!r}: "
                                       f"{error.strerror or error}") from None
            print(f"drew keypoints on {out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    common.run_main(main)
