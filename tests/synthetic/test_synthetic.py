"""Synthetic nuclei and touching cells: determinism, label invariants, contrast, geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from tiled_unet.synthetic import NucleiConfig, nuclei, render_nuclei, sample, touching_cells

DENSE = NucleiConfig(density=(0.5, 0.5), cluster_fraction=(0.6, 0.6), overlap=(0.15, 0.15), radius=(5.0, 9.0))


def adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different non-zero labels that share a face (no background between them)."""
    pairs = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel()
        b = np.moveaxis(labels, axis, 0)[1:].ravel()
        touch = (a != b) & (a > 0) & (b > 0)
        pairs |= {(int(min(x, y)), int(max(x, y))) for x, y in zip(a[touch], b[touch])}
    return pairs


def assert_valid_labels(labels: np.ndarray, min_size: int = 10) -> None:
    """IDs 1..N, each one face-connected component of at least ``min_size`` pixels."""
    assert labels.dtype == np.uint32
    n = int(labels.max())
    assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, n + 1))
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min(initial=min_size) >= min_size
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        assert ndi.label(labels[box] == label)[1] == 1, f"label {label} is split"


@pytest.mark.parametrize("shape", [(96, 80), (16, 48, 40)])
def test_deterministic_by_seed(shape):
    a = render_nuclei(shape, rng=3)
    b = render_nuclei(shape, rng=np.random.default_rng(3))
    c = render_nuclei(shape, rng=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    cells = [touching_cells(shape, 2, cells_per_cluster=(2, 3), radius=(3.0, 4.0), seed=5) for _ in range(2)]
    assert np.array_equal(cells[0], cells[1]) and cells[0].max() >= 4


@pytest.mark.parametrize("shape, spacing", [((128, 96), None), ((20, 64, 48), None), ((12, 64, 64), (3.0, 1.0, 1.0))])
def test_dtypes_shapes_and_label_invariants(shape, spacing):
    for seed in range(4):
        image, labels = render_nuclei(shape, rng=seed, spacing=spacing)
        assert image.shape == labels.shape == shape
        assert image.dtype == np.uint16
        assert_valid_labels(labels)


def test_dense_clumps_touch_and_stay_valid():
    """Clumped nuclei share borders: many pairs of labels touch with no background gap."""
    image, labels = render_nuclei((192, 192), DENSE, rng=0)
    assert_valid_labels(labels)
    assert labels.max() > 60
    assert len(adjacent_pairs(labels)) > 15


def test_sparse_config_has_no_touching_nuclei():
    config = NucleiConfig(density=(0.05, 0.05), radius=(6.0, 8.0), cluster_fraction=(0, 0), overlap=(0, 0))
    labels = render_nuclei((160, 160), config, rng=1)[1]
    assert labels.max() >= 3
    assert not adjacent_pairs(labels)


def test_nuclei_brighter_than_background():
    seen = 0
    for seed in range(30):
        image, labels = render_nuclei((128, 128), rng=seed)
        if labels.max() == 0:
            continue
        seen += 1
        image = image.astype(float)
        far = ~ndi.binary_dilation(labels > 0, iterations=3)
        contrast = (image[labels > 0].mean() - image[far].mean()) / image[far].std()
        assert contrast > 3, (seed, contrast)
    assert seen >= 20


def test_labels_do_not_depend_on_optics_or_camera():
    """A pixel's label is the nucleus that owns it before blur and noise."""
    clean = NucleiConfig(psf_sigma=(0.5, 0.5), photons=(1e4, 1e4), haze=(0, 0))
    rough = NucleiConfig(psf_sigma=(2.0, 2.0), photons=(20, 20), haze=(0.3, 0.3))
    a, la = render_nuclei((96, 96), clean, rng=8)
    b, lb = render_nuclei((96, 96), rough, rng=8)
    assert np.array_equal(la, lb) and la.max() > 0
    assert not np.array_equal(a, b)


def test_anisotropic_spacing_gives_round_nuclei():
    """With spacing (3, 1, 1), nuclei are about 3x thinner in Z pixels, i.e. round physically."""
    config = NucleiConfig(aspect=(1.0, 1.0), irregularity=(0, 0), irregular_fraction=(0, 0),
                          mitotic_fraction=(0, 0), radius=(7.0, 7.0), density=(0.1, 0.1))
    labels = render_nuclei((30, 96, 96), config, rng=2, spacing=(3.0, 1.0, 1.0))[1]
    ratios = []
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        if any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape)):
            continue  # cut by the border
        coords = np.argwhere(labels[box] == label)
        std = coords.std(axis=0)
        ratios.append(3.0 * std[0] / std[1:].mean())
    assert len(ratios) >= 3
    assert 0.75 < np.median(ratios) < 1.3


def test_mitotic_nuclei_are_small_and_bright():
    base = dict(density=(0.15, 0.15), cluster_fraction=(0, 0), radius=(9.0, 9.0), brightness_spread=(0.1, 0.1),
                dim_fraction=(0, 0), photons=(3000, 3000), gain=(1, 1), offset=(100, 100), psf_sigma=(0.6, 0.6),
                haze=(0, 0), background=(0.02, 0.02), illumination=(0, 0), saturation_chance=0.0)
    normal = render_nuclei((128, 128), NucleiConfig(mitotic_fraction=(0, 0), **base), rng=0)
    mitotic = render_nuclei((128, 128), NucleiConfig(mitotic_fraction=(1, 1), **base), rng=0)
    area = [np.bincount(lab.ravel())[1:].mean() for _, lab in (normal, mitotic)]
    peak = [ndi.mean(im.astype(float), lab, np.arange(1, lab.max() + 1)).mean() for im, lab in (normal, mitotic)]
    assert area[1] < 0.5 * area[0]
    assert peak[1] > 1.5 * peak[0]


def test_count_is_honoured_when_nuclei_fit():
    image, labels = nuclei((256, 256), count=40, radius=(6.0, 12.0), seed=0)
    assert 30 <= labels.max() <= 40
    assert image.dtype == np.uint16 and labels.dtype == np.uint32
    assert_valid_labels(labels)


@pytest.mark.parametrize("shape", [(20, 20), (1, 1), (5, 7), (3, 4, 5), (1, 30, 30)])
def test_tiny_shapes(shape):
    image, labels = render_nuclei(shape, rng=0)
    assert image.shape == labels.shape == shape
    assert_valid_labels(labels)
    image, labels = nuclei((20, 20), count=2)
    assert image.shape == (20, 20) and image.dtype == np.uint16


def test_noise_free_nuclei():
    image, labels = nuclei((64, 64), count=5, noise=0.0, seed=1)
    assert labels.max() > 0 and image.dtype == np.uint16


@pytest.mark.parametrize("shape, n_clusters, radius", [((256, 256), 10, (8.0, 16.0)), ((40, 96, 96), 4, (6.0, 10.0))])
def test_touching_cells(shape, n_clusters, radius):
    labels = touching_cells(shape, n_clusters, cells_per_cluster=(2, 6), radius=radius, seed=1)
    assert labels.shape == shape
    assert_valid_labels(labels, min_size=10)
    clusters, found = ndi.label(labels > 0)
    assert found == n_clusters  # well separated
    pairs = adjacent_pairs(labels)
    sizes = []
    for c in range(1, n_clusters + 1):
        cells = set(np.unique(labels[clusters == c]).tolist())
        assert 2 <= len(cells) <= 6
        inner = [p for p in pairs if p[0] in cells]
        assert len(inner) >= len(cells) - 1
        sizes.append(len(cells))
    assert len(set(sizes)) > 1  # varied clusters


def test_touching_cells_exact_cluster_size_and_errors():
    labels = touching_cells((128, 128), 3, cells_per_cluster=(4, 4), radius=(6.0, 9.0), seed=2)
    assert labels.max() == 12
    with pytest.raises(ValueError, match="do not fit"):
        touching_cells((24, 24), 5, radius=(8.0, 12.0))
    with pytest.raises(ValueError, match="cells_per_cluster"):
        touching_cells((64, 64), 1, cells_per_cluster=(3, 2))
    with pytest.raises(ValueError, match="shape"):
        touching_cells((64,), 1)


def test_sample_api_unchanged():
    for name, shape in [("nuclei-2d", (256, 256)), ("nuclei-3d", (32, 128, 128))]:
        image, labels = sample(name)
        assert image.shape == labels.shape == shape
        assert image.dtype == np.uint16 and labels.dtype == np.uint32
        assert labels.max() > 10
        assert np.array_equal(image, sample(name)[0])
    with pytest.raises(ValueError, match="nuclei-2d"):
        sample("cells")


def test_config_round_trip_and_validation():
    config = NucleiConfig(count=12, radius=(5.0, 8.0))
    data = json.loads(json.dumps(config.to_dict()))
    assert NucleiConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown keys"):
        NucleiConfig.from_dict({"radius": [4, 5], "colour": "blue"})
    with pytest.raises(ValueError, match="low <= high"):
        NucleiConfig(radius=(9.0, 4.0))
    with pytest.raises(ValueError, match="cluster_size"):
        NucleiConfig(cluster_size=(1, 3))
    with pytest.raises(ValueError, match="fractions"):
        NucleiConfig(density=(0.5, 1.5))
    with pytest.raises(ValueError, match="shape"):
        render_nuclei((4, 4, 4, 4))
    with pytest.raises(ValueError, match="spacing"):
        render_nuclei((8, 16, 16), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="config"):
        render_nuclei((16, 16), config={"radius": (4, 5)})
