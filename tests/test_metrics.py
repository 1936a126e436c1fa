"""Keypoint metrics against hand-worked cases and naive double-loop references."""
import json
import math

import numpy as np
import pytest

from keypoint_gnn import metrics

# Three points of a 3-4-5 right triangle: d(a,b)=3, d(a,c)=4, d(b,c)=5.
TRIANGLE = np.array([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]])


def naive_redundancy(positions, min_distance):
    shares = []
    for image in positions:
        pairs = close = 0
        for i in range(len(image)):
            for j in range(i + 1, len(image)):
                pairs += 1
                close += math.dist(image[i], image[j]) < min_distance
        shares.append(close / pairs)
    return sum(shares) / len(shares)


def naive_nearest(positions):
    values = []
    for image in positions:
        for i, p in enumerate(image):
            values.append(min(math.dist(p, q) for j, q in enumerate(image) if j != i))
    return sum(values) / len(values)


def naive_hit_rate(positions, parts, radius):
    hits = [any(math.dist(p, q) <= radius for q in image_parts)
            for image, image_parts in zip(positions, parts) for p in image]
    return sum(hits) / len(hits)


def naive_coverage(positions, parts, radius):
    found = [any(math.dist(p, q) <= radius for p in image)
             for image, image_parts in zip(positions, parts) for q in image_parts]
    return sum(found) / len(found)


@pytest.mark.parametrize("min_distance, expected", [(2.9, 0.0), (3.5, 1 / 3), (4.5, 2 / 3), (5.1, 1.0)])
def test_redundancy_triangle(min_distance, expected):
    assert metrics.redundancy(TRIANGLE, min_distance) == pytest.approx(expected)


def test_redundancy_is_strict_and_averages_over_images():
    # Image 1: one pair at exactly distance 3 (not closer than 3); image 2: all pairs coincide.
    positions = np.array([[[0, 0], [3, 0]], [[1, 1], [1, 1]]], dtype=float)
    assert metrics.redundancy(positions, 3.0) == pytest.approx(0.5)


def test_mean_nearest_neighbour_triangle():
    # Nearest: a->b 3, b->a 3, c->a 4.
    assert metrics.mean_nearest_neighbour_distance(TRIANGLE) == pytest.approx(10 / 3)


def test_hit_rate_and_coverage_by_hand():
    positions = np.array([[[0.0, 0.0], [10.0, 10.0]]])
    parts = np.array([[[0.0, 1.0], [0.0, -1.5], [20.0, 20.0]]])
    # Keypoint (0,0) is 1 from a part, (10,10) is far from all: hit rate 1/2.
    assert metrics.hit_rate(positions, parts, radius=1.0) == pytest.approx(0.5)
    # Parts (0,1) found at radius 1; (0,-1.5) found only at radius 1.5; (20,20) never.
    assert metrics.coverage(positions, parts, radius=1.0) == pytest.approx(1 / 3)
    assert metrics.coverage(positions, parts, radius=1.5) == pytest.approx(2 / 3)


def test_nan_parts_are_padding():
    positions = np.array([[[0.0, 0.0]], [[5.0, 5.0]]])
    parts = np.array([[[0.0, 0.5], [np.nan, np.nan]], [[9.0, 9.0], [5.0, 5.0]]])
    assert metrics.coverage(positions, parts, radius=1.0) == pytest.approx(2 / 3)
    assert metrics.hit_rate(positions, parts, radius=1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_naive_loops_on_random_data(seed):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, 16, size=(3, 12, 2))
    parts = rng.uniform(0, 16, size=(3, 5, 2))
    assert metrics.redundancy(positions, 3.0) == pytest.approx(naive_redundancy(positions, 3.0))
    assert metrics.mean_nearest_neighbour_distance(positions) == pytest.approx(naive_nearest(positions))
    assert metrics.hit_rate(positions, parts, 2.5) == pytest.approx(naive_hit_rate(positions, parts, 2.5))
    assert metrics.coverage(positions, parts, 2.5) == pytest.approx(naive_coverage(positions, parts, 2.5))


def test_border_fraction_by_hand_and_uniform():
    offsets = np.array([[0.5, 0.5], [0.05, 0.5], [0.5, 0.95], [0.0, 1.0]])
    assert metrics.border_fraction(offsets) == pytest.approx(0.75)
    assert metrics.border_fraction(offsets, margin=0.0) == pytest.approx(0.0)
    uniform = np.random.default_rng(0).uniform(size=(4, 6, 6, 2, 2))
    grid = np.stack(np.meshgrid((np.arange(100) + 0.5) / 100, (np.arange(100) + 0.5) / 100), -1)
    assert metrics.border_fraction(grid) == pytest.approx(1 - 0.8**2)
    assert 0.2 < metrics.border_fraction(uniform) < 0.5


def test_feature_to_image_pixels():
    # stride 4: feature pixel 0 covers image pixels 0..3, centre 1.5; pixel 2 -> 9.5.
    positions = np.array([[[0.0, 2.0]]])
    np.testing.assert_allclose(metrics.feature_to_image_pixels(positions, 4), [[[1.5, 9.5]]])
    np.testing.assert_allclose(metrics.feature_to_image_pixels(positions, 1), positions)


def test_psnr():
    assert metrics.psnr(0.01) == pytest.approx(20.0)
    assert metrics.psnr(1.0, max_value=255.0) == pytest.approx(20 * math.log10(255))
    assert metrics.psnr(0.0) == math.inf
    np.testing.assert_allclose(metrics.psnr(np.array([0.1, 0.001])), [10.0, 30.0])


def test_fixed_position_share_hand_cases():
    lattice = np.tile(np.array([[[0.2, 0.3], [5.0, 7.0]]]), (4, 1, 1))  # same 2 points in 4 images
    assert metrics.fixed_position_share(lattice, 1.0) == 1.0
    moving = lattice + np.arange(4)[:, None, None] * 2.0  # every image shifted by 2 px
    assert metrics.fixed_position_share(moving, 1.0) == pytest.approx(2 / 8)
    # 3 of 4 images share the lattice; the fourth moves one of its 2 points: 7 of 8 in the top 2.
    mixed = lattice.copy()
    mixed[3, 0] = [9.0, 9.0]
    assert metrics.fixed_position_share(mixed, 1.0) == pytest.approx(7 / 8)
    # Bins: 0.2 and 0.9 share the bin [0, 1); with bin 0.5 they do not.
    near = np.array([[[0.2, 0.2]], [[0.9, 0.9]]])
    assert metrics.fixed_position_share(near, 1.0) == 1.0
    assert metrics.fixed_position_share(near, 0.5) == pytest.approx(1 / 2)
    assert metrics.fixed_position_share(np.zeros((0, 3, 2)), 1.0) == 0.0


def naive_fixed_position_share(positions, bin_size):
    counts = {}
    for image in positions:
        for y, x in image:
            key = (math.floor(y / bin_size), math.floor(x / bin_size))
            counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.values(), reverse=True)[:positions.shape[1]]
    return sum(top) / (positions.shape[0] * positions.shape[1])


def test_fixed_position_share_matches_naive_count():
    rng = np.random.default_rng(3)
    positions = rng.integers(0, 6, size=(20, 5, 2)).astype(float) + rng.uniform(0, 0.99, (20, 5, 2))
    assert metrics.fixed_position_share(positions, 1.0) == pytest.approx(
        naive_fixed_position_share(positions, 1.0))


@pytest.mark.parametrize("bin_size", [0, -1.0, float("nan"), "1"])
def test_fixed_position_share_rejects_bad_bins(bin_size):
    with pytest.raises(ValueError, match=r"bin_size=.*positive finite"):
        metrics.fixed_position_share(np.zeros((1, 2, 2)), bin_size)


def test_selection_overlap_hand_case():
    selected = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    reference = np.array([[3, 2, 9, 8], [7, 6, 5, 4]])  # 2 of 4 shared, then all 4
    assert metrics.selection_overlap(selected, reference) == pytest.approx((0.5 + 1.0) / 2)
    assert metrics.selection_overlap(np.zeros((0, 3), int), np.zeros((0, 3), int)) == 0.0
    with pytest.raises(ValueError, match=r"\(B, N\).*\(2, 4\) and \(2, 3\)"):
        metrics.selection_overlap(selected, reference[:, :3])


def test_report_is_json_and_skips_parts():
    report = metrics.keypoint_report(TRIANGLE, radius=1.0, min_distance=3.5)
    assert set(report) == {"num_images", "keypoints_per_image", "redundancy",
                           "mean_nearest_neighbour_distance"}
    assert report["redundancy"] == pytest.approx(1 / 3)
    parts = np.array([[[0.0, 0.0]]])
    full = metrics.keypoint_report(TRIANGLE, parts, radius=1.0, min_distance=3.5,
                                   offsets=np.full((2, 2), 0.5), position_bin=1.0)
    assert full["hit_rate"] == pytest.approx(1 / 3)
    assert full["coverage"] == pytest.approx(1.0)
    assert full["border_fraction"] == 0.0
    assert full["fixed_position_share"] == 1.0  # one image: its own positions are the usual ones
    json.dumps(full)
    assert all(isinstance(v, (int, float)) for v in full.values())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.redundancy(np.zeros((4, 2)), 1.0), r"\(B, N, 2\).*\(4, 2\)"),
        (lambda: metrics.redundancy(np.zeros((1, 4, 3)), 1.0), r"\(1, 4, 3\)"),
        (lambda: metrics.hit_rate(TRIANGLE, np.zeros((1, 2, 2)), -1.0), "radius=-1.0"),
        (lambda: metrics.coverage(TRIANGLE, np.zeros((2, 2, 2)), 1.0), "1 images but parts hold 2"),
        (lambda: metrics.redundancy(TRIANGLE, -2), "min_distance=-2"),
        (lambda: metrics.mean_nearest_neighbour_distance(np.zeros((1, 1, 2))), "N=1"),
        (lambda: metrics.border_fraction(np.array([[0.5, 1.2]])), r"\[0, 1\].*1.2"),
        (lambda: metrics.border_fraction(np.full((2, 2), 0.5), margin=0.7), "margin=0.7"),
        (lambda: metrics.feature_to_image_pixels(TRIANGLE, 0), "stride=0"),
        (lambda: metrics.psnr(-0.1), "non-negative"),
        (lambda: metrics.psnr(0.1, max_value=0), "max_value=0"),
    ],
)
def test_bad_inputs_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
