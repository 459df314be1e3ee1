"""What runs the network on a batch of tiles: PyTorch, or OpenVINO on CPU (optional extra).

``backend="auto"`` picks OpenVINO where it was measured faster: on the CPU, when it is
installed, the precision resolves to bfloat16 (``auto`` on CPUs with native bf16, or
``bfloat16``) and the job is large enough to pay for starting and compiling it (at least
:data:`AUTO_MIN_FLOPS` of network work); PyTorch otherwise (float32 on CPU: OpenVINO was
slower on the 3D model; GPUs; smaller jobs). On 2 cores, against PyTorch with its BatchNorms
folded and its buffers on huge pages, OpenVINO was 0.83x as fast at 1.8e11 of network work
(a 1024 x 1024 image with ``nuclei-2d``), 0.95x at 6.8e11 (2048 x 2048, one tile) and
1.12-1.37x at 4.2e12 (four tiles); ``nuclei-3d`` on 64 x 256 x 256 (5.0e12) 1.10-1.22x
end to end (``benchmarks/bench_auto_backend.py``, ``benchmarks/bench_backends.py``).
The OpenVINO network is written in memory from the loaded model's layers and weights
(:mod:`.openvino_graph`, milliseconds) and compiled once per tile input shape for the run
(0.2-0.3 s per shape on 2 cores). The cell-size probes always run on PyTorch: they are small
regions of varying shape, each of which would need its own compilation, and the scale they
choose is then the same whatever the backend.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np
import torch

from .openvino_graph import openvino_model

BACKENDS = ("auto", "torch", "openvino")
INSTALL_HINT = "pip install 'napari-tiled-unet[openvino]'"
#: network work (floating point operations) from which ``auto`` picks OpenVINO
AUTO_MIN_FLOPS = 2e12


def openvino_installed() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a blocked import (sys.modules["openvino"] = None)
        return False


def resolve_backend(backend: str, device: torch.device, amp: torch.dtype | None, flops: float) -> str:
    """``"torch"`` or ``"openvino"`` for the asked ``backend``, device, autocast dtype and the
    job's network work ``flops``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        faster = device.type == "cpu" and amp == torch.bfloat16 and flops >= AUTO_MIN_FLOPS
        return "openvino" if faster and openvino_installed() else "torch"
    if backend == "openvino":
        if device.type != "cpu":
            raise ValueError(f"backend='openvino' runs on the CPU, but device {device} was asked; use "
                             f"device='cpu', or backend='torch' (or 'auto') on the GPU")
        if not openvino_installed():
            raise ValueError(f"backend='openvino' needs OpenVINO, which is not installed: {INSTALL_HINT}; "
                             f"or use backend='torch'")
        if amp == torch.float16:
            raise ValueError("backend='openvino' runs in float32 or bfloat16; use precision='auto', "
                             "'bfloat16' or 'float32', or backend='torch' for float16")
    return backend


class OpenVINONetwork:
    """The network compiled by OpenVINO for the CPU, one compiled model per input shape.

    ``amp``: ``torch.bfloat16`` (bf16 hint) or None (f32). ``threads``: inference threads
    (default: ``torch.get_num_threads()``). ``compiled`` lists ``(input shape, seconds)``
    of each graph construction and compilation.
    """

    def __init__(self, net: torch.nn.Module, amp: torch.dtype | None, threads: int | None = None):
        import openvino

        self._openvino, self.net = openvino, net
        self.hint = "bf16" if amp == torch.bfloat16 else "f32"
        self.threads = int(threads or torch.get_num_threads())
        self.core = openvino.Core()
        self._requests: dict[tuple[int, ...], Any] = {}
        self.compiled: list[tuple[tuple[int, ...], float]] = []

    def _request(self, shape: tuple[int, ...]) -> Any:
        request = self._requests.get(shape)
        if request is None:
            start = time.perf_counter()
            model = openvino_model(self.net, shape)
            compiled = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.hint,
                                                              "INFERENCE_NUM_THREADS": self.threads})
            request = self._requests[shape] = compiled.create_infer_request()
            self.compiled.append((shape, time.perf_counter() - start))
        return request

    def prepare(self, input_shape: tuple[int, ...]) -> float:
        """Build and compile for one tile ``(C, *spatial)`` ahead of the run; returns the seconds."""
        before = len(self.compiled)
        self._request((1, *input_shape))
        return sum(seconds for _, seconds in self.compiled[before:])

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        """Logits of ``batch`` ``(N, C, *spatial)``, tile by tile (one compiled shape per tile size)."""
        request = self._request((1, *batch.shape[1:]))
        outputs = [np.array(request.infer({0: np.ascontiguousarray(batch[i:i + 1], np.float32)})[0])
                   for i in range(batch.shape[0])]
        return torch.from_numpy(np.concatenate(outputs))
