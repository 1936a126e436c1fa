"""Reconstruction references against hand-worked cases and plain NumPy SSIM and PCA."""
import json
import math

import numpy as np
import pytest

from keypoint_gnn import reconstruction_references as refs

C1 = 0.01**2
C2 = 0.03**2


def gaussian_window(size=11, sigma=1.5):
    coords = np.arange(size) - (size - 1) / 2.0
    profile = np.exp(-coords**2 / (2.0 * sigma**2))
    window = np.outer(profile, profile)
    return window / window.sum()


def filter_valid(image, window):
    """(H, W) -> (H - 10, W - 10): window-weighted sums over every full 11x11 patch."""
    patches = np.lib.stride_tricks.sliding_window_view(image, window.shape)
    return np.einsum("ijkl,kl->ij", patches, window)


def naive_ssim(originals, reconstructions):
    """Mean over images of the SSIM map averaged over pixels and channels (Wang et al. 2004)."""
    window = gaussian_window()
    per_image = []
    for x_image, y_image in zip(originals.astype(np.float64), reconstructions.astype(np.float64)):
        per_channel = []
        for channel in range(x_image.shape[-1]):
            x, y = x_image[..., channel], y_image[..., channel]
            mu_x, mu_y = filter_valid(x, window), filter_valid(y, window)
            var_x = filter_valid(x * x, window) - mu_x**2
            var_y = filter_valid(y * y, window) - mu_y**2
            cov_xy = filter_valid(x * y, window) - mu_x * mu_y
            ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov_xy + C2)
                        / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2)))
            per_channel.append(ssim_map.mean())
        per_image.append(np.mean(per_channel))
    return float(np.mean(per_image))


def constant_images(values, side=12):
    return np.stack([np.full((side, side, 1), v, np.float32) for v in values])


# --- image_quality -------------------------------------------------------------------------


def test_identical_images_are_perfect(rng):
    images = rng.uniform(size=(2, 12, 12, 3)).astype(np.float32)
    quality = refs.image_quality(images, images.copy())
    assert quality["mse"] == 0.0
    assert quality["psnr"] == math.inf
    assert quality["ssim"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("offset", [0.1, 0.05])
def test_constant_offset_gives_squared_offset(rng, offset):
    images = rng.uniform(0.2, 0.8, size=(3, 12, 13, 2))
    quality = refs.image_quality(images, images + offset)
    assert quality["mse"] == pytest.approx(offset**2, rel=1e-9)
    assert quality["psnr"] == pytest.approx(-10.0 * math.log10(offset**2), rel=1e-9)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_numpy_gaussian_ssim(rng, channels):
    originals = rng.uniform(size=(3, 16, 16, channels)).astype(np.float32)
    noise = rng.normal(scale=0.1, size=originals.shape)
    reconstructions = np.clip(originals + noise, 0.0, 1.0).astype(np.float32)
    quality = refs.image_quality(originals, reconstructions)
    assert quality["ssim"] == pytest.approx(naive_ssim(originals, reconstructions), abs=1e-4)


def test_ssim_averages_channels_with_different_quality(rng):
    # Channel 0 reconstructed exactly, channel 1 badly: the channel mean must be taken.
    originals = rng.uniform(size=(2, 16, 16, 2)).astype(np.float32)
    reconstructions = originals.copy()
    reconstructions[..., 1] = rng.uniform(size=(2, 16, 16))
    quality = refs.image_quality(originals, reconstructions)
    assert quality["ssim"] == pytest.approx(naive_ssim(originals, reconstructions), abs=1e-4)
    assert 0.4 < quality["ssim"] < 0.6


@pytest.mark.parametrize("originals_shape, reconstructions_shape", [
    ((2, 12, 12, 1), (2, 12, 12, 3)),
    ((2, 12, 12, 1), (3, 12, 12, 1)),
    ((12, 12, 1), (12, 12, 1)),
    ((2, 10, 12, 1), (2, 10, 12, 1)),
    ((2, 12, 10, 1), (2, 12, 10, 1)),
])
def test_image_quality_rejects_bad_shapes(originals_shape, reconstructions_shape):
    originals = np.zeros(originals_shape, np.float32)
    reconstructions = np.zeros(reconstructions_shape, np.float32)
    with pytest.raises(ValueError) as error:
        refs.image_quality(originals, reconstructions)
    message = str(error.value)
    assert str(originals_shape) in message or str(reconstructions_shape) in message


# --- mean_image_reference ------------------------------------------------------------------


def test_mean_image_reference_hand_worked():
    train = constant_images([0.2, 0.6])  # mean image: 0.4 everywhere
    test = constant_images([0.5, 0.4])
    quality = refs.mean_image_reference(train, test)
    # Errors 0.1 and 0 -> mse (0.01 + 0) / 2; constant images: SSIM = luminance term only.
    assert quality["mse"] == pytest.approx(0.005, rel=1e-6)
    assert quality["psnr"] == pytest.approx(10.0 * math.log10(1.0 / 0.005), rel=1e-6)
    luminance = (2 * 0.4 * 0.5 + C1) / (0.4**2 + 0.5**2 + C1)
    # TF's float32 variance E[x^2] - mu^2 leaves ~1e-8 of rounding against C2 = 9e-4.
    assert quality["ssim"] == pytest.approx((luminance + 1.0) / 2.0, abs=1e-4)


def test_mean_image_reference_rejects_mismatched_image_shapes():
    with pytest.raises(ValueError, match=r"\(2, 12, 12, 1\).*\(1, 12, 13, 1\)"):
        refs.mean_image_reference(np.zeros((2, 12, 12, 1)), np.zeros((1, 12, 13, 1)))


# --- pca_reference -------------------------------------------------------------------------


def affine_subspace_images(rng, num, dimensions, shape=(12, 12, 1)):
    """Images mean + sum_k c_k b_k in [0, 1]: exactly `dimensions`-dimensional affine data."""
    pixels = int(np.prod(shape))
    mean = rng.uniform(0.4, 0.6, size=pixels)
    basis, _ = np.linalg.qr(rng.normal(size=(pixels, dimensions)))  # orthonormal columns

    def draw(count):
        coefficients = rng.uniform(-0.5, 0.5, size=(count, dimensions))
        return (mean + coefficients @ basis.T).reshape((count,) + shape)

    return draw(num), draw(4)


def test_pca_reconstructs_affine_subspace_with_its_dimension(rng):
    train, test = affine_subspace_images(rng, num=10, dimensions=3)
    assert train.min() >= 0.0 and train.max() <= 1.0 and test.min() >= 0.0
    exact = refs.pca_reference(train, test, components=3)
    short = refs.pca_reference(train, test, components=2)
    assert exact["components_used"] == 3
    assert exact["mse"] < 1e-20
    assert exact["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert short["mse"] > 1e-5


def test_pca_caps_components_at_rank(rng):
    train = rng.uniform(size=(5, 12, 12, 1))
    test = rng.uniform(size=(2, 12, 12, 1))
    capped = refs.pca_reference(train, test, components=10)
    at_rank = refs.pca_reference(train, test, components=4)
    assert capped["components_requested"] == 10
    assert capped["components_used"] == 4  # min(5 - 1, 144)
    assert capped["mse"] == pytest.approx(at_rank["mse"], rel=1e-12)


def test_pca_matches_eigh_and_lstsq_reference(rng):
    train = rng.uniform(size=(20, 12, 12, 2))
    test = rng.uniform(size=(3, 12, 12, 2))
    components = 5
    flat_train = train.reshape(20, -1)
    flat_test = test.reshape(3, -1)
    mean = flat_train.mean(axis=0)
    centred = flat_train - mean
    # Top principal directions from the covariance matrix, then least-squares codes.
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = eigenvectors[:, np.argsort(eigenvalues)[::-1][:components]]  # (P, K)
    codes, *_ = np.linalg.lstsq(top, (flat_test - mean).T, rcond=None)
    expected = np.clip(mean + (top @ codes).T, 0.0, 1.0).reshape(test.shape)

    result = refs.pca_reference(train, test, components)
    expected_mse = np.mean((expected - test) ** 2)
    assert result["components_used"] == components
    assert result["mse"] == pytest.approx(expected_mse, rel=1e-9)
    assert result["psnr"] == pytest.approx(10.0 * math.log10(1.0 / expected_mse), rel=1e-9)
    assert result["ssim"] == pytest.approx(naive_ssim(test, expected), abs=1e-4)


@pytest.mark.parametrize("num", [8, 300])  # fewer images than pixels (Gram), and more
def test_pca_matches_numpy_svd_subspace(rng, num):
    """Both eigendecomposition paths give the projection of a full SVD's top components."""
    train = rng.uniform(size=(num, 12, 12, 1))
    test = rng.uniform(size=(4, 12, 12, 1))
    components = 5
    flat_train = train.reshape(num, -1)
    mean = flat_train.mean(axis=0)
    _, _, right = np.linalg.svd(flat_train - mean, full_matrices=False)
    top = right[:components]
    expected = np.clip(mean + ((test.reshape(4, -1) - mean) @ top.T) @ top, 0, 1)

    pca = refs.fit_pca(train, components)
    basis = pca["basis"]
    assert basis.shape == (components, 144)
    np.testing.assert_allclose(basis @ basis.T, np.eye(components), atol=1e-10)
    np.testing.assert_allclose(basis.T @ basis, top.T @ top, atol=1e-8)  # same projector
    result = refs.apply_pca(pca, test)
    assert result["mse"] == pytest.approx(np.mean((expected.reshape(test.shape) - test) ** 2),
                                          rel=1e-9)


def test_pca_drops_directions_the_data_does_not_have(rng):
    """Duplicated images: rank 2 data asked for 5 components keeps 2 and reconstructs exactly
    what lies in their span."""
    two = rng.uniform(0.2, 0.8, size=(3, 12, 12, 1))
    train = np.concatenate([two, two, two])  # 9 images, centred rank 2
    result = refs.pca_reference(train, two, components=5)
    assert result["components_requested"] == 5
    assert result["components_used"] == 2
    assert result["mse"] < 1e-20


def test_apply_pca_rejects_other_image_shapes(rng):
    pca = refs.fit_pca(rng.uniform(size=(4, 12, 12, 1)), 2)
    with pytest.raises(ValueError, match=r"\(12, 12, 1\).*\(12, 13, 1\)"):
        refs.apply_pca(pca, rng.uniform(size=(2, 12, 13, 1)))


@pytest.mark.parametrize("components", [0, -1, 2.0, True, "4", None])
def test_pca_rejects_bad_components(rng, components):
    train = rng.uniform(size=(4, 12, 12, 1))
    with pytest.raises(ValueError, match="components="):
        refs.pca_reference(train, train, components)


def test_pca_needs_two_training_images(rng):
    with pytest.raises(ValueError, match=r"\(1, 12, 12, 1\)"):
        refs.pca_reference(rng.uniform(size=(1, 12, 12, 1)), rng.uniform(size=(1, 12, 12, 1)), 1)


# --- bottleneck_numbers and the report -----------------------------------------------------


def test_bottleneck_numbers_hand_worked():
    assert refs.bottleneck_numbers(64, 16) == 1152
    assert refs.bottleneck_numbers(np.int64(1), 1) == 3


@pytest.mark.parametrize("num_keypoints, node_channels", [
    (0, 16), (64, 0), (-1, 16), (64.0, 16), (True, 16), (64, None),
])
def test_bottleneck_numbers_rejects_bad_input(num_keypoints, node_channels):
    with pytest.raises(ValueError, match="must be a positive integer"):
        refs.bottleneck_numbers(num_keypoints, node_channels)


def test_reference_report_combines_both_and_is_json(rng):
    train = rng.uniform(size=(6, 12, 12, 1))
    test = rng.uniform(size=(2, 12, 12, 1))
    unseen = rng.uniform(size=(3, 12, 12, 1))
    report = refs.reference_report(train, {"test": test, "test_unseen": unseen}, components=3)
    assert set(report) == {"test", "test_unseen"}
    for name, images in (("test", test), ("test_unseen", unseen)):
        assert report[name]["mean_image"] == refs.mean_image_reference(train, images)
        assert report[name]["pca"] == refs.pca_reference(train, images, 3)
        assert set(report[name]["pca"]) == {"components_requested", "components_used",
                                            "mse", "psnr", "ssim"}
    json.dumps(report)
