"""Training patches made on the training device equal the CPU path's, given the same draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiled_unet.training.augment import AugmentConfig, augment
from tiled_unet.training.augment_device import DevicePatches, PatchDraw, device_bytes, draw_patch
from tiled_unet.training.datasets import Example, prepare
from tiled_unet.synthetic import nuclei
from tiled_unet.training.loop import TrainConfig, new_model, train

CONFIGS = {
    "all": AugmentConfig(noise_std=0.0),
    "rigid": AugmentConfig(elastic=False, noise_std=0.0),
    "flips": AugmentConfig(elastic=False, rotation=0.0, scale=(1.0, 1.0), noise_std=0.0),
    "far": AugmentConfig(elastic_std=40.0, scale=(0.5, 0.6), noise_std=0.0),  # points several widths outside
    "none": AugmentConfig.none(),
}
SHAPES = {2: ((64, 80), (40, 48)), 3: ((12, 40, 44), (6, 20, 24))}


def example(shape, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((channels, *shape)).astype(np.float32)
    targets = rng.integers(0, 3, shape).astype(np.uint8)
    targets[rng.random(shape) < 0.05] = 255
    weights = rng.random(shape).astype(np.float32)
    empty = np.zeros((0, len(shape)), np.int64)
    return Example(image, np.zeros(shape, np.int32), targets, weights, empty, image)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_device_patches_equal_the_cpu_augmentation(ndim, name):
    shape, out = SHAPES[ndim]
    config = CONFIGS[name]
    ex = example(shape, channels=2)
    crop = tuple(slice((i - o) // 2, (i - o) // 2 + o) for i, o in zip(shape, out))
    patches = DevicePatches([ex], shape, out, 0.0, config, np.random.default_rng(0), "cpu")
    for seed in range(4):
        cpu_rng, device_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        [cpu_rng.integers(n) for n in shape]  # sample_patch's centre (the patch region is the whole image here)
        image, (targets,), (weights,) = augment(ex.image, labels=(ex.targets,), floats=(ex.weights,), config=config,
                                                rng=cpu_rng, companion_region=crop)
        draw = draw_patch(0, ex, shape, 0.0, config, device_rng)
        assert cpu_rng.random() == device_rng.random()  # the same draws, in the same order
        centred = PatchDraw(0, (np.array(shape) - 1) / 2.0, draw.matrix, draw.nodes, draw.intensity)
        x, t, w = patches.make_batch([centred])
        assert x.shape == (1, 2, *shape) and t.shape == w.shape == (1, *out) and t.dtype == torch.int64
        np.testing.assert_allclose(x[0].numpy(), image, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(w[0].numpy(), weights, atol=1e-4, rtol=1e-4)
        assert (t[0].numpy() != targets).mean() < 1e-3  # nearest: only points within float error of a tie


def test_noise_and_intensity_on_the_device():
    shape = (32, 32)
    ex = example(shape)
    ex.image[:] = 0.5
    config = AugmentConfig.none()
    noisy = AugmentConfig(elastic=False, flip_probability=0.0, rot90=False, rotation=0.0, scale=(1.0, 1.0),
                          gamma=(1.0, 1.0), intensity_scale=(2.0, 2.0), intensity_shift=0.0, noise_std=0.4)
    plain = DevicePatches([ex], shape, shape, 0.0, config, np.random.default_rng(0), "cpu")
    x, _, _ = next(plain.epoch(1, 1))
    np.testing.assert_array_equal(x.numpy(), 0.5)
    patches = DevicePatches([ex], shape, shape, 0.0, noisy, np.random.default_rng(0), "cpu")
    draws = [patches.draw() for _ in range(8)]
    generator = torch.Generator().manual_seed(1)
    x, _, _ = patches.make_batch(draws, generator)
    for draw, patch in zip(draws, x):
        assert 0.0 <= draw.intensity[0, 3] <= 0.4
        assert float(patch.mean()) == pytest.approx(1.0, abs=0.1)  # 0.5 scaled by 2
        assert float(patch.std()) == pytest.approx(draw.intensity[0, 3], rel=0.15, abs=0.01)
    again, _, _ = patches.make_batch(draws, torch.Generator().manual_seed(1))
    torch.testing.assert_close(x, again, rtol=0, atol=0)


def test_patches_come_from_the_data_around_the_centres():
    """Without augmentation a patch is the mirrored crop around its drawn centre, foreground-biased."""
    image, labels = nuclei((96, 96), count=8, seed=0)
    net = new_model(2, depth=2, base_channels=4)
    ex = prepare(image[None], labels, net.model_config, w0=10, sigma=5, boundary_width=2, ignore_label=None,
                 spacing=None, rng=np.random.default_rng(0))
    patches = DevicePatches([ex], (40, 40), (12, 12), 1.0, None, np.random.default_rng(0), "cpu")
    draws = [patches.draw() for _ in range(6)]
    x, t, w = patches.make_batch(draws)
    from tiled_unet.training.datasets import _region

    for draw, patch, target, weight in zip(draws, x, t, w):
        start = np.rint(draw.centre - 19.5).astype(int)
        assert labels[tuple(start + 20)] > 0  # foreground_fraction=1: centred on a cell pixel
        np.testing.assert_allclose(patch.numpy(), _region(ex.image, start, (40, 40)), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(target.numpy(), _region(ex.targets, start + 14, (12, 12)))
        np.testing.assert_allclose(weight.numpy(), _region(ex.weights, start + 14, (12, 12)), rtol=1e-4, atol=1e-4)
    assert device_bytes([ex]) == 96 * 96 * 4 * 3


def test_training_with_augment_on_device_is_reproducible_and_checked():
    pairs = [nuclei((96, 96), count=10, seed=s) for s in range(3)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    fast = dict(epochs=2, steps_per_epoch=3, batch_size=2, patch_shape=(32, 32), device="cpu", augment_on="device")

    def run():
        torch.manual_seed(0)
        return train(images, labels, init=new_model(2, depth=2, base_channels=4), **fast)

    a, b = run(), run()
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    assert a.model_config.training["config"]["augment_on"] == "device"
    with pytest.raises(ValueError, match="augment_on must be 'cpu' or 'device'"):
        TrainConfig(augment_on="gpu")
    with pytest.raises(ValueError, match="set workers=0"):
        TrainConfig(augment_on="device", workers=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_patches_equal_cpu_patches():
    shape, out = SHAPES[3]
    ex = example(shape)
    config = CONFIGS["all"]
    draws = [draw_patch(0, ex, shape, 0.0, config, np.random.default_rng(s)) for s in range(4)]
    on_cpu = DevicePatches([ex], shape, out, 0.0, config, np.random.default_rng(0), "cpu").make_batch(draws)
    on_cuda = DevicePatches([ex], shape, out, 0.0, config, np.random.default_rng(0), "cuda").make_batch(draws)
    for a, b in zip(on_cpu, on_cuda):
        assert b.device.type == "cuda"
        if a.dtype == torch.int64:
            assert (a != b.cpu()).float().mean() < 1e-3
        else:
            torch.testing.assert_close(a, b.cpu(), atol=1e-4, rtol=1e-4)
