"""The OpenVINO backend: the choice of backend, exactness of tiles in float32, bf16 accuracy, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import build_net, reference_probabilities
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiled_unet
from tiled_unet.engine.backends import (
    AUTO_MIN_FLOPS,
    openvino_installed,
    resolve_backend,
)
from tiled_unet.engine.devices import cpu_supports_bf16
from tiled_unet.synthetic import nuclei

needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed")
OV = {"device": "cpu", "backend": "openvino"}
TOL = 1e-4  # OpenVINO's float32 kernels against PyTorch's whole-image pass (about 1e-5 seen)
CPU = torch.device("cpu")


def test_auto_picks_openvino_only_for_large_bf16_cpu_jobs():
    big, small = AUTO_MIN_FLOPS, AUTO_MIN_FLOPS / 10
    expected = "openvino" if openvino_installed() else "torch"
    assert resolve_backend("auto", CPU, torch.bfloat16, big) == expected
    assert resolve_backend("auto", CPU, torch.bfloat16, small) == "torch"
    assert resolve_backend("auto", CPU, None, big) == "torch"  # float32: OpenVINO was not faster
    assert resolve_backend("auto", torch.device("cuda"), torch.bfloat16, big) == "torch"
    assert resolve_backend("torch", CPU, torch.bfloat16, big) == "torch"


def test_openvino_on_a_gpu_or_in_float16_is_refused():
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"), None, 0)
    if openvino_installed():
        with pytest.raises(ValueError, match="float32 or bfloat16"):
            resolve_backend("openvino", CPU, torch.float16, 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("onnx", CPU, None, 0)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="backend must be 'auto', 'torch' or 'openvino'"):
        tiled_unet.predict(np.zeros((32, 32), np.float32), build_net(), backend="tensorrt")


def test_openvino_missing_is_a_clear_error():
    code = ("import sys; sys.modules['openvino'] = None\n"  # as if it were not installed
            "import numpy as np, tiled_unet\n"
            "try:\n"
            "    tiled_unet.predict(np.zeros((64, 64), np.float32), 'nuclei-2d', device='cpu', backend='openvino')\n"
            "except ValueError as error:\n"
            "    print(error)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "not installed" in out and "napari-tiled-unet[openvino]" in out


@st.composite
def cases(draw):
    ndim = draw(st.sampled_from([2, 3]))
    padding = draw(st.sampled_from(["valid", "same"]))
    net = NETS[(ndim, padding)]
    shape = tuple(draw(st.integers(3, 60 if ndim == 2 else 14)) for _ in range(ndim))
    tile = tuple(max(draw(st.integers(4, 32 if ndim == 2 else 8)), -(-n // 4)) for n in shape)
    image = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random(shape) * 3000
    return net, image.astype(np.float32), tile


NETS = {(nd, pad): build_net(seed=30 + nd, ndim=nd, depth=2, base_channels=2, padding=pad)
        for nd in (2, 3) for pad in ("valid", "same")}


@needs_openvino
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_openvino_tiles_equal_the_whole_image_in_float32(case):
    net, image, tile = case
    got = tiled_unet.predict(image, net, tile_shape=tile, precision="float32", diameter="off", **OV)
    want = reference_probabilities(image, net)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) < TOL


@needs_openvino
@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 kernels")
@pytest.mark.parametrize("name, shape", [("nuclei-2d", (256, 256)), ("nuclei-3d", (24, 96, 96))])
def test_openvino_bf16_is_as_close_to_float32_as_pytorch_bf16(name, shape):
    image = nuclei(shape, count=8, seed=3)[0]
    options = {"device": "cpu", "diameter": "off"}
    exact = tiled_unet.predict(image, name, precision="float32", backend="torch", **options)
    torch_bf16 = tiled_unet.predict(image, name, precision="bfloat16", backend="torch", **options)
    events = []
    ov_bf16 = tiled_unet.predict(image, name, precision="bfloat16", backend="openvino", progress=events.append,
                                 **options)
    torch_diff, ov_diff = np.abs(torch_bf16 - exact).max(), np.abs(ov_bf16 - exact).max()
    assert 0 < ov_diff < max(2 * torch_diff, 0.05), (ov_diff, torch_diff)
    assert events[0].note.startswith("OpenVINO (bf16): network compiled in")


@needs_openvino
def test_openvino_segment_to_zarr_equals_in_memory(tmp_path):
    image = nuclei((160, 160), count=10, seed=5)[0]
    options = {"device": "cpu", "precision": "float32", "diameter": "off", "backend": "openvino",
               "tile_shape": (64, 64)}
    in_memory = tiled_unet.segment(image, "nuclei-2d", **options)
    on_disk = tiled_unet.segment(image, "nuclei-2d", out=tmp_path / "labels.zarr", **options)
    assert in_memory.max() > 3
    np.testing.assert_array_equal(on_disk[...], in_memory)
    torch_labels = tiled_unet.segment(image, "nuclei-2d", **{**options, "backend": "torch"})
    np.testing.assert_array_equal(torch_labels, in_memory)



def _with_running_statistics(net):
    """Batch norm layers with non-trivial running statistics and affine weights."""
    generator = torch.Generator().manual_seed(4)
    for layer in net.modules():
        if isinstance(layer, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            for tensor, (lo, hi) in ((layer.running_mean, (-1, 1)), (layer.running_var, (0.5, 2)),
                                     (layer.weight.data, (0.5, 2)), (layer.bias.data, (-1, 1))):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (hi - lo) + lo)
    return net


@needs_openvino
@pytest.mark.parametrize("config, shape", [
    ({"ndim": 2, "batch_norm": True, "in_channels": 2, "num_classes": 3}, (2, 2, 44, 60)),
    ({"ndim": 3, "depth": 1, "padding": "same", "batch_norm": True}, (1, 1, 16, 20, 24)),
    ({"ndim": 3, "depth": 2, "dropout": 0.5}, (1, 1, 44, 44, 52)),
])
def test_openvino_graph_computes_the_networks_logits(config, shape):
    import openvino

    from tiled_unet.engine.openvino_graph import openvino_model

    net = _with_running_statistics(build_net(seed=8, **config))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    compiled = openvino.Core().compile_model(openvino_model(net, shape), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer({0: x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) < TOL


@needs_openvino
def test_openvino_graph_refuses_layers_it_does_not_know():
    from tiled_unet.engine.openvino_graph import openvino_model

    net = build_net()
    net.down[0][1] = torch.nn.GELU()
    with pytest.raises(TypeError, match="cannot write GELU to OpenVINO"):
        openvino_model(net, (1, 1, 44, 44))
    with pytest.raises(TypeError, match="not a tiled_unet UNet"):
        openvino_model(torch.nn.Conv2d(1, 1, 3), (1, 1, 44, 44))
