"""The U-Net architecture and its geometry (valid sizes, output sizes, halo)."""

from __future__ import annotations

import pytest
import torch

from tiled_unet import UNet, UNetConfig
from tiled_unet.model import count_conv_layers, linear_upsampling_weight
from tiled_unet.engine.tiling import UNetGeometry

PAPER = UNetConfig(ndim=2, in_channels=1, num_classes=2, depth=4, base_channels=64, padding="valid")


def test_paper_geometry_572_to_388():
    geometry = UNetGeometry(2, 4, "valid")
    assert geometry.output_shape((572, 572)) == (388, 388)
    assert geometry.exact_halo == (572 - 388) // 2 == 92
    assert geometry.input_size_for_output(388) == 572


def test_paper_network_has_23_conv_layers():
    net = UNet(PAPER)
    assert count_conv_layers(net) == 23
    assert net.output_shape((572, 572)) == (388, 388)


def test_paper_forward_572_to_388():
    """A real forward pass of the paper network (about 30 million weights)."""
    torch.manual_seed(0)
    net = UNet(PAPER).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("ndim,depth,size", [(2, 1, 28), (2, 3, 140), (3, 1, 20), (3, 2, 44)])
def test_forward_shape_matches_geometry(ndim, depth, size):
    torch.manual_seed(0)
    net = UNet(UNetConfig(ndim=ndim, depth=depth, base_channels=2, num_classes=3)).eval()
    shape = (size,) * ndim
    with torch.no_grad():
        out = net(torch.rand((2, 1) + shape))
    assert out.shape == (2, 3) + net.output_shape(shape)


def test_3d_geometry_depth3_kept_fractions():
    """Output/input voxel fractions of a 3D depth-3 valid U-Net: about 10 % at 164³, 29 % at 260³."""
    geometry = UNetGeometry(3, 3, "valid")
    assert geometry.output_size(164) == 76
    assert geometry.output_size(260) == 172
    assert geometry.output_size(164) ** 3 / 164**3 == pytest.approx(0.10, abs=0.005)
    assert geometry.output_size(260) ** 3 / 260**3 == pytest.approx(0.29, abs=0.005)
    assert geometry.exact_halo == 44 == (164 - 76) // 2 == (260 - 172) // 2


def test_3d_depth3_forward_164():
    torch.manual_seed(0)
    net = UNet(UNetConfig(ndim=3, depth=3, base_channels=2)).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 164, 164, 164))
    assert out.shape == (1, 2, 76, 76, 76)


def test_invalid_input_size_names_nearest_valid_sizes():
    geometry = UNetGeometry(2, 4, "valid")
    assert geometry.output_size(573) is None
    assert geometry.nearest_valid_input_sizes(573) == (572, 588)
    with pytest.raises(ValueError, match=r"573 is not valid.*nearest valid sizes: 572 and 588"):
        geometry.output_shape((572, 573))
    net = UNet(UNetConfig(depth=1, base_channels=2))
    with pytest.raises(ValueError, match="nearest valid sizes"):
        net.output_shape((19, 20))


def test_nearest_valid_sizes_are_valid_and_nearest():
    geometry = UNetGeometry(2, 3, "valid")
    valid = [n for n in range(1, 400) if geometry.output_size(n) is not None]
    for n in range(1, 300):
        lo, hi = geometry.nearest_valid_input_sizes(n)
        below = [v for v in valid if v <= n]
        assert lo == (below[-1] if below else None)
        assert hi == min(v for v in valid if v >= n)


def test_valid_sizes_have_the_pooling_period():
    geometry = UNetGeometry(2, 3, "valid")
    valid = [n for n in range(1, 500) if geometry.output_size(n) is not None]
    assert all(b - a == geometry.period for a, b in zip(valid, valid[1:]))
    assert all(n - geometry.output_size(n) == 2 * geometry.exact_halo for n in valid)


@pytest.mark.parametrize("ndim,shape", [(2, (32, 48)), (3, (8, 16, 24))])
def test_same_padding_keeps_shape(ndim, shape):
    torch.manual_seed(0)
    net = UNet(UNetConfig(ndim=ndim, depth=3, base_channels=2, padding="same")).eval()
    with torch.no_grad():
        out = net(torch.rand((1, 1) + shape))
    assert out.shape == (1, 2) + shape
    assert net.output_shape(shape) == shape
    with pytest.raises(ValueError, match="nearest valid sizes: 8 and 16"):
        net.output_shape((12,) * ndim)


@pytest.mark.parametrize("ndim", [2, 3])
def test_batch_norm_and_dropout_build_and_run(ndim):
    torch.manual_seed(0)
    net = UNet(UNetConfig(ndim=ndim, depth=1, base_channels=4, batch_norm=True, dropout=0.5))
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))]
    assert len(norms) == 6  # two per conv block, three blocks
    assert isinstance(net.dropout, (torch.nn.Dropout2d, torch.nn.Dropout3d))
    x = torch.rand((2, 1) + (20,) * ndim)
    net.train()
    out = net(x)
    out.sum().backward()
    assert out.shape == (2, 2) + (4,) * ndim
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # dropout off and running statistics in eval mode


def test_conv_layers_without_batch_norm_have_bias():
    net = UNet(UNetConfig(depth=1, base_channels=2))
    assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    net_bn = UNet(UNetConfig(depth=1, base_channels=2, batch_norm=True))
    assert all(m.bias is None for m in net_bn.modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))


@pytest.mark.parametrize("ndim", [2, 3])
def test_bilinear_init_replicates_constant_input(ndim):
    """With bilinear_init, every 2x up-convolution maps a constant image to a constant image."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(ndim=ndim, depth=3, base_channels=3, bilinear_init=True))
    assert len(net.upconvs) == 3
    for upconv in net.upconvs:
        x = torch.full((1, upconv.in_channels) + (3,) * ndim, 2.5)
        with torch.no_grad():
            y = upconv(x)
        assert y.shape == (1, upconv.out_channels) + (6,) * ndim
        torch.testing.assert_close(y, torch.full_like(y, 2.5))
        # per-channel constants stay spatially constant
        x = torch.rand(1, upconv.in_channels, *(1,) * ndim).expand_as(x).contiguous()
        with torch.no_grad():
            y = upconv(x)
        corner = y[(slice(None), slice(None)) + (slice(0, 1),) * ndim]
        assert torch.allclose(y, corner.expand_as(y))


def test_default_init_is_not_replication():
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=1, base_channels=3))
    upconv = net.upconvs[0]
    x = torch.full((1, upconv.in_channels, 3, 3), 2.5)
    with torch.no_grad():
        y = upconv(x)
    assert not torch.allclose(y, torch.full_like(y, 2.5))


def test_linear_upsampling_weight_averages_channels():
    w = linear_upsampling_weight(6, 3, 2)
    assert w.shape == (6, 3, 2, 2)
    torch.testing.assert_close(w.sum(dim=0), torch.ones(3, 2, 2))
    assert (w[:2, 0] == 0.5).all() and (w[2:, 0] == 0).all()


@pytest.mark.parametrize("padding,depth,halo", [("valid", 4, 92), ("valid", 1, 8), ("valid", 3, 44),
                                                ("same", 2, 22), ("same", 3, 46), ("same", 4, 94)])
def test_exact_halo_values(padding, depth, halo):
    geometry = UNetGeometry(2, depth, padding)
    assert geometry.exact_halo == halo
    assert geometry.halo == halo


def test_same_halo_override_only_for_same_padding():
    assert UNetGeometry(2, 2, "same", same_halo=8).halo == 8
    assert UNetGeometry(2, 2, "valid", same_halo=8).halo == 20


def test_forward_rejects_wrong_tensor_rank():
    net = UNet(UNetConfig(depth=1, base_channels=2))
    with pytest.raises(ValueError, match="4-D tensor"):
        net(torch.rand(1, 20, 20))


@pytest.mark.parametrize("bad", [{"ndim": 4}, {"depth": 9}, {"padding": "reflect"}, {"dropout": 1.0},
                                 {"in_channels": 0}, {"base_channels": 0}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        UNetConfig(**bad)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = UNetConfig(ndim=3, depth=2, padding="same", dropout=0.25)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys.*'kernel'"):
        UNetConfig.from_dict({**cfg.to_dict(), "kernel": 5})


@pytest.mark.parametrize("ndim, shape", [(2, (1, 1, 60, 60)), (3, (1, 1, 44, 44, 44))])
def test_folding_batchnorm_keeps_the_function_and_leaves_the_model(ndim, shape):
    torch.manual_seed(0)
    net = UNet(UNetConfig(ndim=ndim, in_channels=1, num_classes=3, depth=2, base_channels=4, batch_norm=True))
    x = torch.randn(8, *shape[1:])
    net.train()
    net(x)  # running statistics away from their start, as after training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = net.fused_for_inference()
    assert net.training and not fused.training
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) for m in fused.modules())
    assert count_conv_layers(fused) == count_conv_layers(net)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    with torch.no_grad():
        expected = net.eval()(x[:2])
        torch.testing.assert_close(fused(x[:2]), expected, rtol=1e-4, atol=1e-5)
