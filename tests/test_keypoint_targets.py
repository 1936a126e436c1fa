"""SIFT/ORB pre-training targets: detection, cell assignment, loss, dataset, a short training."""
import numpy as np
import pytest

from keypoint_gnn import keypoint_targets as kt
from keypoint_gnn import metrics, ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.models import ModelConfig, build_keypoint_pretrainer

BLOB_CENTRES = [(12, 30), (33, 10)]


def blob_image(size=48, centres=BLOB_CENTRES, sigma=2.0, channels=3):
    """Black image with bright Gaussian blobs centred on the given pixels (y, x)."""
    yy, xx = np.mgrid[0:size, 0:size]
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)) for cy, cx in centres)
    return np.repeat(np.clip(blobs, 0, 1)[..., None], channels, axis=-1).astype(np.float32)


def square_image(size=48, corners=((10, 26), (28, 8)), side=10):
    image = np.zeros((size, size, 3), np.float32)
    for y, x in corners:
        image[y:y + side, x:x + side] = 1.0
    return image


def distance_to_nearest(points, references):
    references = np.asarray(references, dtype=float)
    return np.min(np.linalg.norm(points[:, None, :2] - references[None], axis=-1), axis=1)


@pytest.mark.parametrize("channels", [1, 3])
def test_sift_finds_blob_centres(channels):
    keypoints = kt.detect_keypoints(blob_image(channels=channels), "sift")
    assert keypoints.dtype == np.float32 and keypoints.shape == (2, 3)
    np.testing.assert_allclose(sorted(map(tuple, keypoints[:, :2])), sorted(BLOB_CENTRES), atol=0.2)


def test_orb_finds_square_corners_on_a_small_image():
    corners = [(y + dy, x + dx) for y, x in ((10, 26), (28, 8)) for dy in (0, 9) for dx in (0, 9)]
    keypoints = kt.detect_keypoints(square_image(), "orb", max_keypoints=50)
    assert len(keypoints) >= 4
    assert np.all(distance_to_nearest(keypoints, corners) < 4.0)
    # Both squares are found.
    assert np.any(keypoints[:, 0] < 24) and np.any(keypoints[:, 0] > 24)
    assert np.all(np.diff(keypoints[:, 2]) <= 0), "sorted by response, highest first"


@pytest.mark.parametrize("method", kt.METHODS)
def test_blank_and_tiny_images_give_no_keypoints(method):
    assert kt.detect_keypoints(np.zeros((16, 16, 3)), method).shape == (0, 3)
    assert kt.detect_keypoints(np.zeros((8, 8), np.uint8), method).shape == (0, 3)


def test_uint8_and_float_agree_and_max_keypoints_cuts():
    image = blob_image()
    as_uint8 = np.round(image * 255).astype(np.uint8)
    np.testing.assert_allclose(kt.detect_keypoints(image), kt.detect_keypoints(as_uint8))
    assert kt.detect_keypoints(image, max_keypoints=1).shape == (1, 3)


def test_assign_to_cells_hand_worked():
    # 16 x 24 image, cells of 8 px -> 2 x 3 cells, 2 slots each.
    keypoints = np.array([
        [3.5, 11.5, 0.90],    # edges (4, 12): cell (0, 1), offsets (0.5, 0.5)
        [9.0, 2.0, 0.50],     # edges (9.5, 2.5): cell (1, 0), offsets (0.1875, 0.3125)
        [0.0, 9.0, 0.95],     # edges (0.5, 9.5): cell (0, 1), strongest -> slot 0
        [2.0, 14.0, 0.10],    # cell (0, 1), third strongest: no slot left
        [15.5, 23.5, 0.30],   # the bottom-right image corner: cell (1, 2), offsets (1, 1)
        [-0.5, -0.5, 0.20],   # the top-left image corner: cell (0, 0), offsets (0, 0)
        [30.0, 5.0, 0.99],    # outside the image: ignored
    ])
    targets = kt.assign_to_cells(keypoints, 16, 24, 8, 2)
    expected = np.zeros((2, 3, 2, 3), np.float32)
    expected[0, 1, 0] = [0.0625, 0.1875, 1]
    expected[0, 1, 1] = [0.5, 0.5, 1]
    expected[1, 0, 0] = [0.1875, 0.3125, 1]
    expected[1, 2, 0] = [1, 1, 1]
    expected[0, 0, 0] = [0, 0, 1]
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets, expected)
    assert kt.assign_to_cells(np.zeros((0, 3)), 16, 24, 8, 2).sum() == 0


def test_cell_targets_puts_blobs_in_their_cells():
    images = np.stack([blob_image(), np.zeros((48, 48, 3), np.float32)])
    targets = kt.cell_targets(images, cell_size_px=8, points_per_cell=2)
    assert targets.shape == (2, 6, 6, 2, 3) and targets.dtype == np.float32
    # Blob (12, 30): edges (12.5, 30.5) -> cell (1, 3), offsets (4.5/8, 6.5/8).
    np.testing.assert_allclose(targets[0, 1, 3, 0], [0.5625, 0.8125, 1.0], atol=0.03)
    # Blob (33, 10): edges (33.5, 10.5) -> cell (4, 1), offsets (1.5/8, 2.5/8).
    np.testing.assert_allclose(targets[0, 4, 1, 0], [0.1875, 0.3125, 1.0], atol=0.03)
    assert targets[0, ..., 2].sum() == 2 and targets[1].sum() == 0


def test_targets_invert_the_regressors_position_convention():
    """Targets read back through ops.cell_offsets_to_positions land on the detected keypoints."""
    config = ModelConfig(detector={"kind": "grid"})
    cell_px = kt.pretraining_cell_size(config)
    assert cell_px == config.detector.cell_size * config.feature_stride == 8
    rng = np.random.default_rng(3)
    centres = [tuple(c) for c in rng.integers(3, 45, size=(5, 2))]
    image = blob_image(centres=centres, sigma=1.5)
    keypoints = kt.detect_keypoints(image)
    targets = kt.cell_targets(image[None], cell_px, config.detector.points_per_cell)
    feature_positions = ops.cell_offsets_to_positions(tf.constant(targets[..., :2]),
                                                      config.detector.cell_size).numpy()
    image_positions = metrics.feature_to_image_pixels(feature_positions, config.feature_stride)
    filled = image_positions[0][targets[..., 2].reshape(-1) > 0]
    assert len(filled) > 0
    assert np.all(distance_to_nearest(filled, keypoints[:, :2]) < 1e-4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kt.detect_keypoints(np.zeros((8, 8, 3)), "surf"), "method='surf'"),
        (lambda: kt.detect_keypoints(np.zeros((8, 8, 2))), r"\(8, 8, 2\)"),
        (lambda: kt.detect_keypoints(np.full((8, 8), 255.0)), r"\[0, 1\].*255"),
        (lambda: kt.cell_targets(np.zeros((2, 50, 48, 3)), 8, 2), "height 50.*cell_size_px=8"),
        (lambda: kt.cell_targets(np.zeros((2, 48, 44, 3)), 8, 2), "width 44.*cell_size_px=8"),
        (lambda: kt.cell_targets(np.zeros((48, 48, 3)), 8, 2), r"\(B, H, W, C\).*\(48, 48, 3\)"),
        (lambda: kt.cell_targets(np.zeros((1, 48, 48, 3)), 8, 0), "points_per_cell=0"),
        (lambda: kt.assign_to_cells(np.zeros((3, 2)), 16, 16, 8, 1), r"\(K, 3\)"),
        (lambda: kt.pretraining_loss(np.zeros((1, 2, 2, 1, 3)), np.zeros((1, 2, 2, 1, 8))),
         "expects 3 channels per slot .*got 8"),
    ],
)
def test_bad_inputs_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def numpy_loss(y_true, y_pred):
    presence = y_true[..., 2]
    logits = y_pred[..., 2]
    bce = np.mean(np.maximum(logits, 0) - logits * presence + np.log1p(np.exp(-np.abs(logits))))
    squared = np.sum((y_pred[..., :2] - y_true[..., :2]) ** 2, axis=-1)
    return bce + np.sum(squared * presence) / max(presence.sum(), 1.0)


def random_cells(rng, shape=(2, 3, 3, 2)):
    y_true = np.concatenate([rng.uniform(size=shape + (2,)),
                             (rng.uniform(size=shape + (1,)) < 0.4).astype(float)], axis=-1)
    y_true[..., :2] *= y_true[..., 2:]  # empty slots are (0, 0, 0)
    y_pred = np.concatenate([rng.uniform(size=shape + (2,)), rng.normal(size=shape + (1,)) * 3],
                            axis=-1)
    return y_true.astype(np.float32), y_pred.astype(np.float32)


def test_pretraining_loss_matches_numpy():
    rng = np.random.default_rng(0)
    y_true, y_pred = random_cells(rng)
    assert float(kt.pretraining_loss(y_true, y_pred)) == pytest.approx(numpy_loss(y_true, y_pred),
                                                                        rel=1e-5)
    empty = np.zeros_like(y_true)
    assert float(kt.pretraining_loss(empty, y_pred)) == pytest.approx(numpy_loss(empty, y_pred),
                                                                       rel=1e-5)


def test_pretraining_loss_gradient_only_reaches_offsets_with_targets():
    y_true, y_pred = random_cells(np.random.default_rng(1))
    prediction = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        loss = kt.pretraining_loss(tf.constant(y_true), prediction)
    gradient = tape.gradient(loss, prediction).numpy()
    present = y_true[..., 2] > 0
    assert present.any() and (~present).any()
    assert np.all(np.abs(gradient[present][:, :2]).sum(axis=-1) > 0)
    assert np.all(gradient[~present][:, :2] == 0)
    assert np.all(gradient[..., 2] != 0)


def test_targets_dataset_matches_cell_targets():
    images = np.stack([blob_image(), blob_image(centres=[(40, 40)])])
    labels = np.array([0, 1])
    for dataset in (tf.data.Dataset.from_tensor_slices((images, labels)).batch(2),
                    tf.data.Dataset.from_tensor_slices(images).batch(2, drop_remainder=True)):
        mapped = kt.targets_dataset(dataset, 8, 2, "sift")
        assert mapped.element_spec[1].shape.as_list()[1:] == [6, 6, 2, 3]
        (batch_images, targets), = list(mapped)
        np.testing.assert_array_equal(batch_images.numpy(), images)
        np.testing.assert_allclose(targets.numpy(), kt.cell_targets(images, 8, 2))
    with pytest.raises(ValueError, match="height 48 is not divisible by cell_size_px=7"):
        kt.targets_dataset(tf.data.Dataset.from_tensor_slices(images).batch(2), 7, 2)


def test_pretraining_loss_trains_the_pretrainer():
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig(detector={"kind": "grid"})
    rng = np.random.default_rng(0)
    images = np.stack([blob_image(centres=[tuple(c) for c in rng.integers(4, 44, size=(4, 2))])
                       for _ in range(8)])
    targets = kt.cell_targets(images, kt.pretraining_cell_size(config),
                              config.detector.points_per_cell)
    model = build_keypoint_pretrainer(config)
    assert model.output_shape[1:] == targets.shape[1:]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kt.pretraining_loss)
    history = model.fit(images, targets, batch_size=8, epochs=6, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < history[0]
