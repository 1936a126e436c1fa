"""keypoint_gnn.export: TF Serving SavedModel (versions, signatures) and TFLite variants."""
import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import export
from keypoint_gnn._backend import keras, tf

TINY = {"image_size": 16, "channels": 3, "num_classes": 3, "backbone": {"filters": (8,)},
        "detector": {"filters": (4,), "num_keypoints": 6},
        "graph": {"units": 8, "layers": 2, "diffpool_clusters": 3},
        "head": {"filters": (8,)}}
CLASS_NAMES = ["circle", "square", "star"]


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(1)
    config = kg.ModelConfig(**TINY)
    return kg.build_classifier(config), config


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    model, config = tiny
    base = tmp_path_factory.mktemp("saved_models")
    version_dir = export.export_saved_model(model, config, base, name="tiny",
                                            class_names=CLASS_NAMES)
    return version_dir, tf.saved_model.load(str(version_dir)).signatures


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _reference(model, config, pixels_at_model_size):
    """Keras outputs, keypoints in model-input pixels (p * stride + (stride - 1) / 2)."""
    images = pixels_at_model_size.astype(np.float32) / 255.0
    logits = model(images, training=False).numpy()
    positions, scores, _ = kg.keypoint_model(model)(images, training=False)
    stride = config.feature_stride
    return _softmax(logits), positions.numpy() * stride + (stride - 1) / 2, scores.numpy()


def test_serving_default_matches_keras_at_model_size(tiny, exported, rng):
    model, config = tiny
    _, signatures = exported
    pixels = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    outputs = signatures["serving_default"](images=tf.constant(pixels))
    probabilities, keypoints, scores = _reference(model, config, pixels)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities, atol=1e-6)
    np.testing.assert_allclose(outputs["keypoints"].numpy(), keypoints, atol=1e-5)
    np.testing.assert_allclose(outputs["keypoint_scores"].numpy(), scores, atol=1e-6)
    assert outputs["top_classes"].dtype == tf.int32
    np.testing.assert_array_equal(outputs["top_classes"].numpy(),
                                  np.argsort(-probabilities, axis=-1, kind="stable")[:, :3])


def test_serving_default_other_size_and_grey(tiny, exported, rng):
    model, config = tiny
    _, signatures = exported
    # 32 x 48 grey: the model sees it resized to 16 x 16 and tiled to RGB.
    grey = rng.integers(0, 256, (2, 32, 48, 1), dtype=np.uint8)
    outputs = signatures["serving_default"](images=tf.constant(grey))
    resized = tf.image.resize(tf.cast(tf.tile(grey, [1, 1, 1, 3]), tf.float32), [16, 16],
                              antialias=True)
    resized = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
    probabilities, model_keypoints, _ = _reference(model, config, resized)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities, atol=1e-5)
    # model pixel q -> input pixel (q + 0.5) * input/model - 0.5: y scale 2, x scale 3.
    expected = (model_keypoints + 0.5) * np.array([2.0, 3.0]) - 0.5
    np.testing.assert_allclose(outputs["keypoints"].numpy(), expected, atol=1e-4)
    assert outputs["keypoints"].shape == (2, config.detector.num_keypoints, 2)


def test_serving_bytes_equals_serving_default_on_decoded_pixels(exported, rng):
    _, signatures = exported
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    encoded = [tf.io.encode_png(image).numpy() for image in (small, large)]
    from_bytes = signatures["serving_bytes"](image_bytes=tf.constant(encoded))
    for index, image in enumerate((small, large)):
        from_pixels = signatures["serving_default"](images=tf.constant(image[None]))
        for key in export.OUTPUT_KEYS:
            np.testing.assert_allclose(from_bytes[key].numpy()[index], from_pixels[key].numpy()[0],
                                       atol=1e-6, err_msg=key)


def test_serving_rejects_five_channels(exported):
    _, signatures = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match="channels"):
        signatures["serving_default"](images=tf.zeros([1, 16, 16, 5], tf.uint8))


def test_export_writes_labels_and_info(exported):
    version_dir, signatures = exported
    assert set(signatures) == {"serving_default", "serving_bytes"}
    assert (version_dir / "labels.txt").read_text().split() == CLASS_NAMES
    info = json.loads((version_dir / "export.json").read_text())
    assert info["version"] == int(version_dir.name) == 1
    assert info["class_names"] == CLASS_NAMES
    assert kg.ModelConfig.from_dict(info["config"]) == kg.ModelConfig(**TINY)


@pytest.mark.slow  # a TensorFlow start in a subprocess: ~12 s on 2 busy cores
def test_saved_model_cli_sees_both_signatures(exported):
    version_dir, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", str(version_dir), "--all"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "signature_def['serving_default']" in text
    assert "signature_def['serving_bytes']" in text
    assert "dtype: DT_UINT8" in text and "shape: (-1, -1, -1, -1)" in text
    assert "dtype: DT_STRING" in text
    for key in export.OUTPUT_KEYS:
        assert f"outputs['{key}']" in text


def test_versions_increase_and_ignore_temporary_dirs(tiny, tmp_path, monkeypatch):
    model, config = tiny
    calls = []
    # The saving itself is covered above; here only the directory protocol.
    monkeypatch.setattr(export.saved_model, "write_saved_model",
                        lambda m, c, directory, **kw: calls.append(directory)
                        or (directory / "saved_model.pb").write_bytes(b"pb"))
    first = export.export_saved_model(model, config, tmp_path, name="m")
    second = export.export_saved_model(model, config, tmp_path, name="m")
    assert (first.name, second.name) == ("1", "2")
    (tmp_path / "m" / "7").mkdir()
    (tmp_path / "m" / ".tmp-abandoned").mkdir()
    (tmp_path / "m" / "tmp-99").mkdir()
    (tmp_path / "m" / "12").write_text("a file, not a version")
    assert export.export_saved_model(model, config, tmp_path, name="m").name == "8"
    assert export.list_versions(tmp_path / "m") == [1, 2, 7, 8]
    assert export.resolve_version_dir(tmp_path / "m") == tmp_path / "m" / "8"
    assert all(path.name.startswith(".tmp-") for path in calls)


def test_failed_export_leaves_no_version(tiny, tmp_path, monkeypatch):
    model, config = tiny

    def save_half_then_fail(module, directory, signatures=None):
        os.makedirs(os.path.join(directory, "variables"), exist_ok=True)
        with open(os.path.join(directory, "saved_model.pb"), "wb") as half_written:
            half_written.write(b"\x08")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, config, tmp_path, name="m")
    assert list((tmp_path / "m").iterdir()) == []
    assert export.list_versions(tmp_path / "m") == []


@pytest.mark.parametrize("name", ["", ".hidden", "tmp-1", "a/b"])
def test_bad_export_name(tiny, tmp_path, name):
    model, config = tiny
    with pytest.raises(ValueError, match="name="):
        export.export_saved_model(model, config, tmp_path, name=name)


def test_class_names_must_match_classes(tiny, tmp_path):
    model, config = tiny
    with pytest.raises(ValueError, match="2 names but the model has num_classes=3"):
        export.export_saved_model(model, config, tmp_path, name="m", class_names=["a", "b"])


def test_resolve_version_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.resolve_version_dir(tmp_path / "missing")
    (tmp_path / "empty" / "latest").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no integer version directory"):
        export.resolve_version_dir(tmp_path / "empty")


def test_tflite_float32_matches_keras(tiny, tmp_path, rng):
    model, config = tiny
    path = export.export_tflite(model, config, tmp_path / "tiny.tflite")
    pixels = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    outputs = export.run_tflite(path, pixels.astype(np.float32) / 255.0)
    probabilities, keypoints, scores = _reference(model, config, pixels)
    logits = model(pixels.astype(np.float32) / 255.0, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-4)
    np.testing.assert_allclose(outputs["keypoints"], keypoints, atol=1e-4)
    np.testing.assert_allclose(outputs["keypoint_scores"], scores, atol=1e-4)
    # predict(): uint8 at any size, same dict as the SavedModel.
    predicted = export.TFLiteClassifier(path).predict(pixels)
    np.testing.assert_allclose(predicted["keypoints"], keypoints, atol=1e-4)
    assert predicted["top_classes"].shape == (4, 3)


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_tflite_quantized_variants_run(tiny, tmp_path, rng, quantize):
    model, config = tiny
    path = export.export_tflite(model, config, tmp_path / f"{quantize}.tflite", quantize=quantize)
    pixels = rng.random((2, 16, 16, 3), dtype=np.float32)
    outputs = export.run_tflite(path, pixels)
    logits = model(pixels, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=0.05)
    assert json.loads((tmp_path / f"{quantize}.tflite.json").read_text())["quantize"] == quantize


def _resized_outputs(path, images):
    """The raw interpreter: input resized to images' batch, then named outputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    input_details = interpreter.get_input_details()[0]
    assert list(input_details["shape_signature"]) == [-1, *images.shape[1:]]
    interpreter.resize_tensor_input(input_details["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_details["index"], images)
    interpreter.invoke()
    names = interpreter.get_signature_runner(export.SERVING_DEFAULT).get_output_details()
    return {name: interpreter.get_tensor(detail["index"]) for name, detail in names.items()}


def test_tflite_float32_dynamic_batch_matches_keras_per_image(tiny, tmp_path, rng):
    model, config = tiny
    path = export.export_tflite(model, config, tmp_path / "tiny.tflite")
    pixels = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    images = pixels.astype(np.float32) / 255.0
    outputs = _resized_outputs(path, images)
    assert {key: value.shape for key, value in outputs.items()} == {
        "logits": (3, 3), "probabilities": (3, 3), "keypoints": (3, 6, 2),
        "keypoint_scores": (3, 6)}
    logits = model(images, training=False).numpy()
    probabilities, keypoints, scores = _reference(model, config, pixels)
    for i in range(3):  # every image, not the first one repeated
        np.testing.assert_allclose(outputs["logits"][i], logits[i], atol=1e-4, err_msg=str(i))
        np.testing.assert_allclose(outputs["probabilities"][i], probabilities[i], atol=1e-4)
        np.testing.assert_allclose(outputs["keypoints"][i], keypoints[i], atol=1e-4)
        np.testing.assert_allclose(outputs["keypoint_scores"][i], scores[i], atol=1e-4)
    assert not np.allclose(outputs["logits"][1:], outputs["logits"][:1])
    # TFLiteClassifier: one invocation of the whole batch, then a smaller one on the same
    # interpreter (resized back), and in chunks.
    classifier = export.TFLiteClassifier(path)
    assert classifier.dynamic_batch
    np.testing.assert_allclose(classifier.run(images)["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(classifier.run(images[1:2])["logits"], logits[1:2], atol=1e-4)
    np.testing.assert_allclose(classifier.run(images, batch_size=2)["logits"], logits, atol=1e-4)


@pytest.mark.parametrize("quantize", ["float16", "dynamic", "int8"])
def test_tflite_quantized_variants_have_a_dynamic_batch(tiny, tmp_path, rng, quantize):
    model, config = tiny
    images = rng.random((3, 16, 16, 3), dtype=np.float32)
    path = export.export_tflite(model, config, tmp_path / f"{quantize}.tflite", quantize=quantize,
                                representative_images=images)
    outputs = _resized_outputs(path, images)
    assert outputs["logits"].shape == (3, 3) and outputs["keypoints"].shape == (3, 6, 2)
    singles = [_resized_outputs(path, images[i:i + 1]) for i in range(3)]
    for key, value in outputs.items():
        np.testing.assert_allclose(value, np.concatenate([single[key] for single in singles]),
                                   atol=1e-5, err_msg=key)


def _fixed_batch_tflite(model, config, path):
    """A TFLite model traced at batch 1, as export_tflite wrote them before the dynamic batch."""
    network = export.inference_model(model)
    spec = tf.TensorSpec([1, 16, 16, 3], tf.float32, name="images")
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(
        lambda images: dict(zip(("logits", "keypoints", "keypoint_scores"),
                                network(images, training=False))), input_signature=[spec])
    tf.saved_model.save(module, str(path.parent / "fixed"),
                        signatures={"serving_default": module.serve.get_concrete_function()})
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(path.parent / "fixed")).convert())
    export.write_tflite_info(path, config)
    return path


def test_tflite_fixed_batch_models_run_one_image_at_a_time(tiny, tmp_path, rng):
    from keypoint_gnn.benchmarks.inference import tflite_batch_support

    model, config = tiny
    fixed = _fixed_batch_tflite(model, config, tmp_path / "fixed.tflite")
    images = rng.random((3, 16, 16, 3), dtype=np.float32)
    classifier = export.TFLiteClassifier(fixed)
    assert not classifier.dynamic_batch
    np.testing.assert_allclose(classifier.run(images)["logits"],
                               model(images, training=False).numpy(), atol=1e-4)
    supported, reason = tflite_batch_support(fixed, config, 3)
    assert not supported and "fixed batch" in reason
    dynamic = export.export_tflite(model, config, tmp_path / "dynamic.tflite")
    assert tflite_batch_support(dynamic, config, 3) == (True, "")


def test_tflite_predict_batches_images_of_different_sizes(tiny, tmp_path, rng):
    model, config = tiny
    path = export.export_tflite(model, config, tmp_path / "tiny.tflite")
    classifier = export.TFLiteClassifier(path)
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in ((16, 16, 3), (20, 30, 1), (32, 24, 4))]
    together = classifier.predict(images)
    assert together["keypoints"].shape == (3, 6, 2)
    for i, image in enumerate(images):
        alone = classifier.predict(image[None])
        for key, value in alone.items():
            np.testing.assert_allclose(together[key][i], value[0], atol=1e-5, err_msg=key)
    with pytest.raises(ValueError, match="B >= 1"):
        classifier.run(np.zeros((0, 16, 16, 3), np.float32))


def test_tflite_argument_errors(tiny, tmp_path):
    model, config = tiny
    with pytest.raises(ValueError, match="quantize='int4' is not one of"):
        export.export_tflite(model, config, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match="needs representative_images"):
        export.export_tflite(model, config, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match=r"representative_images must have shape \(B, 16, 16, 3\)"):
        export.export_tflite(model, config, tmp_path / "m.tflite", quantize="int8",
                             representative_images=np.zeros((4, 8, 8, 3), np.float32))


def test_keypoint_unit_conversion_hand_worked():
    # stride 4: feature pixel 0 covers model pixels 0..3, centre 1.5; model 16 -> input 32:
    # (1.5 + 0.5) * 2 - 0.5 = 3.5, the centre of input pixels 0..7.
    positions = tf.constant([[[0.0, 3.0]]])
    converted = export.feature_to_input_pixels(positions, 4, 16, 32, 64).numpy()
    np.testing.assert_allclose(converted, [[[3.5, (13.5 + 0.5) * 4 - 0.5]]])


def _colour_set(count, seed):
    """An easy set: class = colour (R, G or B) of a 6x6 square on grey noise, 16x16."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.uniform(0.3, 0.5, (count, 16, 16, 3)).astype(np.float32)
    for image, label in zip(images, labels):
        y, x = rng.integers(0, 11, 2)
        image[y:y + 6, x:x + 6] = 0.1
        image[y:y + 6, x:x + 6, label] = 0.95
    return images, labels.astype(np.int32)


def test_int8_accuracy_within_one_point_of_float32(tmp_path):
    keras.utils.set_random_seed(0)
    config = kg.ModelConfig(**TINY).updated({"head": {"dropout": 0.0}})
    model = kg.build_classifier(config)
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_images, train_labels = _colour_set(600, seed=0)
    model.fit(train_images, train_labels, epochs=10, batch_size=32, verbose=0)
    test_images, test_labels = _colour_set(300, seed=1)
    float_path = export.export_tflite(model, config, tmp_path / "f.tflite")
    int8_path = export.export_tflite(model, config, tmp_path / "q.tflite", quantize="int8",
                                     representative_images=train_images[:100])
    float_accuracy = np.mean(export.run_tflite(float_path, test_images)["logits"].argmax(-1)
                             == test_labels)
    int8_accuracy = np.mean(export.run_tflite(int8_path, test_images)["logits"].argmax(-1)
                            == test_labels)
    assert float_accuracy > 0.9, "the model did not learn the easy set"
    assert abs(float_accuracy - int8_accuracy) <= 0.01, (float_accuracy, int8_accuracy)


@pytest.mark.slow
def test_int8_accuracy_within_one_point_of_float32_on_the_builtin_test_set(tmp_path):
    """The issue's check on the built-in data: a briefly trained default-size model."""
    from keypoint_gnn import training
    from keypoint_gnn.data import load_dataset

    keras.utils.set_random_seed(0)
    data = load_dataset("builtin", image_size=48, batch_size=64, max_examples=2400)
    config = kg.ModelConfig(num_classes=data.info.num_classes)
    model = kg.build_classifier(config)
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(data.train, epochs=6, verbose=0)
    test_images, test_labels = training.dataset_arrays(data.test)
    train_images, _ = training.dataset_arrays(data.train, max_batches=4)
    float_path = export.export_tflite(model, config, tmp_path / "f.tflite")
    int8_path = export.export_tflite(model, config, tmp_path / "q.tflite", quantize="int8",
                                     representative_images=train_images[:200])
    float_accuracy = np.mean(export.run_tflite(float_path, test_images)["logits"].argmax(-1) == test_labels)
    int8_accuracy = np.mean(export.run_tflite(int8_path, test_images)["logits"].argmax(-1) == test_labels)
    print(f"built-in test set: float32 {float_accuracy:.4f}, int8 {int8_accuracy:.4f}")
    assert float_accuracy > 0.5, f"the model did not learn the built-in set ({float_accuracy:.3f})"
    assert abs(float_accuracy - int8_accuracy) <= 0.01, (float_accuracy, int8_accuracy)


@pytest.mark.parametrize("refinement", ["window", "centre"])
def test_tflite_refined_keypoints_match_keras(tmp_path, rng, refinement):
    """Sub-pixel refinement (window soft-argmax, window centres) and bilinear sampling
    convert: the float32 TFLite model gives Keras's fractional keypoints and logits."""
    keras.utils.set_random_seed(2)
    config = kg.ModelConfig(**TINY).updated(
        {"detector": {"num_keypoints": 4, "pool_size": 2, "refinement": refinement}})
    model = kg.build_classifier(config)
    path = export.export_tflite(model, config, tmp_path / f"{refinement}.tflite")
    pixels = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    outputs = export.run_tflite(path, pixels.astype(np.float32) / 255.0)
    _, keypoints, scores = _reference(model, config, pixels)
    assert np.abs(keypoints - np.round(keypoints)).max() > 0.1  # fractional in input pixels
    logits = model(pixels.astype(np.float32) / 255.0, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(outputs["keypoints"], keypoints, atol=1e-4)
    np.testing.assert_allclose(outputs["keypoint_scores"], scores, atol=1e-4)


def _check_help_states_defaults(parser, prog):
    assert parser.prog == f"python -m trainers.{prog}"
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{action.option_strings} does not state its default"


def test_export_flags_have_help_with_defaults():
    from trainers import export as export_trainer

    _check_help_states_defaults(export_trainer.build_parser(), "export")


def _run_dir(tmp_path, model, config, run=None):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(config.to_json())
    run = {"name": "tiny", "dataset": "builtin", "class_names": CLASS_NAMES} if run is None else run
    (run_dir / "run.json").write_text(json.dumps(run))
    return run_dir


def test_export_trainer_reads_the_nested_config_json(tiny, tmp_path, rng):
    from trainers import export as export_trainer

    model, config = tiny
    run_dir = _run_dir(tmp_path, model, config)
    assert json.loads((run_dir / "config.json").read_text())["detector"]["num_keypoints"] == 6
    version_dir = export_trainer.main(["--run", str(run_dir), "--out", str(tmp_path / "saved")])
    assert version_dir == tmp_path / "saved" / "tiny" / "1"
    info = export.read_export_info(version_dir)
    assert kg.ModelConfig.from_dict(info["config"]) == config
    assert info["class_names"] == CLASS_NAMES
    signatures = tf.saved_model.load(str(version_dir)).signatures
    assert set(signatures) == {"serving_default", "serving_bytes"}
    pixels = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    outputs = signatures["serving_default"](images=tf.constant(pixels))
    assert set(outputs) == set(export.OUTPUT_KEYS)
    path = export_trainer.main(["--run", str(run_dir), "--format", "tflite", "--out",
                                str(tmp_path / "lite")])
    assert path == tmp_path / "lite" / "tiny.tflite"
    classifier = export.TFLiteClassifier(path)
    assert classifier.config == config and classifier.class_names == CLASS_NAMES
    np.testing.assert_allclose(classifier.predict(pixels)["keypoints"],
                               outputs["keypoints"].numpy(), atol=1e-4)


def test_export_trainer_bad_config_json_is_a_one_line_user_error(tmp_path):
    from trainers import common
    from trainers import export as export_trainer

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("model.keras", "run.json"):
        (run_dir / name).write_text("{}")
    flat = {"image_size": 16, "num_keypoints": 6, "detector": "maxpool_nms", "gnn": "gcn"}
    (run_dir / "config.json").write_text(json.dumps(flat))
    with pytest.raises(common.UserError, match=r"bad config.json: it holds the flat ModelConfig"):
        export_trainer.read_run(run_dir)
    (run_dir / "config.json").write_text(json.dumps({"detector": {"kind": "bogus"}}))
    with pytest.raises(common.UserError, match=r"bad config.json: .*detector\.kind='bogus'"):
        export_trainer.read_run(run_dir)
    (run_dir / "config.json").write_text(json.dumps({"graph": {"depth": 3}}))
    with pytest.raises(common.UserError, match=r"bad config.json: unknown field graph\.depth"):
        export_trainer.read_run(run_dir)
    with pytest.raises(common.UserError, match="--quantize int8 applies to --format tflite"):
        export_trainer.main(["--run", str(run_dir), "--quantize", "int8"])


def test_tflite_info_with_a_bad_config_names_the_file(tiny, tmp_path):
    model, config = tiny
    path = export.export_tflite(model, config, tmp_path / "tiny.tflite")
    info = json.loads(export.tflite_info_path(path).read_text())
    info["config"] = {**info["config"], "num_keypoints": 6}  # the flat config of before 0.2
    export.tflite_info_path(path).write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"tiny.tflite.json' holds no valid ModelConfig"):
        export.TFLiteClassifier(path)


# --- Issue 24: nothing bad gets served, nothing is lost, no traceback ------------------------


def _cli_error(main, argv, capsys):
    """Runs a trainer's `main(argv)` as its `python -m` entry does; the one stderr line."""
    from trainers import common

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _tree(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("name, problem", [
    ("", "it is empty"), (".hidden", "starts with '.'"), ("..", "parent folder"),
    ("tmp-1", "starts with 'tmp-'"), ("a/b", "path separator"),
    ("../../escape", "path separator"), ("a\\b", "path separator"),
    ("a\nb", "non-printable"), ("x" * 201, "longer than 200 bytes"), (5, "not a string"),
])
def test_export_name_rule(name, problem):
    with pytest.raises(ValueError) as error:
        export.check_export_name(name, " (from --name)")
    message = str(error.value)
    assert f"name={name!r} (from --name) is not a valid model name" in message
    assert problem in message and "a model name is one folder name" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["keypoint_gnn", "m.v2", "builtin-classify", "modèle", "x" * 200])
def test_export_name_rule_accepts(name):
    assert export.check_export_name(name) == name


def _cli_run_dir(tmp_path, config, name="tiny", model=None):
    """A run directory; model.keras is a stand-in unless `model` is given (the name and --out
    are checked before the model is loaded)."""
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    if model is None:
        (run_dir / "model.keras").write_text("not loaded")
    else:
        model.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(config.to_json())
    (run_dir / "run.json").write_text(json.dumps({"name": name, "dataset": "builtin",
                                                  "class_names": CLASS_NAMES}))
    return run_dir


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
@pytest.mark.parametrize("where", ["--name", "run.json"])
def test_export_cli_refuses_path_traversal_in_both_formats(tmp_path, capsys, fmt, where):
    from trainers import export as export_trainer

    config = kg.ModelConfig(**TINY)
    planted = "../../../planted" if where == "run.json" else "../../escape"
    run_dir = _cli_run_dir(tmp_path, config, name=planted if where == "run.json" else "tiny")
    out = tmp_path / "a" / "b" / "out"
    before = _tree(tmp_path)
    argv = ["--run", str(run_dir), "--format", fmt, "--out", str(out)]
    if where == "--name":
        argv += ["--name", planted]
    line = _cli_error(export_trainer.main, argv, capsys)
    assert f"name={planted!r}" in line and "path separator" in line
    assert ("(from --name)" if where == "--name" else "run.json; pass --name NAME") in line
    assert _tree(tmp_path) == before  # nothing written, out not even created


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_export_cli_out_is_a_file(tmp_path, capsys, fmt):
    from trainers import export as export_trainer

    run_dir = _cli_run_dir(tmp_path, kg.ModelConfig(**TINY))
    out = tmp_path / "out"
    out.write_text("a file")
    line = _cli_error(export_trainer.main, ["--run", str(run_dir), "--format", fmt, "--out",
                                            str(out)], capsys)
    assert "is a file, not a folder" in line and str(out) in line
    assert out.read_text() == "a file"


def test_export_cli_damaged_model_keras(tmp_path, capsys):
    from trainers import export as export_trainer

    run_dir = _cli_run_dir(tmp_path, kg.ModelConfig(**TINY))
    line = _cli_error(export_trainer.main, ["--run", str(run_dir), "--out", str(tmp_path / "o")],
                      capsys)
    assert "cannot load model.keras" in line
    assert not (tmp_path / "o").exists()


def _diverged(count=3):
    """A fresh tiny model with `count` NaN/Inf values in its first kernel."""
    keras.utils.set_random_seed(3)
    config = kg.ModelConfig(**TINY)
    model = kg.build_classifier(config)
    variable = next(v for v in model.variables if v.dtype.is_floating and np.size(v) >= count)
    values = variable.numpy().reshape(-1)
    values[:count] = [np.nan, np.inf, -np.inf][:count] + [np.nan] * max(0, count - 3)
    variable.assign(values.reshape(variable.shape))
    return model, config, variable.name


def test_export_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    model, config, variable = _diverged()
    message = (rf"model has non-finite weights \(3 NaN/Inf values in variable '{variable}'\); "
               "refusing to export a diverged model")
    with pytest.raises(ValueError, match=message):
        export.export_saved_model(model, config, tmp_path / "saved", name="m")
    with pytest.raises(ValueError, match=message):
        export.export_tflite(model, config, tmp_path / "lite" / "m.tflite")
    assert list(tmp_path.iterdir()) == []
    assert export.non_finite_weights(model) == [(variable, 3)]


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_export_cli_refuses_a_diverged_model(tmp_path, capsys, fmt):
    from trainers import export as export_trainer

    model, config, variable = _diverged()
    run_dir = _cli_run_dir(tmp_path, config, model=model)
    out = tmp_path / "out"
    line = _cli_error(export_trainer.main, ["--run", str(run_dir), "--format", fmt, "--out",
                                            str(out)], capsys)
    assert line == (f"error: model has non-finite weights (3 NaN/Inf values in variable "
                    f"'{variable}'); refusing to export a diverged model")
    assert not out.exists()


def _fake_saved_model_write(monkeypatch):
    monkeypatch.setattr(export.saved_model, "write_saved_model",
                        lambda m, c, directory, **kw: (directory / "saved_model.pb")
                        .write_bytes(b"pb"))


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _age(path, seconds):
    old = path.stat().st_mtime - seconds
    os.utime(path, (old, old))


def test_next_export_cleans_stale_temporary_dirs(tiny, tmp_path, monkeypatch):
    from keypoint_gnn.export import files

    model, config = tiny
    _fake_saved_model_write(monkeypatch)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    host = files._host()
    entries = {
        "dead": f".tmp-{_dead_pid()}@{host}@abc",  # killed export of this host
        "alive": f".tmp-{os.getpid()}@{host}@def",  # an export in progress
        "other_host": f".tmp-{_dead_pid()}@another-host@ghi",  # cannot tell: kept while fresh
        "legacy": ".tmp-k2j3h4",  # a name from before the pid rule: kept while fresh
        "legacy_old": ".tmp-z9y8x7",  # ... removed after 24 hours
        "other_host_old": ".tmp-1@another-host@jkl",
    }
    for name in entries.values():
        (model_dir / name / "variables").mkdir(parents=True)
        (model_dir / name / "saved_model.pb").write_bytes(b"half")
    (model_dir / ".tmp-a-file").write_text("not an export's")
    for key in ("legacy_old", "other_host_old"):
        _age(model_dir / entries[key], files.STALE_AFTER_S + 60)
    version_dir = export.export_saved_model(model, config, tmp_path, name="m")
    assert version_dir.name == "1"
    left = {path.name for path in model_dir.iterdir()}
    assert left == {"1", ".tmp-a-file", entries["alive"], entries["other_host"],
                    entries["legacy"]}


def test_tflite_export_cleans_only_its_own_stale_partial_files(tiny, tmp_path, monkeypatch):
    from keypoint_gnn.export import files

    model, config = tiny
    monkeypatch.setattr(export.tflite, "convert_tflite", lambda *args: b"flat buffer")
    folder = tmp_path / "lite"
    folder.mkdir()
    host = files._host()
    dead = folder / f".tmp-{_dead_pid()}@{host}@abc.partial"
    alive = folder / f".tmp-{os.getpid()}@{host}@def.partial"
    legacy = folder / ".tmp-old.tflite"
    unrelated = folder / ".tmp-notes"
    for path in (dead, alive, legacy, unrelated):
        path.write_bytes(b"x")
    _age(legacy, files.STALE_AFTER_S + 60)
    _age(unrelated, files.STALE_AFTER_S + 60)
    path = export.export_tflite(model, config, folder / "m.tflite", class_names=CLASS_NAMES)
    assert path.read_bytes() == b"flat buffer"
    assert json.loads(export.tflite_info_path(path).read_text())["class_names"] == CLASS_NAMES
    assert {p.name for p in folder.iterdir()} == {"m.tflite", "m.tflite.json", alive.name,
                                                 unrelated.name}


_KILLED_EXPORT = """
import os, signal, sys
import keypoint_gnn as kg
from keypoint_gnn import export
from keypoint_gnn._backend import tf
config = kg.ModelConfig(**{tiny})
model = kg.build_classifier(config)
real_save = tf.saved_model.save
def save_then_die(module, directory, signatures=None):
    real_save(module, directory, signatures=signatures)
    print(directory, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename: a leftover, no version
tf.saved_model.save = save_then_die
export.export_saved_model(model, config, sys.argv[1], name="m")
"""


@pytest.mark.slow  # a TensorFlow start in a subprocess
def test_killed_export_leaves_no_version_and_the_next_cleans_up(tiny, tmp_path):
    model, config = tiny
    result = subprocess.run([sys.executable, "-c", _KILLED_EXPORT.format(tiny=TINY),
                             str(tmp_path)], check=False, capture_output=True, text=True,
                            timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == -9, result.stderr
    staging = result.stdout.strip().splitlines()[-1]
    assert os.path.basename(staging).startswith(".tmp-") and os.path.isdir(staging)
    assert export.list_versions(tmp_path / "m") == []
    version_dir = export.export_saved_model(model, config, tmp_path, name="m")
    assert [path.name for path in (tmp_path / "m").iterdir()] == [version_dir.name] == ["1"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_version_folders_get_umask_modes(tiny, tmp_path, umask):
    model, config = tiny
    previous = os.umask(umask)
    try:
        version_dir = export.export_saved_model(model, config, tmp_path, name="m",
                                                class_names=CLASS_NAMES)
    finally:
        os.umask(previous)
    folder_mode, file_mode = 0o777 & ~umask, 0o666 & ~umask
    assert (version_dir / "variables").is_dir() and (version_dir / "saved_model.pb").is_file()
    for path in [version_dir, *version_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (folder_mode if path.is_dir() else file_mode), (path, oct(mode))


def test_tflite_files_get_umask_modes(tiny, tmp_path, monkeypatch):
    model, config = tiny
    monkeypatch.setattr(export.tflite, "convert_tflite", lambda *args: b"flat buffer")
    previous = os.umask(0o022)
    try:
        path = export.export_tflite(model, config, tmp_path / "m.tflite")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    assert export.tflite_info_path(path).stat().st_mode & 0o777 == 0o644


def test_export_json_is_strict(tiny, tmp_path, monkeypatch):
    from keypoint_gnn.export import files

    with pytest.raises(ValueError, match=r"x.json: a\.b\[1\]=nan is not a finite number"):
        files.dumps_strict({"a": {"b": [1.0, float("nan")]}}, "x.json")
    assert json.loads(files.dumps_strict({"a": [1.5, None]}, "x.json")) == {"a": [1.5, None]}
    model, config = tiny
    _fake_saved_model_write(monkeypatch)
    real_info = export.saved_model._export_info
    monkeypatch.setattr(export.saved_model, "_export_info",
                        lambda *args: {**real_info(*args), "score": float("inf")})
    with pytest.raises(ValueError, match=r"export.json: score=inf is not a finite number"):
        export.export_saved_model(model, config, tmp_path, name="m")
    assert list((tmp_path / "m").iterdir()) == []  # no version, no leftover


def _strict_load(text):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_written_json_parses_strictly(exported, tiny, tmp_path, monkeypatch):
    version_dir, _ = exported
    assert _strict_load((version_dir / "export.json").read_text())["name"] == "tiny"
    model, config = tiny
    monkeypatch.setattr(export.tflite, "convert_tflite", lambda *args: b"flat buffer")
    path = export.export_tflite(model, config, tmp_path / "m.tflite")
    assert _strict_load(export.tflite_info_path(path).read_text())["quantize"] == "none"


def test_export_cli_out_not_writable(tmp_path, capsys, monkeypatch):
    from trainers import export as export_trainer

    run_dir = _cli_run_dir(tmp_path, kg.ModelConfig(**TINY))
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # As a user without write permission (the tests may run as root, who writes anywhere).
    monkeypatch.setattr(export_trainer.os, "access",
                        lambda path, mode: False if pathlib.Path(path) == locked
                        else real_access(path, mode))
    line = _cli_error(export_trainer.main, ["--run", str(run_dir), "--format", "tflite",
                                            "--out", str(locked / "sub")], capsys)
    assert f"cannot write into {str(locked)!r} (permission denied)" in line
    assert list(locked.iterdir()) == []


def test_export_cli_run_json_class_names_must_match(tmp_path, capsys):
    from trainers import export as export_trainer

    run_dir = _cli_run_dir(tmp_path, kg.ModelConfig(**TINY))
    (run_dir / "run.json").write_text(json.dumps({"name": "tiny", "class_names": ["a", "b"]}))
    line = _cli_error(export_trainer.main, ["--run", str(run_dir), "--out", str(tmp_path / "o")],
                      capsys)
    assert "run.json: class_names has 2 names but the model has num_classes=3" in line
