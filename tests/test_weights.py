"""Model files: safetensors weights + JSON config; pickles are never loaded."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tiled_unet
from tiled_unet import (
    ModelConfig,
    NormalizationConfig,
    UNet,
    UNetConfig,
    builtin_models,
    load_model,
    save_model,
    weights,
)
from tiled_unet.weights import FORMAT, FORMAT_VERSION, MODELS_DIR, TRAINED


def make_model(seed=0, **unet) -> UNet:
    config = ModelConfig(
        unet=UNetConfig(**{"depth": 2, "base_channels": 3, "num_classes": 3, **unet}),
        normalization=NormalizationConfig(low=2.0, high=99.0),
        class_names=("background", "boundary", "cell"), name="test-model", description="for tests")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(config).eval()
        for module in net.modules():  # non-trivial BatchNorm statistics, so they must be saved too
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net


def state(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


@pytest.mark.parametrize("unet", [{}, {"batch_norm": True, "dropout": 0.3}, {"ndim": 3, "depth": 1},
                                  {"padding": "same", "bilinear_init": True, "in_channels": 2}])
def test_round_trip_gives_identical_predictions(tmp_path, unet):
    net = make_model(**unet)
    path = save_model(net, tmp_path / "model.safetensors")
    assert path == tmp_path / "model.safetensors" and path.is_file()
    loaded = load_model(path)
    assert isinstance(loaded, UNet) and not loaded.training
    assert loaded.model_config == net.model_config
    nd, c = net.config.ndim, net.config.in_channels
    size = 16 if net.config.padding == "same" else (44 if nd == 2 else 20)
    x = torch.rand((2, c) + (size,) * nd)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    for (name, a), (name_b, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b)


def test_file_has_our_metadata(tmp_path):
    net = make_model()
    path = save_model(net, tmp_path / "model.safetensors")
    tensors, metadata = state(path)
    assert metadata["format"] == FORMAT == "tiled-unet"
    assert metadata["format_version"] == str(FORMAT_VERSION)
    assert metadata["package_version"] == tiled_unet.__version__
    assert ModelConfig.from_dict(json.loads(metadata["config"])) == net.model_config
    assert set(tensors) == set(net.state_dict())


def test_predict_accepts_a_model_file(tmp_path, run, image2d):
    net = make_model()
    path = save_model(net, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(run(image2d, str(path), tile_shape=(16, 16)),
                                  run(image2d, net, tile_shape=(16, 16)))


def test_header_starting_with_pickle_protocol_byte_loads(tmp_path):
    """A safetensors file starts with its header length; a first byte 0x80 does not make it a pickle."""
    net = make_model()
    for length in range(256):
        net.model_config = dataclasses.replace(net.model_config, description="d" * length)
        path = save_model(net, tmp_path / "model.safetensors", overwrite=True)
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no description length gave a header length with first byte 0x80")
    assert load_model(path).model_config.description == "d" * length


class _Marker:
    """Unpickling this object creates a file: proof that a pickle was (not) executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.ckpt", "model.safetensors"])
def test_torch_save_file_is_refused(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    torch.save({"state": make_model().state_dict(), "trap": _Marker(str(marker))}, path)
    with pytest.raises(ValueError, match="pickle"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_is_refused(tmp_path, protocol):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Marker(str(marker)), protocol=protocol))
    with pytest.raises(ValueError, match="pickle"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.5, 0.9, 8 / 3000, 0.0])
def test_truncated_file(tmp_path, keep):
    data = save_model(make_model(), tmp_path / "model.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="not a readable .safetensors model file"):
        load_model(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError):
        load_model(path)


def test_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in make_model().state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="not a tiled-unet model"):
        load_model(path)
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a tiled-unet model"):
        load_model(path)


def resave(tmp_path, **metadata_changes):
    tensors, metadata = state(save_model(make_model(), tmp_path / "model.safetensors", overwrite=True))
    path = tmp_path / "edited.safetensors"
    metadata = {k: v for k, v in {**metadata, **metadata_changes}.items() if v is not None}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("version", ["2", "0", "1.0", None])
def test_unknown_format_version(tmp_path, version):
    with pytest.raises(ValueError, match=f"format version {version!r}.*reads version 1"):
        load_model(resave(tmp_path, format_version=version))


def test_invalid_config(tmp_path):
    with pytest.raises(ValueError, match="invalid model config"):
        load_model(resave(tmp_path, config="{not json"))
    with pytest.raises(ValueError, match="invalid model config.*unknown keys"):
        load_model(resave(tmp_path, config=json.dumps({"unet": {"kernel": 5}})))
    with pytest.raises(ValueError, match="invalid model config"):
        load_model(resave(tmp_path, config=None))


def test_weights_not_matching_config(tmp_path):
    config = make_model().model_config.to_dict()
    config["unet"]["base_channels"] = 4
    with pytest.raises(ValueError, match="weights do not match the architecture"):
        load_model(resave(tmp_path, config=json.dumps(config)))


def test_unknown_builtin_name():
    with pytest.raises(FileNotFoundError, match="placeholder-2d, placeholder-3d"):
        load_model("cyto-unet-v7")


def test_a_missing_model_file_says_the_installation_is_broken(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing from this installation.*reinstall"):
        load_model("nuclei-2d")


def test_builtin_models_are_deterministic():
    assert {p.stem for p in MODELS_DIR.glob("*.safetensors")} == set(TRAINED)
    assert set(builtin_models()) == {"placeholder-2d", "placeholder-3d"} | set(TRAINED)
    for name in builtin_models():
        a, b = load_model(name), load_model(name)
        assert a.model_config.name == name and not a.training
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
    assert load_model("placeholder-3d").config.ndim == 3


def test_save_refuses_to_overwrite(tmp_path):
    path = save_model(make_model(seed=0), tmp_path / "model.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        save_model(make_model(seed=1), path)
    assert path.read_bytes() == before
    save_model(make_model(seed=1), path, overwrite=True)
    assert path.read_bytes() != before
    reloaded = load_model(path)
    assert torch.equal(reloaded.head.weight, make_model(seed=1).head.weight)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o027)
    try:
        path = save_model(make_model(seed=0), tmp_path / "model.safetensors")
        assert path.stat().st_mode & 0o777 == 0o640  # safetensors alone writes 0600
        path.chmod(0o604)
        save_model(make_model(seed=1), path, overwrite=True)
        assert path.stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", ["model.pt", "model", "model.safetensor"])
def test_save_requires_safetensors_suffix(tmp_path, name):
    with pytest.raises(ValueError, match="end in .safetensors"):
        save_model(make_model(), tmp_path / name)
    assert not (tmp_path / name).exists()
