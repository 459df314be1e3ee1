"""The :class:`~tiled_unet.model.UNet` written as an OpenVINO graph, layer by layer.

Built from the module's own layers and weights for one static input shape, in
milliseconds: ``torch.export`` + ``openvino.convert_model`` took 4-6 s per shape on
2 cores, as long as the network's forward passes on a 2048 x 2048 image. Layers the
builder does not know raise ``TypeError``, never a silently different network; the
tests hold the graph's logits to PyTorch's in float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy()


def _spatial_shape(x: Any) -> list[int]:
    """The static spatial shape of a graph node or node output."""
    shape = x.get_shape() if hasattr(x, "get_shape") else x.get_output_shape(0)
    return list(shape)[2:]


def _channel_vector(values: torch.Tensor, ndim: int) -> np.ndarray:
    return _array(values).reshape((1, -1) + (1,) * ndim)


class _Builder:
    def __init__(self, ops: Any, ndim: int):
        self.ops, self.ndim = ops, ndim

    def conv(self, x: Any, layer: nn.Module) -> Any:
        pad = list(layer.padding) if isinstance(layer.padding, tuple) else None
        if pad is None or layer.stride != (1,) * self.ndim or layer.dilation != (1,) * self.ndim \
                or layer.groups != 1 or layer.padding_mode != "zeros":
            raise TypeError(f"cannot write {layer} as an OpenVINO convolution")
        y = self.ops.convolution(x, self.ops.constant(_array(layer.weight)), [1] * self.ndim, pad, pad,
                                 [1] * self.ndim)
        return y if layer.bias is None else self.ops.add(y, self.ops.constant(_channel_vector(layer.bias, self.ndim)))

    def upconv(self, x: Any, layer: nn.Module) -> Any:
        two = (2,) * self.ndim
        if layer.kernel_size != two or layer.stride != two or layer.padding != (0,) * self.ndim \
                or layer.output_padding != (0,) * self.ndim or layer.groups != 1:
            raise TypeError(f"cannot write {layer} as an OpenVINO transposed convolution")
        y = self.ops.convolution_backprop_data(x, self.ops.constant(_array(layer.weight)), list(two),
                                               pads_begin=[0] * self.ndim, pads_end=[0] * self.ndim)
        return y if layer.bias is None else self.ops.add(y, self.ops.constant(_channel_vector(layer.bias, self.ndim)))

    def block(self, x: Any, block: nn.Sequential) -> Any:
        for layer in block:
            if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
                x = self.conv(x, layer)
            elif isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm3d)):
                if layer.running_mean is None or layer.running_var is None:
                    raise TypeError(f"cannot write {layer} without running statistics to OpenVINO")
                gamma = layer.weight if layer.affine else torch.ones_like(layer.running_mean)
                beta = layer.bias if layer.affine else torch.zeros_like(layer.running_mean)
                x = self.ops.batch_norm_inference(x, _array(gamma), _array(beta), _array(layer.running_mean),
                                                  _array(layer.running_var), float(layer.eps))
            elif isinstance(layer, nn.ReLU):
                x = self.ops.relu(x)
            else:
                raise TypeError(f"cannot write {type(layer).__name__} to OpenVINO")
        return x

    def pool(self, x: Any, layer: nn.Module) -> Any:
        size = layer.kernel_size if isinstance(layer.kernel_size, int) else None
        if size != 2 or layer.stride != 2 or layer.padding != 0 or layer.dilation != 1 or layer.ceil_mode:
            raise TypeError(f"cannot write {layer} as an OpenVINO max-pooling")
        n = self.ndim
        return self.ops.max_pool(x, [2] * n, [1] * n, [0] * n, [0] * n, [2] * n, "floor").output(0)

    def center_crop(self, x: Any, shape: list[int]) -> Any:
        have = _spatial_shape(x)
        start = [(h - w) // 2 for h, w in zip(have, shape)]
        stop = [s + w for s, w in zip(start, shape)]
        axes = list(range(2, 2 + self.ndim))
        return self.ops.slice(x, np.array(start, np.int64), np.array(stop, np.int64),
                              np.ones(self.ndim, np.int64), np.array(axes, np.int64))


def openvino_model(net: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """An ``openvino.Model`` computing ``net``'s logits for inputs of ``input_shape`` ``(N, C, *spatial)``.

    ``net`` is a :class:`~tiled_unet.model.UNet` in evaluation mode (dropout is left out)."""
    import openvino
    import openvino.opset13 as ops

    for name in ("down", "pool", "bottleneck", "upconvs", "up", "head"):
        if not hasattr(net, name):
            raise TypeError(f"cannot write {type(net).__name__} to OpenVINO: it is not a tiled_unet UNet")
    ndim = len(input_shape) - 2
    build = _Builder(ops, ndim)
    image = ops.parameter(list(input_shape), np.float32, name="image")
    x, skips = image.output(0), []
    for block in net.down:
        x = build.block(x, block)
        skips.append(x)
        x = build.pool(x, net.pool)
    x = build.block(x, net.bottleneck)
    for upconv, block, skip in zip(net.upconvs, net.up, reversed(skips)):
        x = build.upconv(x, upconv)
        x = build.block(ops.concat([build.center_crop(skip, _spatial_shape(x)), x], 1), block)
    logits = build.conv(x, net.head)
    return openvino.Model([logits], [image], "tiled_unet")
