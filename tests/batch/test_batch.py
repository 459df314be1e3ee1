"""Batch segmentation of files and folders: outputs, TIFF metadata, failures, exit codes, OME-Zarr labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet.batch.files import find_inputs, format_summary, segment_files
from tiled_unet.cli.main import main
from tiled_unet.synthetic import sample
from tiled_unet.io.tiff import read_tiff_meta

M2 = "nuclei-2d"
M3 = "nuclei-3d"
FAST = ["--device", "cpu", "--precision", "float32"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images():
    return sample("nuclei-2d")[0][:96, :128], sample("nuclei-3d")[0][:16, :64, :64]


@pytest.fixture
def folder(tmp_path, images):
    """A good 2D TIFF, a 3D ImageJ TIFF with spacing, a corrupt file and a 1-D file."""
    img2, img3 = images
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "cells2d.tif", img2, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "YX", "unit": "um"})
    tifffile.imwrite(src / "stack3d.tif", img3, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"})
    (src / "corrupt.tif").write_bytes(b"II*\x00" + bytes(range(200)))
    tifffile.imwrite(src / "line.tif", np.arange(100, dtype=np.uint16))
    (src / "notes.txt").write_text("not an image: ignored")
    return src


def test_folder_two_results_two_failures_metadata_kept(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "-o", str(out), "--model", M2, "--model", M3, *FAST])
    captured = capsys.readouterr()
    assert rc == 1
    lines = {Path(r.split()[0]).name: r for r in captured.out.splitlines() if r.startswith(str(folder))}
    assert set(lines) == {"cells2d.tif", "stack3d.tif", "corrupt.tif", "line.tif"}
    assert " done " in lines["cells2d.tif"] and " done " in lines["stack3d.tif"]
    assert "failed" in lines["corrupt.tif"] and "corrupt or truncated" in lines["corrupt.tif"]
    assert "failed" in lines["line.tif"] and "1-D image" in lines["line.tif"]
    assert "2 done, 0 skipped, 2 failed" in captured.out
    assert "FAILED" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["cells2d_labels.tif", "stack3d_labels.tif"]
    meta2, meta3 = read_tiff_meta(out / "cells2d_labels.tif"), read_tiff_meta(out / "stack3d_labels.tif")
    assert (meta2.axes, meta2.shape, meta2.kind) == ("YX", (96, 128), "imagej")
    assert meta2.voxel_size == pytest.approx({"Y": 0.5, "X": 0.5})
    assert (meta3.axes, meta3.shape) == ("ZYX", (16, 64, 64))
    assert meta3.voxel_size == pytest.approx({"Z": 2.0, "Y": 0.25, "X": 0.25})
    labels = tifffile.imread(out / "cells2d_labels.tif")
    assert labels.max() >= 1 and set(np.unique(labels)) == set(range(labels.max() + 1))

    # rerun: finished outputs are skipped; --overwrite redoes them; inputs untouched
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    stamp = (out / "cells2d_labels.tif").stat().st_mtime_ns
    assert main(["segment", str(folder / "cells2d.tif"), str(folder / "stack3d.tif"), "-o", str(out),
                 "--model", M2, "--model", M3, *FAST]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert (out / "cells2d_labels.tif").stat().st_mtime_ns == stamp
    assert main(["segment", str(folder / "cells2d.tif"), "-o", str(out), "--model", M2, "--overwrite", *FAST]) == 0
    assert "1 done" in capsys.readouterr().out
    assert np.array_equal(tifffile.imread(out / "cells2d_labels.tif"), labels)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_patterns_recursive_single_output_and_probabilities(tmp_path, images):
    img2 = images[0]
    (tmp_path / "a" / "b").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "a" / "one.tif", img2)
    tifffile.imwrite(tmp_path / "a" / "b" / "two.tiff", img2[:64])
    assert [j.path.name for j in find_inputs([tmp_path / "a"])] == ["one.tif"]
    jobs = find_inputs([tmp_path / "a"], recursive=True)
    assert [j.path.name for j in jobs] == ["two.tiff", "one.tif"]
    assert [j.path.name for j in find_inputs([str(tmp_path / "a" / "**" / "*.tif*")])] == ["two.tiff", "one.tif"]
    assert find_inputs([str(tmp_path / "nothing*.tif")])[0].error == "no TIFF or zarr image matches this pattern"
    results = segment_files([tmp_path / "a"], tmp_path / "out", M2, recursive=True, probabilities=True,
                            device="cpu", precision="float32")
    assert [r.status for r in results] == ["done", "done"]
    assert (tmp_path / "out" / "b" / "two_labels.tif").is_file()
    probs = tifffile.imread(tmp_path / "out" / "one_probabilities.tif")
    assert probs.shape[1:] == img2.shape and np.allclose(probs.sum(0), 1, atol=1e-4)
    single = segment_files([tmp_path / "a" / "one.tif"], tmp_path / "single.tif", M2, device="cpu",
                           precision="float32")
    assert single[0].ok and (tmp_path / "single.tif").is_file()
    assert "1 done, 0 skipped, 0 failed" in format_summary(single)
    with pytest.raises(ValueError, match="give an output folder"):
        segment_files([tmp_path / "a"], tmp_path / "x.tif", M2, recursive=True)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_labels_written_into_the_image(tmp_path, images, zarr_format):
    img2 = images[0]
    path = tmp_path / "image.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("0", shape=(1,) + img2.shape, chunks=(1, 64, 64), dtype=img2.dtype)[:] = img2[None]
    ms = {"axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
                   {"name": "x", "type": "space", "unit": "micrometer"}],
          "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}]}]}
    if zarr_format == 2:
        group.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    image_meta = sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob("*") if p.is_file())
    args = ["segment", str(path), "--into-ome-labels", "--label-name", "cells", "--model", M2, *FAST]
    assert main(args) == 0
    labels = zarr.open_group(str(path / "labels"), mode="r")
    attrs = dict(labels.attrs) if zarr_format == 2 else dict(labels.attrs)["ome"]
    assert attrs["labels"] == ["cells"]
    cell = dict(zarr.open_group(str(path / "labels" / "cells"), mode="r").attrs)
    cell = cell if zarr_format == 2 else cell["ome"]
    assert cell["image-label"]["source"]["image"] == "../../"
    (level,) = cell["multiscales"][0]["datasets"]
    assert level["coordinateTransformations"][0]["scale"] == [0.5, 0.5]
    assert [a["name"] for a in cell["multiscales"][0]["axes"]] == ["y", "x"]
    array = zarr.open_array(str(path / "labels" / "cells" / "0"), mode="r")
    assert array.metadata.zarr_format == zarr_format and array.shape == img2.shape and array[...].max() >= 1
    # the image itself is unchanged; existing labels are not replaced without --overwrite
    after = sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob("*")
                   if p.is_file() and "labels" not in p.relative_to(path).parts)
    assert after == image_meta
    assert main(args) == 0
    assert main(args + ["--overwrite"]) == 0
    assert not list(tmp_path.glob(".*partial"))
    plain = segment_files([path], tmp_path / "out", M2, device="cpu", precision="float32")
    assert plain[0].ok and np.array_equal(zarr.open_array(plain[0].output, mode="r")[...], array[...])


def test_usage_errors_and_a_missing_input(tmp_path, capsys):
    assert main(["segment", "-o", str(tmp_path)]) == 2
    assert "give INPUT paths" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o"), "--model", M2]) == 1
    assert "no such file or folder" in capsys.readouterr().out


def test_example_script_runs_as_is(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "batch_segment.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "3 done, 0 skipped, 0 failed" in run.stdout
    assert len(list((tmp_path / "labels").glob("*_labels.tif"))) == 3
    report = json.loads((tmp_path / "labels" / "results.json").read_text())
    assert [r["status"] for r in report] == ["done"] * 3


def test_label_tiff_kinds_keep_axes_and_voxel_size(tmp_path):
    from tiled_unet.io.tiff import write_label_tiff

    many = np.arange(2 * 200 * 200, dtype=np.uint32).reshape(2, 200, 200)  # more IDs than uint16 holds
    assert write_label_tiff(tmp_path / "ome.tif", many, "ZYX", {"Z": 3.0, "Y": 0.2, "X": 0.2}) == "ome"
    meta = read_tiff_meta(tmp_path / "ome.tif")
    assert (meta.kind, meta.axes, meta.dtype) == ("ome", "ZYX", "uint32")
    assert meta.voxel_size == pytest.approx({"Z": 3.0, "Y": 0.2, "X": 0.2})
    assert np.array_equal(tifffile.imread(tmp_path / "ome.tif"), many)
    assert write_label_tiff(tmp_path / "odd.tif", many[:, :4, :4], "QYX") == "plain"
    assert read_tiff_meta(tmp_path / "odd.tif").shape == (2, 4, 4)


def test_batch_and_inference_configs_equal_their_keywords(tmp_path, images):
    from tiled_unet import InferenceConfig
    from tiled_unet.batch import BatchConfig

    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    tifffile.imwrite(src / "a.tif", images[0])
    by_keywords = segment_files([tmp_path / "in"], tmp_path / "kw", M2, recursive=True, output_format="zarr",
                                device="cpu", tile_shape=(64, 64))
    by_configs = segment_files([tmp_path / "in"], tmp_path / "cfg", M2, batch=BatchConfig(recursive=True,
                               output_format="zarr"), config=InferenceConfig(device="cpu", tile_shape=(64, 64)))
    assert [r.status for r in by_keywords] == [r.status for r in by_configs] == ["done"]
    assert by_configs[0].output.endswith(os.path.join("cfg", "sub", "a_labels.zarr"))
    np.testing.assert_array_equal(zarr.open_array(by_keywords[0].output, mode="r")[...],
                                  zarr.open_array(by_configs[0].output, mode="r")[...])
    with pytest.raises(TypeError, match="give either config= or the options \\['recursive'\\], not both"):
        segment_files([tmp_path / "in"], tmp_path / "x", M2, batch=BatchConfig(), recursive=True)
    with pytest.raises(TypeError, match="give either config= or the options \\['device'\\], not both"):
        segment_files([tmp_path / "in"], tmp_path / "x", M2, config=InferenceConfig(), device="cpu")
    with pytest.raises(TypeError, match="probabilities must be True or False.*give probabilities=True"):
        BatchConfig(probabilities="probs.zarr")
    with pytest.raises(ValueError, match="output_format must be one of"):
        BatchConfig(output_format="png")
    assert not (tmp_path / "x").exists()
