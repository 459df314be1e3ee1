"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint folder holds ``best.safetensors`` and ``last.safetensors`` (model files
that :func:`tiled_unet.load_model` reads) and ``state.safetensors`` (optimiser
tensors and the random generator states, with the epoch, best score and history as
JSON in its metadata), enough to resume training where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from ..config import ModelConfig
from ..model import UNet
from ..weights import load_model, save_model, write_safetensors

#: the files of a checkpoint folder
CHECKPOINT_FILES = ("best.safetensors", "last.safetensors", "state.safetensors")


def save_checkpoint(folder: Path, net: UNet, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    rng: np.random.Generator, best_state: dict[str, torch.Tensor],
                    model_configs: dict[str, ModelConfig] | None = None) -> None:
    """Write the last and best weights and the optimiser / RNG state (each file replaced atomically).

    ``model_configs``: the configs (training summary so far) the ``"last"`` and ``"best"`` model
    files carry; by default the network's own.
    """

    configs = model_configs or {}
    last = UNet(configs.get("last", net.model_config))
    last.load_state_dict(net.state_dict())
    best = UNet(configs.get("best", net.model_config))
    best.load_state_dict(best_state)
    for model, name in ((last, "last"), (best, "best")):
        tmp = folder / f".{name}.tmp.safetensors"
        save_model(model, tmp, overwrite=True)
        tmp.replace(folder / f"{name}.safetensors")
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"torch_rng": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    metadata = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"]),
                "scalars": json.dumps(scalars), "numpy_rng": json.dumps(rng.bit_generator.state)}
    tmp = folder / ".state.tmp.safetensors"
    write_safetensors(tensors, tmp, metadata)
    tmp.replace(folder / "state.safetensors")


def load_checkpoint(folder: Path, net: UNet, optimizer: torch.optim.Optimizer,
                    device: torch.device) -> tuple[dict[str, Any], np.random.Generator]:
    """Restore weights, optimiser and RNG states from :func:`save_checkpoint`'s folder."""

    state_file, last_file = folder / "state.safetensors", folder / "last.safetensors"
    if not state_file.is_file() or not last_file.is_file():
        raise FileNotFoundError(f"no checkpoint to resume in {folder} (expected last.safetensors and "
                                f"state.safetensors)")
    last = load_model(last_file)
    if last.config != net.config:
        raise ValueError(f"the checkpoint in {folder} is of another architecture ({last.config}) than the "
                         f"model being trained ({net.config})")
    net.load_state_dict(last.state_dict())
    with safe_open(str(state_file), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    scalars = json.loads(meta["scalars"])
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value.to(device)
    for index, values in scalars.items():
        opt_state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["torch_rng"])
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(meta["numpy_rng"])
    return json.loads(meta["state"]), rng
