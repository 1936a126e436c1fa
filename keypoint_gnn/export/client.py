"""Client side of TF Serving: requests for the exported signatures, over REST or gRPC.

The exported model (`keypoint_gnn.export.saved_model`) has two signatures:

  serving_default  input `images`       uint8 (B, H, W, C), one size per request
  serving_bytes    input `image_bytes`  string (B,), encoded images, sizes may differ

REST (TF Serving's documented format, row / "instances" form):

  POST http://HOST:8501/v1/models/<name>[/versions/<v>]:predict
  {"signature_name": "serving_default", "instances": [<H x W x C nested lists>, ...]}
  {"signature_name": "serving_bytes",   "instances": [{"b64": "<base64>"}, ...]}
  -> {"predictions": [{"probabilities": [...], "top_classes": [...], ...}, ...]}

gRPC: `tensorflow.serving.PredictRequest` with `model_spec.name`, `model_spec.signature_name`
and one `TensorProto` input, sent to `PredictionService/Predict` on HOST:8500.

Request builders and response parsers are pure functions; `rest_predict` and `grpc_predict`
do the network call and turn every network failure into a `ServingError` naming the server.
"""
from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request

import numpy as np

from keypoint_gnn.export.signatures import INPUT_KEYS, SERVING_BYTES, SERVING_DEFAULT

DEFAULT_TIMEOUT = 10.0
_GRPC_MAX_MESSAGE = 256 * 1024 * 1024


class ServingError(RuntimeError):
    """The server could not be reached, did not answer in time, or answered with an error."""


def _check_signature(signature):
    if signature not in INPUT_KEYS:
        raise ValueError(f"signature={signature!r} is not one of "
                         f"{', '.join(map(repr, INPUT_KEYS))}")


def _stack_pixels(images):
    """A list of uint8 (H, W, C) arrays of one shape, or a uint8 (B, H, W, C) array -> array."""
    arrays = [np.asarray(image) for image in images]
    if not arrays:
        raise ValueError("no images given")
    shapes = {array.shape for array in arrays}
    if len(shapes) != 1:
        raise ValueError(f"serving_default takes images of one size per request, got shapes "
                         f"{sorted(shapes)}; send them one at a time or use serving_bytes")
    for array in arrays:
        if array.dtype != np.uint8 or array.ndim != 3:
            raise ValueError(f"images must be uint8 (H, W, C) arrays, got dtype {array.dtype} "
                             f"shape {array.shape}")
    return np.stack(arrays)


def _check_bytes(encoded_images):
    encoded = list(encoded_images)
    if not encoded:
        raise ValueError("no images given")
    for item in encoded:
        if not isinstance(item, (bytes, bytearray)):
            raise TypeError(f"serving_bytes takes encoded images as bytes, got "
                             f"{type(item).__name__}")
    return [bytes(item) for item in encoded]


def build_rest_request(images_or_bytes, signature=SERVING_DEFAULT):
    """The JSON body of a TF Serving REST predict call.

    Args:
      images_or_bytes: for "serving_default", uint8 (B, H, W, C) or a list of uint8 (H, W, C)
        arrays of one shape; for "serving_bytes", a list of encoded images (bytes).
      signature: "serving_default" or "serving_bytes".

    Returns:
      dict: {"signature_name": signature, "instances": [...]}, with pixel instances as nested
      lists and byte instances as {"b64": base64 text}.
    """
    _check_signature(signature)
    if signature == SERVING_BYTES:
        instances = [{"b64": base64.b64encode(item).decode("ascii")}
                     for item in _check_bytes(images_or_bytes)]
    else:
        instances = _stack_pixels(images_or_bytes).tolist()
    return {"signature_name": signature, "instances": instances}


def rest_url(server, name, version=None):
    """http://HOST:8501 + model name (+ version) -> the predict URL."""
    server = server.rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise ValueError(f"server={server!r} must start with http:// or https:// "
                         "(e.g. http://localhost:8501)")
    if not name or "/" in name:
        raise ValueError(f"model name={name!r} must be a non-empty name without '/'")
    versioned = f"/versions/{int(version)}" if version is not None else ""
    return f"{server}/v1/models/{name}{versioned}:predict"


def parse_rest_response(body):
    """A REST predict response -> {output name: numpy array with a batch axis}.

    Accepts the row form {"predictions": [{name: value}, ...]} (several outputs), and the
    column form {"outputs": {name: batch}}. Raises ServingError for {"error": ...}.
    """
    if not isinstance(body, dict):
        raise ServingError(f"the server answered {type(body).__name__}, not a JSON object")
    if "error" in body:
        raise ServingError(f"the server answered with an error: {body['error']}")
    if "predictions" in body:
        rows = body["predictions"]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise ServingError("'predictions' is not a non-empty list of per-image objects: "
                               "is this a model exported by keypoint_gnn.export?")
        return {key: np.asarray([row[key] for row in rows]) for key in rows[0]}
    if "outputs" in body and isinstance(body["outputs"], dict):
        return {key: np.asarray(value) for key, value in body["outputs"].items()}
    raise ServingError(f"the answer has neither 'predictions' nor 'outputs': keys "
                       f"{sorted(body)}")


def rest_predict(server, name, images_or_bytes, signature=SERVING_DEFAULT, *, version=None,
                 timeout=DEFAULT_TIMEOUT):
    """POSTs a predict request and returns `parse_rest_response` of the answer.

    Raises:
      ServingError: connection refused, no answer within `timeout` seconds (per network
        operation), an HTTP error status, or a body that is not a predict answer.
    """
    url = rest_url(server, name, version)
    data = json.dumps(build_rest_request(images_or_bytes, signature)).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")[:500]
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise ServingError(f"{url} answered HTTP {error.code}: {detail}") from None
    except TimeoutError:
        raise ServingError(f"no answer from {url} within {timeout:g} s") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, (socket.timeout, TimeoutError)):
            raise ServingError(f"no answer from {url} within {timeout:g} s") from None
        raise ServingError(f"cannot reach {url}: {error.reason}") from None
    except (ConnectionError, OSError) as error:
        raise ServingError(f"connection to {url} failed: {error}") from None
    try:
        body = json.loads(text)
    except ValueError:
        raise ServingError(f"{url} answered something that is not JSON: {text[:200]!r}") from None
    return parse_rest_response(body)


def build_grpc_request(name, images_or_bytes, signature=SERVING_DEFAULT, version=None):
    """A `tensorflow.serving.PredictRequest` for the exported signatures.

    Args:
      name: model name (`model_spec.name`).
      images_or_bytes: as for `build_rest_request`.
      signature: "serving_default" (input `images`, DT_UINT8 (B, H, W, C)) or "serving_bytes"
        (input `image_bytes`, DT_STRING (B,)).
      version: optional integer model version (`model_spec.version`).
    """
    from tensorflow_serving.apis import predict_pb2

    from keypoint_gnn._backend import tf

    _check_signature(signature)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    if signature == SERVING_BYTES:
        encoded = _check_bytes(images_or_bytes)
        tensor = tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)])
    else:
        tensor = tf.make_tensor_proto(_stack_pixels(images_or_bytes), dtype=tf.uint8)
    request.inputs[INPUT_KEYS[signature]].CopyFrom(tensor)
    return request


def parse_grpc_response(response):
    """A `PredictResponse` -> {output name: numpy array}."""
    from keypoint_gnn._backend import tf

    return {key: tf.make_ndarray(tensor) for key, tensor in response.outputs.items()}


def grpc_predict(address, name, images_or_bytes, signature=SERVING_DEFAULT, *, version=None,
                 timeout=DEFAULT_TIMEOUT):
    """Calls `PredictionService/Predict` on HOST:PORT and returns `parse_grpc_response`.

    Raises:
      ServingError: unreachable, no answer within `timeout` seconds, or an error status.
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    if "://" in address:
        raise ValueError(f"grpc address={address!r} must be HOST:PORT (e.g. localhost:8500), "
                         "without a scheme")
    request = build_grpc_request(name, images_or_bytes, signature, version)
    options = [("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE),
               ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(f"no answer from grpc://{address} within {timeout:g} s") \
                    from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingError(f"cannot reach grpc://{address}: {error.details()}") from None
            raise ServingError(f"grpc://{address} answered {code.name}: {error.details()}") \
                from None
    return parse_grpc_response(response)


__all__ = [
    "ServingError",
    "build_grpc_request",
    "build_rest_request",
    "grpc_predict",
    "parse_grpc_response",
    "parse_rest_response",
    "rest_predict",
    "rest_url",
]
