"""Figures are valid PNGs; the TensorBoard summary puts red pixels exactly at the keypoints."""
import numpy as np
import pytest
from PIL import Image

from keypoint_gnn import viz

RNG = np.random.default_rng(0)


def read_png(path):
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.load()
        return image.size  # (width, height)


@pytest.mark.parametrize("channels", [1, 3])
def test_draw_keypoints_writes_png(tmp_path, channels):
    images = RNG.uniform(size=(5, 24, 24, channels))
    positions = RNG.uniform(0, 23, size=(5, 6, 2))
    parts = np.concatenate([RNG.uniform(0, 23, size=(5, 2, 2)), np.full((5, 1, 2), np.nan)], axis=1)
    path = viz.draw_keypoints(images, positions, tmp_path / "sub" / "keypoints.png",
                              scores=RNG.uniform(size=(5, 6)), parts=parts, ncols=3, title="t")
    width, height = read_png(path)
    # 3 columns x 2 rows at 1.6 inches and 100 dpi, plus the title.
    assert (width, height) == (480, 360)


def test_draw_keypoints_accepts_uint8(tmp_path):
    images = (RNG.uniform(size=(2, 16, 16, 3)) * 255).astype(np.uint8)
    path = viz.draw_keypoints(images, np.full((2, 1, 2), 8.0), tmp_path / "u8.png")
    assert read_png(path) == (320, 160)


@pytest.mark.parametrize("channels", [1, 3])
def test_draw_reconstructions(tmp_path, channels):
    originals = RNG.uniform(size=(10, 16, 16, channels))
    path = viz.draw_reconstructions(originals, RNG.uniform(0, 15, size=(10, 4, 2)),
                                    originals[::-1], tmp_path / "rec.png", n=4)
    width, height = read_png(path)
    assert width == 640 and height == 510


def test_plot_curves_pairs_training_and_validation(tmp_path):
    history = {"loss": [1.0, 0.5, 0.3], "accuracy": [0.2, 0.5, 0.7],
               "val_loss": [1.1, 0.7, 0.6], "val_accuracy": [0.2, 0.4, 0.5], "lr": [1e-3] * 3}
    assert [name for name, _ in viz._curve_groups(history)] == ["loss", "accuracy", "lr"]
    assert dict(viz._curve_groups(history))["loss"] == ["loss", "val_loss"]
    width, height = read_png(viz.plot_curves(history, tmp_path / "curves.png"))
    assert (width, height) == (1200, 320)


def test_plot_offset_histogram(tmp_path):
    offsets = RNG.uniform(size=(4, 3, 3, 2, 2))
    assert read_png(viz.plot_offset_histogram(offsets, tmp_path / "hist.png", bins=10)) == (800, 320)


def test_summary_red_pixels_exactly_at_keypoints():
    images = np.zeros((2, 8, 10, 1))
    positions = np.array([
        [[2.0, 3.0], [6.4, 8.6], [np.nan, 1.0]],      # (6.4, 8.6) rounds to (6, 9)
        [[0.0, 0.0], [20.0, 1.0], [-1.0, -1.0]],      # the last two are outside: skipped
    ])
    single = viz.keypoints_image_summary(images, positions, cross_size=0)
    assert single.dtype == np.uint8 and single.shape == (2, 8, 10, 3)
    red = np.all(single == [255, 0, 0], axis=-1)
    assert sorted(zip(*np.nonzero(red))) == [(0, 2, 3), (0, 6, 9), (1, 0, 0)]
    assert np.all(single[~red] == 0)

    crosses = viz.keypoints_image_summary(images[:1], positions[:1, :1], cross_size=1)
    red = np.all(crosses[0] == [255, 0, 0], axis=-1)
    assert sorted(zip(*np.nonzero(red))) == [(1, 3), (2, 2), (2, 3), (2, 4), (3, 3)]


def test_summary_keeps_colour_images():
    images = np.full((1, 4, 4, 3), [0.0, 0.5, 1.0])
    out = viz.keypoints_image_summary(images, np.array([[[1.0, 1.0]]]), cross_size=0)
    np.testing.assert_array_equal(out[0, 1, 1], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 0, 0], [0, 128, 255])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: viz.draw_keypoints(np.zeros((2, 8, 8)), np.zeros((2, 1, 2)), p),
         r"\(B, H, W, C\).*\(2, 8, 8\)"),
        (lambda p: viz.draw_keypoints(np.zeros((2, 8, 8, 2)), np.zeros((2, 1, 2)), p), "C = 1 or 3"),
        (lambda p: viz.draw_keypoints(np.zeros((2, 8, 8, 3)), np.zeros((3, 1, 2)), p),
         r"\(2, N, 2\).*\(3, 1, 2\)"),
        (lambda p: viz.draw_keypoints(np.zeros((1, 8, 8, 3)), np.zeros((1, 2, 2)), p,
                                      scores=np.zeros((1, 3))), r"scores.*\(1, 3\)"),
        (lambda p: viz.draw_reconstructions(np.zeros((1, 8, 8, 3)), np.zeros((1, 1, 2)),
                                            np.zeros((1, 4, 4, 3)), p), "reconstructions"),
        (lambda p: viz.plot_curves({}, p), "non-empty dict"),
        (lambda p: viz.plot_offset_histogram(np.full((3, 2), 1.5), p), r"\[0, 1\]"),
        (lambda p: viz.keypoints_image_summary(np.zeros((1, 4, 4, 3)), np.zeros((1, 2))),
         r"\(B, N, 2\)"),
    ],
)
def test_bad_shapes_give_clear_errors(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "bad.png")


def test_spread_over_classes_takes_the_classes_in_turn():
    from keypoint_gnn.training import spread_over_classes

    # A split sorted by class: the first of classes 0, 1, 2, then the second of 0 and 1, ...
    labels = [0, 0, 0, 1, 1, 2]
    assert spread_over_classes(labels, 4).tolist() == [0, 3, 5, 1]
    assert spread_over_classes(labels, 10).tolist() == [0, 3, 5, 1, 4, 2]
    # Classes in order of first appearance, not of their numbers.
    assert spread_over_classes([[2], [2], [0]], 2).tolist() == [0, 2]
    assert spread_over_classes([], 3).tolist() == []


def test_report_keypoints_keeps_pictures_parts_and_captions_together(tmp_path, monkeypatch):
    import types

    import keypoint_gnn as kg
    from keypoint_gnn import training

    config = kg.ModelConfig(image_size=32, detector={"num_keypoints": 8}, num_classes=3)
    model = kg.build_classifier(config)
    rng = np.random.default_rng(0)
    images = rng.random((6, 32, 32, 3), dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2])
    parts = rng.random((6, 2, 2)) * 32  # a different pair of "true parts" per image
    data = types.SimpleNamespace(test_parts=parts,
                                 info=types.SimpleNamespace(class_names=["a", "b", "c"]))
    drawn = {}
    monkeypatch.setattr(viz, "draw_keypoints",
                        lambda shown, positions, path, **kwargs: drawn.update(
                            images=shown, positions=positions, **kwargs))
    _, pixels = training.report_keypoints(model, config, data, images, tmp_path, labels)
    order = [0, 3, 5, 1, 4, 2]  # the classes in turn
    np.testing.assert_array_equal(drawn["images"], images[order])
    np.testing.assert_array_equal(drawn["parts"], parts[order])
    np.testing.assert_array_equal(drawn["positions"], pixels[order])
    predicted = np.argmax(model.predict(images[order], verbose=0), axis=-1)
    assert drawn["captions"] == [f"pred {'abc'[p]}\ntrue {'abc'[t]}"
                                 for p, t in zip(predicted, labels[order])]
