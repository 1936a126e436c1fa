"""trainers.predict and keypoint_gnn.export.client: TF Serving request formats, local models,
user errors."""
import base64
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time
import typing
from concurrent import futures

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import export
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.export import client as serving_client
from trainers import common, predict

TINY = {"image_size": 16, "channels": 3, "num_classes": 3, "backbone": {"filters": (8,)},
        "detector": {"filters": (4,), "num_keypoints": 6},
        "graph": {"units": 8, "layers": 2, "diffpool_clusters": 3},
        "head": {"filters": (8,)}}
CANNED = {"probabilities": [0.1, 0.7, 0.2], "top_classes": [1, 2, 0],
          "keypoints": [[1.5, 2.5], [3.5, 4.5]], "keypoint_scores": [0.9, 0.8]}


@pytest.fixture
def pixels(rng):
    return rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)


def test_rest_request_pixels_is_tf_serving_row_format(pixels):
    body = serving_client.build_rest_request(pixels, "serving_default")
    assert body["signature_name"] == "serving_default"
    assert np.array_equal(np.asarray(body["instances"], dtype=np.uint8), pixels)
    json.dumps(body)  # plain JSON types only


def test_rest_request_bytes_uses_b64_objects():
    body = serving_client.build_rest_request([b"\x89PNG-a", b"jpeg-b"], "serving_bytes")
    assert body == {"signature_name": "serving_bytes",
                    "instances": [{"b64": base64.b64encode(b"\x89PNG-a").decode()},
                                  {"b64": base64.b64encode(b"jpeg-b").decode()}]}


def test_rest_request_errors(pixels):
    with pytest.raises(ValueError, match="signature='predict' is not one of"):
        serving_client.build_rest_request(pixels, "predict")
    with pytest.raises(ValueError, match="one size per request"):
        serving_client.build_rest_request([pixels[0], pixels[0, :3]], "serving_default")
    with pytest.raises(TypeError, match="bytes"):
        serving_client.build_rest_request(["not bytes"], "serving_bytes")


def test_grpc_request_proto_fields(pixels):
    request = serving_client.build_grpc_request("tiny", pixels, "serving_default", version=3)
    assert request.model_spec.name == "tiny"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 3
    tensor = request.inputs["images"]
    assert tensor.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 5, 4, 3]
    np.testing.assert_array_equal(tf.make_ndarray(tensor), pixels)

    request = serving_client.build_grpc_request("tiny", [b"a", b"bc"], "serving_bytes")
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2]
    assert list(tensor.string_val) == [b"a", b"bc"]
    assert not request.model_spec.HasField("version")


class _StandIn(http.server.BaseHTTPRequestHandler):
    """Answers POST /v1/models/tiny:predict with a canned row-format answer."""

    received: typing.ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, self.headers["Content-Type"], body))
        if self.path != "/v1/models/tiny:predict":
            self._answer(404, {"error": f"Servable not found for request: {self.path}"})
            return
        self._answer(200, {"predictions": [CANNED] * len(body["instances"])})

    def _answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def rest_server():
    _StandIn.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_rest_predict_against_stand_in(rest_server, pixels):
    outputs = serving_client.rest_predict(rest_server, "tiny", [b"x", b"y"], "serving_bytes",
                                          timeout=5)
    path, content_type, body = _StandIn.received[-1]
    assert path == "/v1/models/tiny:predict" and content_type == "application/json"
    assert body["signature_name"] == "serving_bytes"
    assert body["instances"] == [{"b64": "eA=="}, {"b64": "eQ=="}]
    np.testing.assert_allclose(outputs["probabilities"], [CANNED["probabilities"]] * 2)
    assert outputs["keypoints"].shape == (2, 2, 2)
    with pytest.raises(serving_client.ServingError, match="HTTP 404: Servable not found"):
        serving_client.rest_predict(rest_server, "other", pixels, timeout=5)


def test_predict_cli_rest_with_pixels(rest_server, tmp_path, capsys, rng):
    image = tmp_path / "a.npy"
    np.save(image, rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nowl\n")
    results = predict.main([str(image), "--server", rest_server, "--name", "tiny", "--signature",
                            "serving_default", "--labels", str(labels), "--top", "2"])
    body = _StandIn.received[-1][2]
    assert np.asarray(body["instances"]).shape == (1, 7, 9, 3)
    assert [c["name"] for c in results[0]["top_classes"]] == ["dog", "owl"]
    assert "dog 0.700" in capsys.readouterr().out


@pytest.fixture
def silent_socket():
    """A listening socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


def _closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_rest_silent_server_times_out(silent_socket, pixels):
    start = time.monotonic()
    with pytest.raises(serving_client.ServingError, match="no answer from .* within 0.5 s"):
        serving_client.rest_predict(f"http://127.0.0.1:{silent_socket}", "tiny", pixels,
                                    timeout=0.5)
    assert time.monotonic() - start < 5


def test_rest_closed_port_is_a_clear_error(pixels):
    with pytest.raises(serving_client.ServingError, match="cannot reach http://127.0.0.1"):
        serving_client.rest_predict(f"http://127.0.0.1:{_closed_port()}", "tiny", pixels,
                                    timeout=2)


def test_grpc_silent_and_closed_servers(silent_socket, pixels):
    start = time.monotonic()
    with pytest.raises(serving_client.ServingError, match="within 0.5 s|cannot reach"):
        serving_client.grpc_predict(f"127.0.0.1:{silent_socket}", "tiny", pixels, timeout=0.5)
    assert time.monotonic() - start < 5
    with pytest.raises(serving_client.ServingError, match="cannot reach grpc://"):
        serving_client.grpc_predict(f"127.0.0.1:{_closed_port()}", "tiny", pixels, timeout=2)


def test_grpc_predict_against_stand_in(pixels):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    received = []

    class StandIn(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            received.append(request)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            batch = request.inputs["images"].tensor_shape.dim[0].size
            for key, value in CANNED.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray([value] * batch)))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(StandIn(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        outputs = serving_client.grpc_predict(f"127.0.0.1:{port}", "tiny", pixels, timeout=5)
    finally:
        server.stop(0)
    assert received[0].model_spec.name == "tiny"
    assert received[0].model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(received[0].inputs["images"]), pixels)
    np.testing.assert_allclose(outputs["keypoint_scores"], [CANNED["keypoint_scores"]] * 2)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    keras.utils.set_random_seed(2)
    config = kg.ModelConfig(**TINY)
    model = kg.build_classifier(config)
    base = tmp_path_factory.mktemp("saved_models")
    export.export_saved_model(model, config, base, name="tiny", class_names=["cat", "dog", "owl"])
    return base / "tiny", model, config


def _png(tmp_path, rng, shape=(20, 24, 3), name="image.png"):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_predict_cli_local_saved_model_and_draw(tiny_export, tmp_path, rng, capsys):
    model_dir, _, _ = tiny_export
    image = _png(tmp_path, rng)
    draw = tmp_path / "out.png"
    results = predict.main([str(image), "--model", str(model_dir), "--draw", str(draw)])
    assert results[0]["top_classes"][0]["name"] in ("cat", "dog", "owl")
    assert len(results[0]["keypoints"]) == TINY["detector"]["num_keypoints"]
    keypoints = np.asarray(results[0]["keypoints"])
    assert keypoints.min() >= 0 and keypoints[:, 0].max() < 20 and keypoints[:, 1].max() < 24
    assert draw.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "keypoints (y, x)" in capsys.readouterr().out


def test_predict_cli_tflite_matches_saved_model(tiny_export, tmp_path, rng):
    model_dir, model, config = tiny_export
    tflite = export.export_tflite(model, config, tmp_path / "tiny.tflite")
    # Two images of different sizes and channels: the TFLite backend runs them as one batch.
    images = [str(_png(tmp_path, rng)), str(_png(tmp_path, rng, (12, 30), name="grey.png"))]
    from_tflite = predict.main([*images, "--tflite", str(tflite), "--json"])
    from_saved = predict.main([*images, "--model", str(model_dir / "1"), "--json"])
    assert len(from_tflite) == 2
    for tflite_result, saved_result in zip(from_tflite, from_saved):
        np.testing.assert_allclose(tflite_result["keypoints"], saved_result["keypoints"],
                                   atol=0.02)
        assert [c["class"] for c in tflite_result["top_classes"]] == \
            [c["class"] for c in saved_result["top_classes"]]


@pytest.mark.parametrize("case, message", [
    ("missing", "image .* does not exist"),
    ("garbage", "cannot read image"),
    ("channels", "has 5 channels; valid: 1 \\(grey\\)"),
    ("no_version", "no integer version directory"),
])
def test_predict_user_errors(tiny_export, tmp_path, rng, case, message):
    model_dir, _, _ = tiny_export
    image = _png(tmp_path, rng)
    if case == "missing":
        image = tmp_path / "missing.png"
    elif case == "garbage":
        image = tmp_path / "garbage.jpg"
        image.write_bytes(b"not an image")
    elif case == "channels":
        image = tmp_path / "five.npy"
        np.save(image, np.zeros((4, 4, 5), np.uint8))
    elif case == "no_version":
        model_dir = tmp_path / "empty_model"
        (model_dir / "latest").mkdir(parents=True)
    with pytest.raises(common.UserError, match=message):
        predict.main([str(image), "--model", str(model_dir)])


def test_predict_cli_exit_code_and_one_line_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trainers.predict", str(tmp_path / "nope.png"), "--server",
         f"http://127.0.0.1:{_closed_port()}", "--name", "tiny", "--timeout", "2"],
        check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    # One line, TensorFlow's own logging included, no traceback.
    assert result.stderr.strip().splitlines() == [
        f"error: image {str(tmp_path / 'nope.png')!r} does not exist"]


def test_predict_cli_unreachable_server(tmp_path, rng):
    image = _png(tmp_path, rng)
    with pytest.raises(common.UserError, match="cannot reach http://127.0.0.1"):
        predict.main([str(image), "--server", f"http://127.0.0.1:{_closed_port()}",
                      "--name", "tiny", "--timeout", "2"])


def test_predict_flags_have_help_with_defaults():
    from tests.test_export import _check_help_states_defaults

    _check_help_states_defaults(predict.build_parser(), "predict")


def test_predict_tflite_with_a_flat_config_is_a_user_error(tiny_export, tmp_path, rng):
    _, model, config = tiny_export
    tflite = export.export_tflite(model, config, tmp_path / "tiny.tflite")
    info_path = export.tflite_info_path(tflite)
    info = json.loads(info_path.read_text())
    info["config"]["gnn"] = "gcn"  # a field of the flat config before 0.2
    info_path.write_text(json.dumps(info))
    with pytest.raises(common.UserError, match=r"holds no valid ModelConfig.*unknown field gnn"):
        predict.main([str(_png(tmp_path, rng)), "--tflite", str(tflite)])


# --- Issue 24: every bad input is one line, exit 2, no traceback ------------------------------


def _cli_error(argv, capsys):
    """`python -m trainers.predict ARGV` in process: exit 2 and the one stderr line."""
    from tests.test_export import _cli_error as cli_error

    return cli_error(predict.main, argv, capsys)


def test_predict_grpc_without_the_serving_extra(tmp_path, rng, capsys, monkeypatch):
    # As if tensorflow-serving-api and grpcio were not installed: importing them fails.
    for module in list(sys.modules):
        if module.split(".")[0] in ("grpc", "tensorflow_serving"):
            monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "grpc", None)
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
    image = _png(tmp_path, rng)
    line = _cli_error([str(image), "--grpc", "localhost:8500", "--name", "tiny"], capsys)
    assert line.startswith("error: --grpc needs the serving extra: pip install -e '.[serving]'")


def test_predict_decompression_bomb_names_the_file_and_its_pixels(tmp_path, rng, capsys,
                                                                  monkeypatch):
    from PIL import Image

    image = _png(tmp_path, rng, shape=(20, 24, 3), name="huge.png")  # 480 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses above 200
    line = _cli_error([str(image), "--model", str(tmp_path / "no_model")], capsys)
    assert f"image {str(image)!r} has 480 pixels (24 x 20)" in line
    assert "over Pillow's limit of 200 pixels" in line
    assert Image.MAX_IMAGE_PIXELS == 100  # the limit lifted to read the size is put back


@pytest.mark.parametrize("case, message", [
    ("text", "not an image file Pillow can read"),
    ("empty", "not an image file Pillow can read"),
    ("truncated_jpeg", "cannot read image .*truncated.jpg"),
    ("folder", "is a folder, not an image file"),
    ("object_npy", "cannot read image .*objects.npy"),
    ("unreadable", "Permission denied"),
])
def test_predict_unreadable_images(tmp_path, rng, capsys, case, message):
    import os

    from PIL import Image

    path = tmp_path / {"text": "notes.png", "empty": "empty.png", "truncated_jpeg":
                       "truncated.jpg", "folder": "folder.png", "object_npy": "objects.npy",
                       "unreadable": "locked.png"}[case]
    if case == "text":
        path.write_text("not an image")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated_jpeg":
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:-60])
    elif case == "folder":
        path.mkdir()
    elif case == "object_npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        _png(tmp_path, rng, name=path.name).chmod(0)
    line = _cli_error([str(path), "--model", str(tmp_path / "no_model")], capsys)
    assert re.search(message, line), line


def test_predict_draw_into_a_missing_folder(tmp_path, rng, capsys):
    image = _png(tmp_path, rng)  # checked before any image is read or model loaded
    line = _cli_error([str(image), "--model", str(tmp_path / "no_model"), "--draw",
                       str(tmp_path / "missing" / "out.png")], capsys)
    assert "does not exist" in line and "missing" in line



def test_predict_damaged_saved_model(tmp_path, rng, capsys):
    version_dir = tmp_path / "model" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"not a protocol buffer")
    line = _cli_error([str(_png(tmp_path, rng)), "--model", str(tmp_path / "model")], capsys)
    assert line.startswith(f"error: cannot load the SavedModel {str(version_dir)!r}")
