"""Model files: one ``.safetensors`` file, weights plus a JSON config in its header metadata.

Loading never unpickles anything: a pickle or ``torch.save`` file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

from ._version import __version__
from .config import ModelConfig, NormalizationConfig, UNetConfig
from .io.paths import claim_output
from .model import UNet

FORMAT = "tiled-unet"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def _placeholder(ndim: int) -> UNet:
    """An untrained, deterministically initialised network (stands in until trained models ship)."""
    config = ModelConfig(
        unet=UNetConfig(ndim=ndim, in_channels=1, num_classes=2, depth=3 if ndim == 2 else 2,
                        base_channels=16 if ndim == 2 else 8),
        normalization=NormalizationConfig(),
        class_names=("background", "foreground"),
        name=f"placeholder-{ndim}d",
        description="untrained placeholder (random weights, seed 0): shows the pipeline, "
                    "its probabilities mean nothing")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet(config).eval()


MODELS_DIR = Path(__file__).resolve().parent / "models"
TRAINED = ("nuclei-2d", "nuclei-3d")
BUILTIN = {
    "placeholder-2d": lambda: _placeholder(2),
    "placeholder-3d": lambda: _placeholder(3),
}


def _trained(name: str) -> UNet:
    path = MODELS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"the built-in model {name!r} is missing from this installation ({path}); "
                                f"reinstall napari-tiled-unet")
    return _load_file(path)


for _name in TRAINED:
    BUILTIN[_name] = (lambda n=_name: _trained(n))


def builtin_models() -> dict[str, str]:
    """Names and descriptions of the models that ship with the package."""
    return {name: make().model_config.description for name, make in BUILTIN.items()}


def save_model(net: UNet, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``net`` (weights + config) to one ``.safetensors`` file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model files end in .safetensors, got {path.name!r}")
    claim_output(path, overwrite, what="model file")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "package_version": __version__, "config": json.dumps(net.model_config.to_dict())}
    write_safetensors(state, path, metadata)
    return path


def write_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """``save_file`` with the permissions users expect: safetensors creates files readable by their
    owner only (0600); a new file gets the mode the umask gives, a replaced file keeps its mode."""
    path = Path(path)
    previous = path.stat().st_mode & 0o777 if path.exists() else None
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, previous if previous is not None else 0o666 & ~_umask())


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:  # Linux: read without changing it
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(9)
    # a safetensors file starts with its 8-byte header length (any first byte) and then "{"
    magic = head[8:9] != b"{" and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04")
    if path.suffix.lower() in PICKLE_SUFFIXES or magic:
        raise ValueError(f"{path} looks like a pickle / torch.save file; these can run arbitrary code "
                         f"when loaded and are refused. Convert it to a tiled-unet .safetensors model "
                         f"file (tiled_unet.save_model) from code you trust")


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> UNet:
    """A built-in model by name (see ``tiled-unet models``) or a ``.safetensors`` model file."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN:
        return BUILTIN[name_or_path]().to(device)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no built-in model or model file named {os.fspath(name_or_path)!r}; "
                                f"built-in models: {', '.join(BUILTIN)}")
    return _load_file(path).to(device)


def _load_file(path: Path) -> UNet:
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .safetensors model file (truncated or corrupted?): "
                         f"{err}") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not a tiled-unet model (no "
                         f"format={FORMAT!r} in its metadata)")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(f"{path} has model format version {version!r}; this version of tiled-unet "
                         f"reads version {FORMAT_VERSION}. Update napari-tiled-unet")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, ValueError, TypeError) as err:
        raise ValueError(f"{path} has an invalid model config: {err}") from err
    net = UNet(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not match the architecture in its config: {err}") from err
    return net.eval()


def resolve_model(model: UNet | str | os.PathLike) -> UNet:
    """``model`` itself, or the model of a built-in name or a model file."""
    if isinstance(model, UNet):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise TypeError(f"expected a tiled_unet UNet, a built-in model name or a model file path, got "
                    f"{type(model).__name__}")


def model_bytes(net: UNet) -> tuple[bytes, str]:
    """The model as safetensors bytes (weights + config JSON; no pickle) and their SHA-256."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = save_bytes(state, metadata={"config": json.dumps(net.model_config.to_dict(), sort_keys=True)})
    return data, hashlib.sha256(data).hexdigest()


def model_from_bytes(data: bytes) -> UNet:
    """The model of :func:`model_bytes` (the safetensors header holds the config)."""
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    net = UNet(ModelConfig.from_dict(json.loads(header["__metadata__"]["config"])))
    net.load_state_dict(load_bytes(data), strict=True)
    return net.eval()
