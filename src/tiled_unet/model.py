"""The U-Net (Ronneberger et al., 2015) in 2D and 3D, built from a :class:`UNetConfig`.

Contracting path: per level two 3x3 convolutions (+ optional BatchNorm) and ReLU, then
2x2 max-pooling; channels double at each level. Bottleneck: two convolutions, optional
dropout. Expansive path: 2x2 transposed convolution halving the channels, centre crop
of the skip connection, concatenation, two convolutions. A 1x1 convolution gives the
class scores. The paper configuration (2D, depth 4, 64 base channels, valid padding)
maps 572x572 to 388x388 with 23 convolutional layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import ModelConfig, UNetConfig
from .engine.tiling import UNetGeometry

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_UPCONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by optional BatchNorm and ReLU."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, padding: str, batch_norm: bool):
        layers: list[nn.Module] = []
        pad = 1 if padding == "same" else 0
        for c_in in (in_channels, out_channels):
            layers.append(_CONV[ndim](c_in, out_channels, 3, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(_NORM[ndim](out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _center_crop(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], shape):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


def linear_upsampling_weight(in_channels: int, out_channels: int, ndim: int) -> torch.Tensor:
    """Weights that make a 2x2 (2x2x2), stride-2 transposed convolution interpolate.

    FCN initialises its up-sampling to bilinear interpolation. With the U-Net's 2x2
    kernel at stride 2 every output pixel receives exactly one input pixel, so linear
    interpolation reduces to replication; output channel ``c`` averages the input
    channels mapped to it (``c * in // out`` up to ``(c + 1) * in // out``).
    """
    weight = torch.zeros((in_channels, out_channels) + (2,) * ndim)
    for c_out in range(out_channels):
        lo = c_out * in_channels // out_channels
        hi = max(lo + 1, (c_out + 1) * in_channels // out_channels)
        weight[lo:hi, c_out] = 1.0 / (hi - lo)
    return weight


class UNet(nn.Module):
    """A U-Net whose geometry (valid input sizes, output shape, halo) is known.

    ``model_config`` carries what a model file stores besides the weights
    (normalisation, class names, name).
    """

    def __init__(self, config: UNetConfig | ModelConfig):
        super().__init__()
        if isinstance(config, UNetConfig):
            config = ModelConfig(unet=config)
        self.model_config = config
        cfg = config.unet
        self.config = cfg
        channels = [cfg.base_channels * 2**i for i in range(cfg.depth + 1)]
        block = lambda c_in, c_out: ConvBlock(cfg.ndim, c_in, c_out, cfg.padding, cfg.batch_norm)  # noqa: E731
        self.down = nn.ModuleList()
        c_in = cfg.in_channels
        for c in channels[:-1]:
            self.down.append(block(c_in, c))
            c_in = c
        self.pool = _POOL[cfg.ndim](2)
        self.bottleneck = block(c_in, channels[-1])
        self.dropout = _DROPOUT[cfg.ndim](cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.upconvs = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(cfg.depth)):
            self.upconvs.append(_UPCONV[cfg.ndim](channels[level + 1], channels[level], 2, stride=2))
            self.up.append(block(2 * channels[level], channels[level]))
        self.head = _CONV[cfg.ndim](channels[0], cfg.num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation as in the paper; optional linear up-sampling."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.config.bilinear_init:
            with torch.no_grad():
                for upconv in self.upconvs:
                    upconv.weight.copy_(linear_upsampling_weight(
                        upconv.in_channels, upconv.out_channels, self.config.ndim))

    @property
    def geometry(self) -> UNetGeometry:
        return UNetGeometry(self.config.ndim, self.config.depth, self.config.padding)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The stored class names, else the usual ones for the number of classes."""
        classes = self.config.num_classes
        return tuple(self.model_config.class_names) or {
            1: ("foreground",), 2: ("background", "foreground"),
            3: ("background", "interior", "boundary")}.get(classes, tuple(f"class{i}" for i in range(classes)))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape (ValueError if not valid)."""
        return self.geometry.output_shape(tuple(input_shape))

    def fused_for_inference(self) -> "UNet":
        """A copy in eval mode with each BatchNorm folded into the convolution before it.

        The same function (float32 results within rounding, 1e-5); fewer passes over the data, so
        faster, and in bfloat16 one rounding fewer per layer. This model is left as it is.
        """
        fused = copy.deepcopy(self).eval()
        for block in fused.modules():
            if not isinstance(block, ConvBlock):
                continue
            layers, kept = list(block), []
            for layer in layers:
                if isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm3d)) and kept and \
                        isinstance(kept[-1], (nn.Conv2d, nn.Conv3d)):
                    kept[-1] = fuse_conv_bn_eval(kept[-1], layer)
                else:
                    kept.append(layer)
            block._modules.clear()
            for index, layer in enumerate(kept):
                block.add_module(str(index), layer)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits), shape ``(N, classes, *output_shape)``."""
        if x.ndim != self.config.ndim + 2:
            raise ValueError(f"expected a {self.config.ndim + 2}-D tensor (N, C, *spatial), got shape "
                             f"{tuple(x.shape)}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for upconv, block, skip in zip(self.upconvs, self.up, reversed(skips)):
            x = upconv(x)
            x = block(torch.cat([_center_crop(skip, x.shape[2:]), x], dim=1))
        return self.head(x)


def count_conv_layers(model: nn.Module) -> int:
    """Number of convolutional layers (transposed convolutions included)."""
    kinds = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return sum(isinstance(m, kinds) for m in model.modules())
