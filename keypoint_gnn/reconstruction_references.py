"""Reference figures a keypoint-graph autoencoder's reconstructions are compared against.

A keypoint graph carries `bottleneck_numbers(num_keypoints, node_channels)` numbers per image.
Two baselines tell whether its reconstructions are worth that budget:

- the mean training image, predicted for every test image (the floor any model must beat);
- PCA on the flattened training images with as many components as the graph carries numbers
  (the best linear code of that size, in the least-squares sense on the training set).

Conventions:
- Images are NumPy arrays shaped (N, H, W, C), values in [0, 1]; H and W are at least 11, the
  side of SSIM's Gaussian window.
- Quality is a dict {"mse", "psnr", "ssim"} of Python floats: `mse` is pooled over all pixels
  of all images, `psnr` = 10 * log10(1 / mse) in dB (inf when mse is 0), and `ssim` is the mean
  over images of `tf.image.ssim(..., max_val=1.0)` with its defaults (11x11 Gaussian window,
  sigma 1.5, k1 0.01, k2 0.03, 'valid' filtering, averaged over pixels then channels).
"""
import numpy as np
import scipy.linalg

from keypoint_gnn._backend import tf
from keypoint_gnn.metrics import psnr

SSIM_WINDOW = 11
_ZERO_EIGENVALUE = 1e-10  # eigenvalues below this share of the largest are numerical zeros


def _check_images(name, images):
    """Checks a (N, H, W, C) array with N, C >= 1 and H, W >= 11; returns it as float64."""
    array = np.asarray(images, dtype=np.float64)
    if array.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W, C), got shape {array.shape}")
    num, height, width, channels = array.shape
    if num < 1 or channels < 1:
        raise ValueError(f"{name} must hold at least one image with at least one channel, "
                         f"got shape {array.shape}")
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(f"{name} has {height}x{width} pixels in shape {array.shape}; SSIM's "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} window needs at least "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf values")
    return array


def _check_same_image_shape(train, test):
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"train images {train.shape} and test images {test.shape} must share "
                         "one (H, W, C) image shape")


def image_quality(originals, reconstructions):
    """MSE, PSNR and SSIM of reconstructions against their originals.

    Args:
      originals: (N, H, W, C) images in [0, 1], H, W >= 11.
      reconstructions: (N, H, W, C), the same shape.

    Returns:
      dict of floats: "mse" (pooled over all N * H * W * C values), "psnr" (dB,
      10 * log10(1 / mse), inf when mse is 0) and "ssim" (mean over the N images of
      `tf.image.ssim(..., max_val=1.0)`, in (-1, 1]).
    """
    originals = _check_images("originals", originals)
    reconstructions = _check_images("reconstructions", reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions "
                         f"{reconstructions.shape} must have the same shape")
    mse = float(np.mean(np.square(originals - reconstructions)))
    # tf.image.ssim computes in float32 whatever it is given.
    ssim_per_image = tf.image.ssim(
        tf.constant(originals, tf.float32), tf.constant(reconstructions, tf.float32),
        max_val=1.0)
    return {"mse": mse, "psnr": psnr(mse), "ssim": float(np.mean(ssim_per_image.numpy()))}


def mean_image_reference(train, test):
    """Quality of predicting the mean training image for every test image.

    Args:
      train: (N_train, H, W, C) images in [0, 1], N_train >= 1.
      test: (N_test, H, W, C) images in [0, 1].

    Returns:
      `image_quality` dict {"mse", "psnr", "ssim"} of the mean training image, broadcast to
      (N_test, H, W, C), against `test`.
    """
    train = _check_images("train", train)
    test = _check_images("test", test)
    _check_same_image_shape(train, test)
    mean_image = np.mean(train, axis=0)
    return image_quality(test, np.broadcast_to(mean_image, test.shape))


def fit_pca(train, components):
    """Top principal directions of the training images, for `pca_reference`.

    The training images are flattened to (N_train, P) with P = H * W * C and centred on their
    mean, in float64. The centred data X has rank at most R = min(N_train - 1, P), so at most
    K = min(components, R) directions are kept. They come from the eigendecomposition of the
    smaller of X X^T (N_train x N_train; direction v = X^T u / sqrt(lambda)) and X^T X (P x P),
    computing only the top K eigenpairs (`scipy.linalg.eigh(..., subset_by_index=...)`): the
    same subspace as the top K right singular vectors of X, at a fraction of a full SVD's cost
    (7,666 Imagenette2 images of 64 x 64 x 3 pixels: a trainer's whole evaluation, PCA
    included, took 2 minutes; with a full SVD it had not finished after 17).
    Directions whose eigenvalue is numerically zero (below 1e-10 of the largest: duplicated
    images, constant pixels) carry nothing and are dropped, so K can fall below R.

    Args:
      train: (N_train, H, W, C) images in [0, 1], N_train >= 2.
      components: int >= 1, the number of components asked for (for a fair comparison,
        `bottleneck_numbers` of the keypoint graph).

    Returns:
      dict: "mean" (P,) float64, "basis" (K, P) float64 with orthonormal rows (the top
      directions, largest variance first), "shape" (H, W, C), "components_requested" (int).
    """
    if (not isinstance(components, (int, np.integer)) or isinstance(components, bool)
            or components < 1):
        raise ValueError(f"components={components!r} must be an integer >= 1")
    train = _check_images("train", train)
    if train.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 training images, got train shape {train.shape}")
    flat = train.reshape(train.shape[0], -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    del flat
    num, pixels = centred.shape
    wanted = min(int(components), num - 1, pixels)
    gram = num <= pixels
    square = centred @ centred.T if gram else centred.T @ centred
    size = square.shape[0]
    eigenvalues, vectors = scipy.linalg.eigh(square, subset_by_index=[size - wanted, size - 1])
    del square
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    keep = eigenvalues > _ZERO_EIGENVALUE * max(float(eigenvalues[0]), np.finfo(float).tiny)
    eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
    basis = (centred.T @ vectors / np.sqrt(eigenvalues)).T if gram else vectors.T
    return {"mean": mean, "basis": basis, "shape": train.shape[1:],
            "components_requested": int(components)}


def apply_pca(pca, test):
    """Quality of reconstructing `test` from its coordinates in a `fit_pca` basis.

    A test image x is reconstructed as mean + V_K^T V_K (x - mean), V_K the (K, P) basis, then
    clipped to [0, 1].

    Args:
      pca: the dict `fit_pca` returns.
      test: (N_test, H, W, C) images in [0, 1], shaped like the training images.

    Returns:
      dict: "components_requested" (int), "components_used" (int, K), and the
      `image_quality` keys "mse", "psnr", "ssim" of the reconstructions against `test`.
    """
    test = _check_images("test", test)
    if test.shape[1:] != tuple(pca["shape"]):
        raise ValueError(f"train images {tuple(pca['shape'])} and test {test.shape[1:]} must "
                         "have the same (H, W, C)")
    mean, basis = pca["mean"], pca["basis"]
    codes = (test.reshape(test.shape[0], -1) - mean) @ basis.T  # (N_test, K)
    reconstructions = np.clip(mean + codes @ basis, 0.0, 1.0).reshape(test.shape)
    return {
        "components_requested": pca["components_requested"],
        "components_used": int(basis.shape[0]),
        **image_quality(test, reconstructions),
    }


def pca_reference(train, test, components):
    """Quality of reconstructing test images from their top PCA components of the training set:
    `apply_pca(fit_pca(train, components), test)`.

    Args:
      train: (N_train, H, W, C) images in [0, 1], N_train >= 2.
      test: (N_test, H, W, C) images in [0, 1].
      components: int >= 1, the number of components asked for.

    Returns:
      `apply_pca`'s dict.
    """
    # Checked (and converted to float64 once) before the fit, so a shape mismatch fails fast;
    # fit_pca and apply_pca take the float64 arrays as they are.
    train, test = _check_images("train", train), _check_images("test", test)
    _check_same_image_shape(train, test)
    pca = fit_pca(train, components)
    del train  # this function's float64 copy, if it made one, is not needed any more
    return apply_pca(pca, test)


def bottleneck_numbers(num_keypoints, node_channels):
    """Numbers a keypoint graph carries per image: node features plus (y, x) positions.

    num_keypoints * node_channels + 2 * num_keypoints; e.g. 64 keypoints with 16 channels carry
    64 * 16 + 2 * 64 = 1152 numbers. PCA and a plain conv autoencoder are matched to this size.

    Args:
      num_keypoints: int >= 1, keypoints (graph nodes) per image.
      node_channels: int >= 1, features per node.

    Returns:
      int.
    """
    for name, value in (("num_keypoints", num_keypoints), ("node_channels", node_channels)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(num_keypoints) * int(node_channels) + 2 * int(num_keypoints)


def reference_report(train, tests, components):
    """Both reference figures for each test split, in one JSON-serialisable dict; the PCA basis
    is fitted once.

    Args:
      train: (N_train, H, W, C) images in [0, 1], N_train >= 2.
      tests: {split name: (N_test, H, W, C) images in [0, 1]}.
      components: int >= 1, PCA components asked for (see `fit_pca`).

    Returns:
      {split name: {"mean_image": `mean_image_reference(train, images)`,
                    "pca": `apply_pca(fit_pca(train, components), images)`}}.
    """
    pca = fit_pca(train, components)
    return {name: {"mean_image": mean_image_reference(train, images),
                   "pca": apply_pca(pca, images)}
            for name, images in tests.items()}


__all__ = [
    "apply_pca",
    "bottleneck_numbers",
    "fit_pca",
    "image_quality",
    "mean_image_reference",
    "pca_reference",
    "reference_report",
]
