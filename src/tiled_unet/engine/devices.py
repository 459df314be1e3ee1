"""Device and precision choice, memory budgets and the automatic tile size."""

from __future__ import annotations

import math

import psutil
import torch

from ..config import UNetConfig
from .tiling import UNetGeometry

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; an explicit device that is not available is an error."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available here (torch "
                             f"{torch.__version__}); use device='auto' or 'cpu', or install a CUDA build "
                             f"of PyTorch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} was requested but only {torch.cuda.device_count()} "
                             f"CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was requested but Apple MPS is not available here; use "
                         f"device='auto' or 'cpu'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; expected 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32.

    ``auto``: bf16 on CUDA GPUs that support it (fp16 on older ones), bf16 on CPUs with
    native bf16 kernels, float32 elsewhere (MPS and other CPUs). Networks with
    BatchNorm run autocast safely (normalisation stays in float32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_supports_bf16():
            return torch.bfloat16
        return None
    dtype = getattr(torch, precision)
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("precision='float16' is not supported on CPU; use 'bfloat16' or 'float32'")
    return dtype


def memory_budget(device: torch.device, budget: float | None = None) -> int:
    """Bytes the network's activations may use: ``budget`` (bytes) or a device default.

    CUDA: 70 % of the free GPU memory. CPU/MPS: a quarter of the available RAM,
    at most 8 GiB.
    """
    if budget is not None:
        if budget <= 0:
            raise ValueError(f"memory budget must be positive bytes, got {budget}")
        return int(budget)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.7 * free)
    return int(min(psutil.virtual_memory().available / 4, 8 * 2**30))


def activation_bytes(config: UNetConfig, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """Estimated peak memory of one inference forward pass (float32 activations).

    Skip connections of every level stay alive; the widest working set is at the top
    level of the expansive path (concatenation, up-convolution output, convolution
    outputs, the kept skip), plus the input and output tiles.
    """
    voxels = math.prod(input_shape)
    levels = sum(config.base_channels * 2**lvl * voxels / 2 ** (lvl * config.ndim)
                 for lvl in range(config.depth + 1))
    top = 5 * config.base_channels * voxels
    io = (config.in_channels + 2 * config.num_classes) * voxels
    return int(4 * batch * (levels + top + io) * 1.25)


def auto_tile_shape(config: UNetConfig, geometry: UNetGeometry, image_shape: tuple[int, ...],
                    budget: int) -> tuple[int, ...]:
    """The largest output tile (multiple of the pooling period, no larger than needed to
    cover the image) whose forward pass fits ``budget`` bytes."""
    p = geometry.period

    def fits(edge: int) -> bool:
        step = tuple(min(edge, -(-n // p) * p) for n in image_shape)
        inputs = tuple(geometry.input_size_for_output(s) for s in step)
        return activation_bytes(config, inputs) <= budget

    largest = max(-(-n // p) * p for n in image_shape)
    lo, hi = p, largest
    if not fits(lo):
        need = activation_bytes(config, (geometry.input_size_for_output(p),) * config.ndim)
        raise ValueError(f"even the smallest tile needs about {need / 2**20:.0f} MiB, more than the "
                         f"memory budget of {budget / 2**20:.0f} MiB; free memory, raise memory_budget= "
                         f"(Python API), or use a smaller model")
    while lo < hi:  # largest edge (multiple of p) that fits
        mid = (lo + hi + p) // (2 * p) * p
        if fits(mid):
            lo = mid
        else:
            hi = mid - p
    return tuple(min(lo, -(-n // p) * p) for n in image_shape)


def forward_flops(config, input_shape: tuple[int, ...]) -> float:
    """Floating point operations of one forward pass (convolutions; sizes followed layer by layer)."""
    k = 3 ** config.ndim
    shrink = 2 if config.padding == "valid" else 0
    sizes = list(input_shape)
    total = 0.0
    skips = []
    c_in = config.in_channels
    for level in range(config.depth + 1):
        c = config.base_channels * 2**level
        for c_from in (c_in, c):
            sizes = [n - shrink for n in sizes]
            total += 2 * k * c_from * c * math.prod(sizes)
        c_in = c
        if level < config.depth:
            skips.append(c)
            sizes = [n // 2 for n in sizes]
    for level in reversed(range(config.depth)):
        c = config.base_channels * 2**level
        sizes = [2 * n for n in sizes]
        total += 2 * (2 * c) * c * math.prod(sizes)  # 2x up-convolution: one output voxel per input tap
        for c_from in (2 * c, c):
            sizes = [n - shrink for n in sizes]
            total += 2 * k * c_from * c * math.prod(sizes)
    return total
