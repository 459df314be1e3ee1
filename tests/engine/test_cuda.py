"""The CUDA paths: exact tiled inference, mixed precision, out-of-memory retry under a real memory cap,
training with AMP. Skipped where no CUDA GPU is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiled_unet
from helpers import reference_probabilities
from tiled_unet.metrics import match
from tiled_unet.synthetic import nuclei, sample
from tiled_unet.training.loop import new_model, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("ndim", [2, 3])
def test_cuda_float32_tiles_equal_whole_image_on_cpu(ndim):
    torch.manual_seed(0)
    net = new_model(ndim, depth=2, base_channels=8).eval()
    image = nuclei((150, 170) if ndim == 2 else (30, 60, 70), count=12, seed=1)[0]
    tile = (64, 64) if ndim == 2 else (32, 36, 36)
    expected = reference_probabilities(image, net)  # on the CPU, before the engine moves the network
    probs = tiled_unet.predict(image, net, device="cuda", precision="float32", tile_shape=tile)
    # cuDNN convolutions use TF32 tensor cores by default (PyTorch's setting), hence the tolerance
    np.testing.assert_allclose(probs, expected, atol=2e-3)


def test_mixed_precision_is_close_to_float32():
    net = tiled_unet.load_model("nuclei-2d")
    image, labels = sample("nuclei-2d")
    full = tiled_unet.predict(image, net, device="cuda", precision="float32")
    auto = tiled_unet.predict(image, net, device="cuda", precision="auto")
    assert np.abs(auto - full).mean() < 0.01
    seg = tiled_unet.segment(image, net, device="cuda", precision="auto")
    assert match(seg, labels, 0.5).ap >= 0.9


def test_out_of_memory_splits_batches_and_tiles_under_a_real_cap():
    torch.manual_seed(0)
    net = new_model(2, depth=3, base_channels=32).eval()
    image = nuclei((1500, 1500), count=200, seed=2)[0]
    options = dict(device="cuda", precision="float32", tile_shape=(1024, 1024), batch_size=4)
    torch.cuda.reset_peak_memory_stats()
    expected = tiled_unet.predict(image, net, **options)
    cap = torch.cuda.max_memory_reserved() / 3  # so the capped run must split batches (and maybe tiles)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.mem_get_info()[1])
    try:
        probs = tiled_unet.predict(image, net, **options)
        assert torch.cuda.max_memory_reserved() <= cap * 1.05
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    np.testing.assert_allclose(probs, expected, atol=2e-3)


@pytest.mark.parametrize("precision", ["auto", "float16"])
def test_training_on_cuda_with_amp_and_workers(precision, tmp_path):
    data = [nuclei((128, 128), count=12, seed=s) for s in range(4)]
    images, labels = [d[0] for d in data], [d[1] for d in data]
    torch.manual_seed(0)
    net = train(images, labels, init=new_model(2, depth=2, base_channels=8), device="cuda", precision=precision,
                epochs=3, steps_per_epoch=10, batch_size=8, patch_shape=(48, 48), workers=4,
                out=tmp_path / "m.safetensors")
    history = net.model_config.training["history"]
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    loaded = tiled_unet.load_model(tmp_path / "m.safetensors")
    np.testing.assert_allclose(tiled_unet.predict(images[0], loaded, device="cuda", precision="float32"),
                               tiled_unet.predict(images[0], net, device="cuda", precision="float32"), atol=1e-5)


def test_missing_gpu_index_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA device"):
        tiled_unet.predict(np.zeros((64, 64), np.float32), "nuclei-2d", device=f"cuda:{torch.cuda.device_count()}")
