"""The one output guard (io.paths.claim_output): inputs are never replaced, existing outputs only with overwrite."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import tiled_unet
import tiled_unet.synthetic
from tiled_unet.cli.main import main
from tiled_unet.io.paths import claim_output


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_claim_output_rules(tmp_path):
    image = tmp_path / "in.zarr"
    image.mkdir()
    for output in (image, image / "labels.zarr", tmp_path):
        with pytest.raises(ValueError, match="is, contains or lies inside the input"):
            claim_output(output, True, [image])
    (tmp_path / "old.tif").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        claim_output(tmp_path / "old.tif", False)
    assert claim_output(tmp_path / "old.tif", True, [image, None]) == tmp_path / "old.tif"
    assert claim_output(tmp_path / "new.zarr", False, image) == tmp_path / "new.zarr"


@pytest.mark.parametrize("verb", ["segment", "predict"])
def test_cli_never_writes_over_its_input_tiff(tmp_path, verb, capsys):
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, tiled_unet.synthetic.nuclei((64, 64), count=3)[0])
    before = digest(image)
    assert main([verb, str(image), "-o", str(image), "--overwrite", "--model", "placeholder-2d",
                 "--device", "cpu"]) != 0
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert digest(image) == before


def test_api_refuses_an_output_inside_the_input_store(tmp_path):
    store = tmp_path / "in.zarr"
    zarr.open_array(str(store), mode="w", shape=(48, 48), dtype="float32")[...] = np.random.rand(48, 48)
    before = digest(store)
    for call in (tiled_unet.predict, tiled_unet.segment):
        with pytest.raises(ValueError, match="inputs are never overwritten"):
            call(str(store), "placeholder-2d", out=str(store / "labels.zarr"), overwrite=True, device="cpu")
    assert digest(store) == before


class Stop(Exception):
    pass


def stop_at_first_event(event):
    raise Stop


@pytest.mark.parametrize("call", [tiled_unet.predict, tiled_unet.segment])
def test_a_zarr_output_is_replaced_only_once_the_new_one_is_whole(tmp_path, call):
    """A run stopped half-way with overwrite leaves the earlier output as it was (the new one
    is written under a temporary name); a whole run then replaces it."""
    image = tiled_unet.synthetic.nuclei((128, 128), count=14)[0]
    out = tmp_path / "out.zarr"
    first = call(image, "nuclei-2d", out=str(out), device="cpu")[...]
    before = digest(out)
    with pytest.raises(Stop):
        call(image * 2.0, "nuclei-2d", out=str(out), overwrite=True, device="cpu",
             progress=stop_at_first_event)
    assert digest(out) == before and zarr.open_array(str(out)).attrs["complete"] is True
    second = call(image[::-1].copy(), "nuclei-2d", out=str(out), overwrite=True, device="cpu")
    assert np.array_equal(second[...], zarr.open_array(str(out))[...])  # opened where it now lies
    assert not np.array_equal(first, second[...])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # nothing temporary left
